"""`train(config, workdir)`: checks the whole config (every section, before any data is read), picks the
task by the model's family (`task_from_config`), and runs the generic trainer (`run_task`; train.py builds
the task once and calls that). Rerunning it on the same workdir resumes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nanoflow_jax.errors import ConfigError
from nanoflow_jax.files import check_not_input, resolve_path
from nanoflow_jax.models import model_kind
from nanoflow_jax.schema import Section
from nanoflow_jax.train import trainer
from nanoflow_jax.train.audio import AudioTask
from nanoflow_jax.train.image import ImageTask

TASKS = {"audio": AudioTask, "image": ImageTask}


def task_from_config(config: Any, source: str = "config", workdir: str | None = None) -> AudioTask | ImageTask:
    """The task of a config (ConfigDict or mapping of sections), every section checked: a field that is
    not allowed is one ConfigError line naming it. `workdir`: the run's folder (made absolute here)."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    config = dict(config)
    task_cls = TASKS[model_kind(config.get("model"), source)]
    unknown = sorted(set(config) - set(task_cls.SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section {unknown[0]!r}; known: {', '.join(task_cls.SECTIONS)}")
    sections: dict[str, Section] = {
        name: cls.from_any(config.get(name), source) for name, cls in task_cls.SECTIONS.items()
    }
    return task_cls(sections, resolve_path(workdir) if workdir else None)


def train(config: Any, workdir: str, warm_start: str | None = None, log: Callable = print) -> dict:
    """Train (or resume) `config` in `workdir`; -> the last logged and evaluated metrics."""
    return run_task(task_from_config(config, workdir=workdir), warm_start, log)


def run_task(task: AudioTask | ImageTask, warm_start: str | None = None, log: Callable = print) -> dict:
    """Train (or resume) a task built with its workdir; -> the last logged and evaluated metrics."""
    data = task.data
    if getattr(data, "source", "") in ("folder", "pairs") and data.path not in ("", "demo"):
        # the trainer writes wavs (samples) into the workdir: inside the corpus they would become training data
        check_not_input(task.workdir, input_folders=[resolve_path(data.path)], flag="--workdir")
    return trainer.run(task, resolve_path(warm_start) if warm_start else None, log)
