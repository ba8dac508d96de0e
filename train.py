"""Train a flow vocoder.

    python train.py --config=configs/wave_g16.py --workdir=runs/wave_g16 --config.data.path=LJSpeech-1.1
    python train.py --config=configs/demo.py --workdir=runs/demo        # bundled demo corpus, CPU minutes

Rerunning the same command resumes from the last checkpoint. Multi-host: start one process per host with
--coordinator=HOST:PORT --num_processes=N --process_id=I.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from nanoflow_jax.cli import define_compilation_cache_flag

config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, TensorBoard logs and samples go.")
flags.DEFINE_string(
    "warm_start",
    None,
    "Initialise params (only) from a workdir, checkpoint folder, or an official .pt / .npz checkpoint.",
)
flags.DEFINE_string("coordinator", None, "host:port of process 0, for multi-host training.")
flags.DEFINE_integer("num_processes", 1, "Number of processes (hosts) in a multi-host run.")
flags.DEFINE_integer("process_id", 0, "This process's index in a multi-host run.")
define_compilation_cache_flag()
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # orbax logs every checkpoint operation at INFO
        logging.set_verbosity(logging.WARNING)
    from nanoflow_jax.cli import run_cli, use_compilation_cache
    from nanoflow_jax.train.distributed import initialize
    from nanoflow_jax.train.run import run_task, task_from_config

    def run():
        task = task_from_config(FLAGS.config, workdir=FLAGS.workdir)  # every config mistake: one line, first
        use_compilation_cache(FLAGS.compilation_cache)
        initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
        run_task(task, warm_start=FLAGS.warm_start)

    run_cli(run, "train.py")


if __name__ == "__main__":
    from nanoflow_jax.cli import flag_parser

    app.run(main, flags_parser=flag_parser("train.py"))
