"""One-shot accelerator benchmark: synthesis and training of the paper's NanoFlow on whatever device JAX
has, for a machine lent for minutes (bare: jax, flax, optax, numpy; nothing else is imported).

    python bench/accelerator.py --out DIR [--budget-s 480] [--smoke]

Prints the jax / jaxlib versions, the device kind and the XLA flags first, then runs each case and
appends one JSON object per case to DIR/accelerator.jsonl the moment it ends (a run that is killed keeps
what it finished), and writes DIR/accelerator.md, a table, at the end.

- synth rows: NanoFlow C=128 K=8 L=8 G=16 (random weights, heads set so every flow works), the cached
  inverse (`synthesis_fn`, AOT-compiled), for each precision policy x batch x mel frames: kHz of audio
  made per second (median of timed runs, each blocked on), compile time, the device's peak memory, and
  the SNR against float32 on the same inputs.
- train rows: the trainer's step (mel on the device, forward, backward, Adam, non-finite skip; float16
  adds loss scaling) on 16,000-sample crops, per policy x batch x remat: step time, samples/s, and MFU =
  model FLOPs per step / step time / the device's peak for that precision (a small table by device kind;
  an unknown kind gives null). Model FLOPs = 3 x the forward count (2 x K x L x (20 C^2 + 160 C) per
  sample: 44.6 MFLOP for the paper's model); XLA's cost analysis is in the row too (`flops_xla`), but it
  counts the body of a loop once, so it misses the flow scan's K-fold.
- every case is its own try/except (an out-of-memory is a row with its error); a case that would not end
  within --budget-s (judged from the cases before it) is a row saying it was skipped.
- --smoke: tiny shapes, minutes on a CPU (tests/test_bench.py runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402


def forward_flops_per_sample(cfg) -> float:
    """One forward pass per audio sample: 20 C^2 + 160 C multiply-adds per layer and flow (the official
    estimator's layers; 44.6 MFLOP for C=128, L=8, K=8)."""
    return 2.0 * cfg.n_flows * cfg.n_layers * (20 * cfg.channels**2 + 2 * cfg.cond_channels * cfg.channels)


# dense peak FLOP/s by device kind and policy (vendor data sheets; SXM parts, no sparsity)
PEAK_TFLOPS = {
    "NVIDIA H200": {"float32": 67.0, "tensorfloat32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "NVIDIA H100 80GB HBM3": {"float32": 67.0, "tensorfloat32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "NVIDIA A100-SXM4-80GB": {"float32": 19.5, "tensorfloat32": 156.0, "bfloat16": 312.0, "float16": 312.0},
    "NVIDIA A100-SXM4-40GB": {"float32": 19.5, "tensorfloat32": 156.0, "bfloat16": 312.0, "float16": 312.0},
    "Tesla V100-SXM2-16GB": {"float32": 15.7, "tensorfloat32": 15.7, "bfloat16": None, "float16": 125.0},
}
FULL = dict(
    model=dict(n_flows=8, n_layers=8, channels=128, n_groups=16, embed_dim=512),
    synth=dict(dtypes=("float32", "tensorfloat32", "bfloat16", "float16"), batches=(1, 8, 32), frames=(172, 688)),
    train=dict(dtypes=("float32", "bfloat16"), batches=(8, 32), remats=(False, True), segment=16000),
    repeats=5,
)
SMOKE = dict(
    model=dict(n_flows=2, n_layers=2, channels=8, n_groups=4, embed_dim=8),
    synth=dict(dtypes=("float32", "bfloat16"), batches=(1, 2), frames=(8,)),
    train=dict(dtypes=("float16",), batches=(8,), remats=(False, True), segment=1024),
    repeats=2,
)


def device_memory() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def timed(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def snr_db(ref: np.ndarray, out: np.ndarray) -> float | None:
    err = float(np.sum((out - ref) ** 2))
    return None if err == 0 else 10 * float(np.log10(np.sum(ref**2) / err))


def synth_cases(spec: dict, model_cfg, emit, guard):
    from nanoflow_jax.models import AudioFlow
    from nanoflow_jax.models.audio_params import inference_params, init_params
    from nanoflow_jax.synth.fast import output_length, synthesis_fn

    model = AudioFlow(model_cfg)
    params = init_params(model, jax.random.PRNGKey(0))
    heads = params["params"]["proj_heads"]  # near zero at init: give every flow real work
    heads["kernel"] = 0.05 * jax.random.normal(jax.random.PRNGKey(1), heads["kernel"].shape)
    heads["bias"] = 0.05 * jax.random.normal(jax.random.PRNGKey(2), heads["bias"].shape)
    params = inference_params(model, params)
    for frames in spec["synth"]["frames"]:
        for batch in spec["synth"]["batches"]:
            t = output_length(frames, model_cfg)
            mel = jax.random.normal(jax.random.PRNGKey(3), (batch, model_cfg.cond_channels, frames)) - 5.0
            z = jax.random.normal(jax.random.PRNGKey(4), (batch, t))
            ref = None
            for dtype in spec["synth"]["dtypes"]:
                row = dict(case="synth", dtype=dtype, batch=batch, frames=frames)
                if not guard(row, work=batch * frames):
                    continue
                try:
                    t0 = time.perf_counter()
                    fn = synthesis_fn(model_cfg, dtype).lower(params, mel, z).compile()
                    compile_s = time.perf_counter() - t0
                    out = np.asarray(fn(params, mel, z))
                    seconds = timed(fn, (params, mel, z), spec["repeats"])
                    ref = out if dtype == "float32" else ref
                    row.update(
                        khz=batch * t / seconds / 1e3,
                        compile_s=compile_s,
                        peak_bytes=device_memory(),
                        snr_db=None if ref is None or dtype == "float32" else snr_db(ref, out),
                        finite=bool(np.all(np.isfinite(out))),
                    )
                except Exception as e:  # an out-of-memory is a result too
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                emit(row)


def train_cases(spec: dict, model_cfg, emit, guard):
    from nanoflow_jax.audio.mel import MelConfig
    from nanoflow_jax.models import AudioFlow
    from nanoflow_jax.models.audio_params import init_params
    from nanoflow_jax.train.audio_eval import audio_nll
    from nanoflow_jax.train.optimizers import adam_halving
    from nanoflow_jax.train.step import global_batch, init_state, make_mesh, make_train_step, replicate

    segment = spec["train"]["segment"]
    kind = jax.devices()[0].device_kind
    mesh = make_mesh()
    for dtype in spec["train"]["dtypes"]:
        for remat in spec["train"]["remats"]:
            for batch in spec["train"]["batches"]:
                row = dict(case="train", dtype=dtype, batch=batch, remat=remat)
                if not guard(row, work=batch * segment * (1.3 if remat else 1.0)):
                    continue
                try:
                    model = AudioFlow(model_cfg, remat=remat, dtype=dtype)
                    tx, schedule = adam_halving(1e-3, 200_000, 0.5, 5.0)  # the official recipe
                    step = make_train_step(
                        audio_nll(model, MelConfig()), tx, schedule, mesh, dynamic_scale=dtype == "float16"
                    )
                    scale = 2.0**15 if dtype == "float16" else 1.0
                    state = replicate(
                        init_state(init_params(model, jax.random.PRNGKey(0)), tx, jax.random.PRNGKey(1), scale), mesh
                    )
                    audio = 0.1 * np.random.default_rng(0).standard_normal((batch, segment)).astype(np.float32)
                    x = global_batch(audio, mesh)
                    t0 = time.perf_counter()
                    compiled = step.lower(state, x).compile()
                    compile_s = time.perf_counter() - t0
                    cost = compiled.cost_analysis()
                    cost = cost[0] if isinstance(cost, list) else cost
                    flops = 3 * forward_flops_per_sample(model_cfg) * batch * segment
                    state, m = compiled(state, x)  # warm-up
                    jax.block_until_ready(m)
                    times = []
                    for _ in range(spec["repeats"]):
                        t1 = time.perf_counter()
                        state, m = compiled(state, x)
                        jax.block_until_ready(m)
                        times.append(time.perf_counter() - t1)
                    step_s = statistics.median(times)
                    peak = (PEAK_TFLOPS.get(kind) or {}).get(dtype)
                    row.update(
                        step_s=step_s,
                        samples_per_s=batch * segment / step_s,
                        mfu=None if not peak else flops / step_s / (peak * 1e12),
                        flops=flops,
                        flops_source="3x_forward",
                        flops_xla=(cost or {}).get("flops"),
                        compile_s=compile_s,
                        peak_bytes=device_memory(),
                        loss=float(m["loss"]),
                    )
                except Exception as e:
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                emit(row)


def write_table(rows: list[dict], path: str) -> None:
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = []
    for case, cols in (
        ("synth", ("dtype", "batch", "frames", "khz", "compile_s", "peak_bytes", "snr_db")),
        ("train", ("dtype", "batch", "remat", "step_s", "samples_per_s", "mfu", "compile_s", "peak_bytes")),
    ):
        chosen = [r for r in rows if r["case"] == case]
        if not chosen:
            continue
        lines += [f"### {case}", "", "| " + " | ".join(cols) + " | note |", "|" + "---|" * (len(cols) + 1)]
        for r in chosen:
            note = r.get("error") or r.get("skipped") or ""
            lines.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + f" | {note} |")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for accelerator.jsonl and accelerator.md")
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole run")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, for a CPU check")
    ap.add_argument("--only", choices=("synth", "train"), default=None)
    args = ap.parse_args()
    start = time.perf_counter()
    spec = SMOKE if args.smoke else FULL
    import jaxlib

    from nanoflow_jax.models import ModelConfig

    dev = jax.devices()[0]
    print(
        f"jax {jax.__version__}, jaxlib {jaxlib.__version__}; {jax.device_count()} x {dev.platform} {dev.device_kind}"
    )
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, "accelerator.jsonl")
    rows: list[dict] = []
    seconds_per_work: dict[str, float] = {}  # the slowest rate seen so far, per case kind

    def guard(row: dict, work: float) -> bool:
        """Whether the case fits in the budget left (judged from the slowest rate of its kind so far)."""
        row["_t0"], row["_work"] = time.perf_counter(), work
        left = args.budget_s - (time.perf_counter() - start)
        estimate = seconds_per_work.get(row["case"], 0.0) * work
        if left <= 0 or estimate > left:
            row.pop("_t0"), row.pop("_work")
            row["skipped"] = f"would take ~{estimate:.0f} s, {left:.0f} s left"
            emit(row)
            return False
        return True

    def emit(row: dict) -> None:
        if "_t0" in row:
            took = time.perf_counter() - row.pop("_t0")
            rate = took / row.pop("_work")
            seconds_per_work[row["case"]] = max(seconds_per_work.get(row["case"], 0.0), rate)
            row["wall_s"] = took
        row["device_kind"] = dev.device_kind
        rows.append(row)
        with open(jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    model_cfg = ModelConfig(**spec["model"])
    for name, cases in (("synth", synth_cases), ("train", train_cases)):
        if args.only in (None, name):
            try:
                cases(spec, model_cfg, emit, guard)
            except Exception:
                traceback.print_exc()
    write_table(rows, os.path.join(args.out, "accelerator.md"))
    print(f"wrote {jsonl} and accelerator.md ({len(rows)} rows, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
