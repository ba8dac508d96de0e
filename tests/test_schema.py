"""Every declared config field, drawn inside and outside its range (Hypothesis).

Outside: train.py's entry (in process, through the same error handler as the command line) exits with
code 2 and one line on stderr naming the field, before anything is read or written. Inside: the model
builds (its params' shapes are traced) or the run gets as far as its first step (checks, optimiser,
state, a first batch of the expected shape); a value that breaks a cross-field rule instead is an error
naming this field. Plus the table of reported mistakes, synth.py's flags, and a hand-edited checkpoint.
"""

import dataclasses
import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nanoflow_jax.cli import run_cli
from nanoflow_jax.errors import ConfigError
from nanoflow_jax.schema import Bool, Choice, Float, Floats, Int, Subset, Text, rule_of
from nanoflow_jax.synth.command import SynthArgs
from nanoflow_jax.train import trainer
from nanoflow_jax.train.run import TASKS, task_from_config, train
from tests.conftest import DATA

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# tiny shapes for everything a drawn value does not set
TINY = {
    "audio": {
        "model": dict(n_flows=2, n_layers=2, channels=4, n_groups=4, embed_dim=4),
        "data": dict(path="demo", segment_length=1024),
        "train": dict(batch_size=8),  # the suite runs on 8 CPU devices
        "eval": dict(batch_size=2, num_crops=2, num_utterances=1),
    },
    "image": {
        "model": dict(variant="nanoflow", hidden=4, n_levels=2, n_flows=2),
        "data": dict(source="demo"),
        "train": dict(batch_size=8, init_batch_size=4),
        "eval": dict(batch_size=4, num_images=4, num_samples=2),
    },
}
FIELDS = [
    (kind, section, f.name)
    for kind, task in TASKS.items()
    for section, cls in task.SECTIONS.items()
    for f in dataclasses.fields(cls)
    if f.name != "kind"  # the family key itself (covered by test_unknown_model_kind)
]


def base_config(kind: str) -> dict:
    cfg = {name: dict(fields) for name, fields in TINY[kind].items()}
    cfg["model"]["kind"] = kind
    return cfg


def rule(kind: str, section: str, name: str):
    cls = TASKS[kind].SECTIONS[section]
    return rule_of(next(f for f in dataclasses.fields(cls) if f.name == name))


def default(kind: str, section: str, name: str):
    cls = TASKS[kind].SECTIONS[section]
    return next(f for f in dataclasses.fields(cls) if f.name == name).default


# a drawn value that a cross-field rule ties to another field sets that field too
PARTNERS = {
    ("audio", "model", "cond_channels"): lambda c, v: c["data"].update(n_mels=v),
    ("audio", "data", "n_mels"): lambda c, v: c["model"].update(cond_channels=v),
    ("audio", "model", "n_groups"): lambda c, v: c["data"].update(segment_length=v * -(-1024 // v)),
    ("audio", "data", "segment_length"): lambda c, v: c["model"].update(n_groups=1),
    ("audio", "model", "shared_layers"): lambda c, v: c["model"].update(n_layers=max(v or 1, 2)),
    ("audio", "eval", "batch_size"): lambda c, v: c["eval"].update(num_crops=v),
    # the upsampling follows the mel's hop; the window covers the hop
    ("audio", "model", "hop_length"): lambda c, v: c["data"].update(
        hop_length=v, win_length=max(1024, v), n_fft=max(1024, v)
    ),
    ("audio", "data", "hop_length"): lambda c, v: (
        c["model"].update(hop_length=v),
        c["data"].update(win_length=max(1024, v), n_fft=max(1024, v)),
    ),
    ("audio", "train", "grad_accum_steps"): lambda c, v: c["train"].update(batch_size=8 * v),
    ("image", "train", "grad_accum_steps"): lambda c, v: c["train"].update(batch_size=8 * v),
    ("image", "model", "n_levels"): lambda c, v: c["model"].update(image_size=2**v),
}


# -- strategies from the declared rules ---------------------------------------------------------------
def inside(r, fallback=None):
    """Values the rule accepts, kept small enough to build."""
    if isinstance(r, Int):
        lo = r.min if r.min is not None else -8
        hi = r.max if r.max is not None else max(lo + 16, 2 * (fallback or 0))
        values = st.integers(lo, hi)
    elif isinstance(r, Float):
        lo = r.min if r.min is not None else -10.0
        hi = r.max if r.max is not None else lo + 2.0 * max(abs(fallback or 1.0), 1.0)
        values = st.floats(lo, hi, exclude_min=r.min_open, exclude_max=r.max_open, allow_nan=False)
    elif isinstance(r, Bool):
        values = st.booleans()
    elif isinstance(r, Choice):
        values = st.sampled_from(r.choices)
    elif isinstance(r, Subset):
        values = st.lists(st.sampled_from(r.choices), unique=True, min_size=r.min_size).map(tuple)
    elif isinstance(r, Text):
        values = st.text(min_size=1 if r.nonempty else 0, max_size=8)
    elif isinstance(r, Floats):
        values = st.lists(inside(r.each), min_size=1, max_size=3).map(tuple)
    else:
        raise AssertionError(f"no strategy for {r}")
    return values | st.none() if r.optional else values


def outside(r):
    """Values the rule refuses: out of range, of the wrong type, None where not allowed."""
    if isinstance(r, Text):
        wrong_type = st.integers()
    elif isinstance(r, Subset | Floats):
        wrong_type = st.sampled_from(["x", {"a": 1}, 3])
    else:
        wrong_type = st.sampled_from(["x", [1], {"a": 1}])
    options = [wrong_type] if r.optional else [wrong_type, st.none()]
    if isinstance(r, Int):
        options.append(st.floats(allow_nan=False).filter(lambda v: v != int(v) if math.isfinite(v) else True))
        options.append(st.booleans())
        if r.min is not None:
            options.append(st.integers(max_value=r.min - 1))
        if r.max is not None:
            options.append(st.integers(min_value=r.max + 1))
    elif isinstance(r, Float):
        options.append(st.sampled_from([math.nan, math.inf, -math.inf]))
        if r.min is not None:
            below = st.floats(max_value=r.min, exclude_max=not r.min_open, allow_nan=False, allow_infinity=False)
            options.append(below)
        if r.max is not None:
            above = st.floats(min_value=r.max, exclude_min=not r.max_open, allow_nan=False, allow_infinity=False)
            options.append(above)
    elif isinstance(r, Bool):
        options.append(st.integers())
    elif isinstance(r, Choice):
        options.append(st.text(max_size=12).filter(lambda v: v not in r.choices))
    elif isinstance(r, Subset):
        options.append(st.lists(st.text(max_size=6).filter(lambda v: v not in r.choices), min_size=1).map(tuple))
        options.append(st.sampled_from(r.choices).map(lambda v: (v, v)))
    elif isinstance(r, Floats):
        options.append(st.just(()))
        options.append(st.lists(outside(r.each).filter(lambda v: v is not None), min_size=1, max_size=3).map(tuple))
    return st.one_of(options)


# -- outside the range: exit 2, one line naming the field, nothing written ---------------------------------
def assert_refused(config: dict, label: str, tmp_path, capsys) -> None:
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train(config, str(workdir), log=lambda *_: None), "train.py")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("train.py: error: ") and label in err[0], err
    assert not workdir.exists(), "nothing may be written before the config is checked"


@pytest.mark.parametrize("kind,section,name", FIELDS, ids=[f"{k}.{s}.{n}" for k, s, n in FIELDS])
def test_out_of_range_value_is_one_line_and_exit_2(kind, section, name, tmp_path, capsys):
    @SETTINGS
    @given(value=outside(rule(kind, section, name)))
    def check(value):
        config = base_config(kind)
        config[section][name] = value
        assert_refused(config, f"{section}.{name} = ", tmp_path, capsys)

    check()


# -- inside the range: the model builds, or the run reaches its first step ----------------------------------
@functools.cache
def _corpus(kind: str):
    task = task_from_config(base_config(kind))
    task.load_data(lambda *_: None)
    return task.train_set, task.test_set


@functools.cache
def _abstract_variables(task_cls, model_config):
    """The params' shapes depend on the model section only: traced once per model config."""
    task = task_cls(dict(task_from_config(base_config(model_config.kind)).sections, model=model_config))
    task.train_set, task.test_set = _corpus(model_config.kind)
    return jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))


def reach_first_step(task) -> None:
    """The trainer's set-up short of compiling: checks, optimiser, state, first batch."""
    task.train.check_devices(jax.device_count(), jax.process_count())
    task.check(jax.device_count())
    kind = task.model_config.kind
    task.train_set, task.test_set = _corpus(kind)
    tx, _ = task.optimizer()
    variables = _abstract_variables(type(task), task.model_config)
    state = jax.eval_shape(lambda v: trainer.init_state(v, tx, jax.random.PRNGKey(0)), variables)
    assert jax.tree.leaves(state.opt_state)
    loader = task.batches(0)
    try:
        batch = next(loader)
    finally:
        loader.close()
    assert batch.shape[0] == task.train.batch_size // jax.process_count()


def builds(task) -> None:
    """The model's params, traced (no compilation)."""
    shapes = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0)) if task.model_config.kind == "audio" else None
    if shapes is None:  # the image init reads data: trace it on abstract images
        cfg = task.model_config
        x = jax.ShapeDtypeStruct((2, cfg.image_size, cfg.image_size, cfg.channels), jnp.float32)
        shapes = jax.eval_shape(task.model.init, jax.random.PRNGKey(0), x)
    assert jax.tree.leaves(shapes)


@pytest.mark.parametrize("kind,section,name", FIELDS, ids=[f"{k}.{s}.{n}" for k, s, n in FIELDS])
def test_in_range_value_builds_or_reaches_the_first_step(kind, section, name):
    r = rule(kind, section, name)

    @settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
    @given(value=inside(r, default(kind, section, name)))
    def check(value):
        config = base_config(kind)
        config[section][name] = value
        PARTNERS.get((kind, section, name), lambda c, v: None)(config, value)
        try:
            task = task_from_config(config)
            task.train.check_devices(jax.device_count(), jax.process_count())
            task.check(jax.device_count())
        except ConfigError as e:  # a cross-field rule: it must name a field and say why
            assert str(e).count("\n") == 0 and " is not allowed: " in str(e), str(e)
            assume(False)
        if section == "model":
            builds(task)
        elif not (section == "data" and name in ("source", "path")):  # other corpora are not bundled
            reach_first_step(task)

    check()


# -- the mistakes the issue reported, through the real flag parsing ----------------------------------------
@pytest.mark.parametrize(
    "override,label",
    [
        ("train.batch_size=0", "train.batch_size = 0"),
        ("train.eval_every=0", "train.eval_every = 0"),
        ("train.grad_accum_steps=0", "train.grad_accum_steps = 0"),
        ("eval.batch_size=0", "eval.batch_size = 0"),
        ("train.log_every=0", "train.log_every = 0"),
        ("model.embed_dim=0", "model.embed_dim = 0"),
        ("train.learning_rate=-1", "train.learning_rate = -1.0"),
    ],
)
def test_reported_mistakes_are_one_line(override, label, tmp_path, capsys):
    from ml_collections import config_flags  # noqa: F401  (the --config.x=y parser train.py uses)

    from configs import demo

    config = demo.get_config()
    path, value = override.split("=")
    section, name = path.split(".")
    setattr(config[section], name, type(config[section][name])(value))
    assert_refused(config, label, tmp_path, capsys)


def test_unknown_model_kind_and_section(tmp_path, capsys):
    config = base_config("audio")
    config["model"]["kind"] = "video"
    assert_refused(config, "model.kind = 'video'", tmp_path, capsys)
    config = base_config("audio") | {"optim": {}}
    assert_refused(config, "unknown section 'optim'", tmp_path, capsys)


# -- synth.py's flags ----------------------------------------------------------------------------------
SYNTH_FIELDS = [f.name for f in dataclasses.fields(SynthArgs)]


@pytest.mark.parametrize("name", SYNTH_FIELDS)
def test_synth_flags(name, capsys):
    r = rule_of(next(f for f in dataclasses.fields(SynthArgs) if f.name == name))

    @SETTINGS
    @given(bad=outside(r), good=inside(r))
    def check(bad, good):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lambda: SynthArgs(**{name: bad}), "synth.py")
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and f"--{name} = " in err[0], err
        assert getattr(SynthArgs(**{name: good}), name) == good

    check()


# -- a checkpoint whose stored config was edited by hand ----------------------------------------------------
@pytest.mark.parametrize("section,name,value", [("model", "n_flows", -1), ("data", "fmax", 99999.0)])
def test_hand_edited_checkpoint_config_names_file_and_field(section, name, value, tmp_path, capsys):
    from nanoflow_jax.convert.write import convert_official
    from nanoflow_jax.synth.command import run

    folder = convert_official(
        os.path.join(DATA, "nanoflow_small_official_ckpt.pt"),
        os.path.join(DATA, "nanoflow_small_config.json"),
        str(tmp_path / "ckpt"),
    )
    meta = os.path.join(folder, "0", "meta", "metadata")
    stored = json.load(open(meta))
    stored["config"][section][name] = value
    json.dump(stored, open(meta, "w"))
    np.save(tmp_path / "m.npy", np.zeros((80, 12), np.float32))
    out = tmp_path / "o.wav"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: run(SynthArgs(mel=str(tmp_path / "m.npy"), checkpoint=folder, out=str(out))), "synth.py")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert meta in err[0] and f"{section}.{name} = " in err[0], err
    assert not out.exists()
