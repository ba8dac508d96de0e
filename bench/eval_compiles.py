"""Compilations of a whole-utterance evaluation: one per distinct utterance length (per-utterance, as
before bucketing) against one per padded shape (bucketed and masked), and the time each takes, on the
bundled demo corpus.

    python -m bench.eval_compiles [--utterances 16]

The demo's small NanoFlow (configs/demo.py) with random weights; the first `utterances` test files
(test_fraction raised so that there are enough). Both evaluations compile from scratch (JAX's caches are
cleared, no persistent cache); both give the same NLL.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utterances", type=int, default=16)
    args = ap.parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from configs import demo
    from nanoflow_jax.train import audio_eval, audio_loss
    from nanoflow_jax.train.run import task_from_config

    config = demo.get_config()
    config.data.test_fraction = 0.5
    task = task_from_config(config)
    task.load_data(lambda *_: None)
    params = task.init_variables(jax.random.PRNGKey(0))
    data, model, n = task.test_set, task.eval_model, args.utterances
    utterances = [data.load(i) for i in range(min(n, len(data)))]
    utterances = [x[: len(x) // task.multiple * task.multiple] for x in utterances]
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; {len(utterances)} demo test utterances")

    jax.clear_caches()
    alone = jax.jit(audio_loss.audio_nll(model, task.data))
    t0 = time.perf_counter()
    per = [float(alone(params, jnp.asarray(x[None]))) for x in utterances]
    before = time.perf_counter() - t0
    lengths = len({len(x) for x in utterances})
    print(f"per utterance:  {lengths:3d} compilations (one per length), {before:6.1f} s, NLL {np.mean(per):.6f}")

    jax.clear_caches()
    fn = jax.jit(audio_loss.utterance_nll(model, task.data))
    t0 = time.perf_counter()
    mean, shapes = audio_eval.nll_on_utterances(
        fn, params, data, len(utterances), task.multiple, task.eval.batch_size * task.data.segment_length
    )
    after = time.perf_counter() - t0
    print(f"bucketed:       {shapes:3d} compilations (one per bucket), {after:6.1f} s, NLL {mean:.6f}")


if __name__ == "__main__":
    main()
