"""Speed of synthesis and training of the paper's NanoFlow on whatever device JAX has: the one-shot suite
for a machine lent for minutes (bare: jax, flax, optax, numpy; nothing else is imported), and on a CPU the
rows beside the official code.

    python -m bench.accelerator --out DIR [--budget-s 480] [--smoke]
    python -m bench.accelerator --out DIR --only synth --dtypes float32,bfloat16,float16 --batches 1 --frames 172
    python -m bench.accelerator --out DIR --only train --dtypes float32 --batches 2 --segment 16000 --remats no

Prints the jax / jaxlib versions, the device kind and the XLA flags first, then runs each case and
appends one JSON object per case to DIR/accelerator.jsonl the moment it ends (a run that is killed keeps
what it finished), and at the end prints the table and writes it to DIR/accelerator.md.

- synth rows: NanoFlow C=128 K=8 L=8 G=16 (random weights, heads set so every flow works), the cached
  inverse (`synthesis_fn`, AOT-compiled), for each precision policy x batch x mel frames: kHz of audio
  made per second (median of timed runs, each blocked on), compile time, the device's peak memory, and
  the SNR against float32 on the same inputs.
- train rows: the trainer's step (mel on the device, forward, backward, Adam, non-finite skip; float16
  adds loss scaling) on 16,000-sample crops, per policy x batch x remat: step time, samples/s, and MFU =
  model FLOPs per step / step time / the device's peak for that precision (a small table by device kind;
  an unknown kind gives null), and XLA's estimate of the step's temporary buffers (`xla_temp_bytes`).
  Model FLOPs = 3 x the forward count (`common.forward_flops_per_sample`); XLA's cost analysis is in the
  row too (`flops_xla`), but it counts the body of a loop once, so it misses the flow scan's K-fold.
- --dtypes / --batches / --frames / --segment / --remats / --repeats replace the suite's lists (CPU sittings).
- every case is its own try/except (an out-of-memory is a row with its error); a case that would not end
  within --budget-s (judged from the cases before it) is a row saying it was skipped.
- --smoke: tiny shapes, minutes on a CPU (tests/test_bench.py runs it).
- on a GPU each row also has the program's kernel launches, their share in CUDA graphs and the
  deviceless audit's estimate (`bench.gpu_program`), read from XLA's dump as the program compiles, so
  the measured time stands beside the estimate (--no-audit skips it). The project's GPU flags
  (`nanoflow_jax.gpu_flags`) are set as the commands set them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import traceback
from importlib.util import find_spec

import jax
import numpy as np

from bench.common import (
    PEAK_TFLOPS,
    forward_flops_per_sample,
    median,
    paper_model,
    snr_db,
    synthesis_program,
    timed,
    train_program,
    working_params,
)

FULL = dict(
    model=dict(),  # the paper's
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


class Auditor:
    """Compiles a benchmark's program and, on a GPU, reads its kernel launches and CUDA-graph share from
    XLA's dump (`bench.gpu_program.audit`), with the deviceless audit's labelled estimate beside the
    timing: the first GPU minutes check the estimate. On other devices it only compiles."""

    def __init__(self, dump: str | None):
        self.dump, self.figures = dump, {}

    def compile(self, lowered):
        from pathlib import Path

        from bench.gpu_program import audit

        if self.dump is None or jax.devices()[0].platform != "gpu":
            self.figures = {}
            return lowered.compile()
        try:
            compiled, figures = audit(lowered, Path(self.dump))
        except (FileNotFoundError, KeyError, ValueError, StopIteration) as e:  # another XLA's dump format
            self.figures = {"audit_error": f"{type(e).__name__}: {e}"[:200]}
            return lowered.compile()
        self.figures = {k: figures[k] for k in ("launches", "in_graphs", "host_launches")}
        return compiled

    def row(self, flops: float, dtype: str) -> dict:
        """The audit's figures and estimate for the last program compiled (empty off GPU)."""
        from bench.gpu_program import estimate_ms

        peak = (PEAK_TFLOPS.get(jax.devices()[0].device_kind) or {}).get(dtype)
        if not self.figures or "audit_error" in self.figures:
            return dict(self.figures)
        out = dict(self.figures)
        if peak:
            out["estimate_ms"] = estimate_ms(self.figures, flops, peak)["estimate_ms"]
        return out


def synth_cases(spec: dict, model_cfg, emit, guard, auditor: Auditor):
    params = working_params(model_cfg)
    for frames in spec["synth"]["frames"]:
        for batch in spec["synth"]["batches"]:
            ref = None
            for dtype in spec["synth"]["dtypes"]:
                row = dict(case="synth", dtype=dtype, batch=batch, frames=frames)
                if not guard(row, work=batch * frames):
                    continue
                try:
                    run, info = synthesis_program(model_cfg, params, batch, frames, dtype, auditor.compile)
                    times, out = timed(run, spec["repeats"])
                    out = np.asarray(out)
                    ref = out if dtype == "float32" else ref
                    row.update(
                        auditor.row(forward_flops_per_sample(model_cfg) * info["samples"], dtype),
                        ms=median(times) * 1e3,
                        khz=info["samples"] / median(times) / 1e3,
                        compile_s=info["compile_s"],
                        peak_bytes=device_memory(),
                        snr_db=None if ref is None or dtype == "float32" else snr_db(ref, out),
                        finite=bool(np.all(np.isfinite(out))),
                    )
                except Exception as e:  # an out-of-memory is a result too
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                emit(row)


def train_cases(spec: dict, model_cfg, emit, guard, auditor: Auditor):
    segment = spec["train"]["segment"]
    kind = jax.devices()[0].device_kind
    for dtype in spec["train"]["dtypes"]:
        for remat in spec["train"]["remats"]:
            for batch in spec["train"]["batches"]:
                row = dict(case="train", dtype=dtype, batch=batch, remat=remat)
                if not guard(row, work=batch * segment * (1.3 if remat else 1.0)):
                    continue
                try:
                    run, info = train_program(model_cfg, dtype, batch, segment, remat, auditor.compile)
                    compiled = info["compiled"]
                    cost = compiled.cost_analysis()
                    cost = cost[0] if isinstance(cost, list) else cost
                    memory = compiled.memory_analysis()
                    flops = 3 * forward_flops_per_sample(model_cfg) * batch * segment
                    times, metrics = timed(run, spec["repeats"])
                    step_s = median(times)
                    peak = (PEAK_TFLOPS.get(kind) or {}).get(dtype)
                    row.update(
                        auditor.row(flops, dtype),
                        step_s=step_s,
                        samples_per_s=batch * segment / step_s,
                        mfu=None if not peak else flops / step_s / (peak * 1e12),
                        flops=flops,
                        flops_source="3x_forward",
                        flops_xla=(cost or {}).get("flops"),
                        compile_s=info["compile_s"],
                        peak_bytes=device_memory(),
                        xla_temp_bytes=memory.temp_size_in_bytes if memory else None,
                        loss=float(metrics["loss"]),
                    )
                except Exception as e:
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                emit(row)


def write_table(rows: list[dict], path: str) -> str:
    """The rows as markdown tables (synth, train), written to `path`; -> the text."""

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = []
    for case, cols in (
        (
            "synth",
            (
                "dtype",
                "batch",
                "frames",
                "ms",
                "estimate_ms",
                "launches",
                "in_graphs",
                "khz",
                "compile_s",
                "peak_bytes",
                "snr_db",
            ),
        ),
        (
            "train",
            (
                "dtype",
                "batch",
                "remat",
                "step_s",
                "estimate_ms",
                "launches",
                "in_graphs",
                "samples_per_s",
                "mfu",
                "compile_s",
                "peak_bytes",
                "xla_temp_bytes",
            ),
        ),
    ):
        chosen = [r for r in rows if r["case"] == case]
        if not chosen:
            continue
        lines += [f"### {case}", "", "| " + " | ".join(cols) + " | note |", "|" + "---|" * (len(cols) + 1)]
        for r in chosen:
            note = r.get("error") or r.get("skipped") or ""
            lines.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + f" | {note} |")
        lines.append("")
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text)
    return text


def with_overrides(spec: dict, args: argparse.Namespace) -> dict:
    """The suite's lists, with those the command line gives replaced."""
    spec = {k: dict(v) if isinstance(v, dict) else v for k, v in spec.items()}
    ints = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
    if args.dtypes:
        spec["synth"]["dtypes"] = spec["train"]["dtypes"] = tuple(args.dtypes.split(","))
    if args.batches:
        spec["synth"]["batches"] = spec["train"]["batches"] = ints(args.batches)
    if args.frames:
        spec["synth"]["frames"] = ints(args.frames)
    if args.segment:
        spec["train"]["segment"] = args.segment
    if args.remats:
        spec["train"]["remats"] = tuple(v == "yes" for v in args.remats.split(","))
    if args.repeats:
        spec["repeats"] = args.repeats
    return spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for accelerator.jsonl and accelerator.md")
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole run")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, for a CPU check")
    ap.add_argument("--only", choices=("synth", "train"), default=None)
    ap.add_argument("--dtypes", default=None, help="comma-separated precision policies (both cases)")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (both cases)")
    ap.add_argument("--frames", default=None, help="comma-separated mel lengths (synth)")
    ap.add_argument("--segment", type=int, default=None, help="crop samples (train)")
    ap.add_argument("--remats", default=None, help="comma-separated yes / no (train)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case (the median is kept)")
    ap.add_argument("--no-audit", action="store_true", help="GPU: skip reading each program's kernel launches")
    args = ap.parse_args()
    from nanoflow_jax.gpu_flags import apply as apply_gpu_flags

    apply_gpu_flags()  # as the project's commands run: before JAX starts its backend
    cuda = find_spec("jax_plugins") is not None and find_spec("jax_plugins.xla_cuda12") is not None
    dump = tempfile.mkdtemp(prefix="accelerator_xla_") if cuda and not args.no_audit else None
    if dump:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump}"
    auditor = Auditor(dump)
    start = time.perf_counter()
    spec = with_overrides(SMOKE if args.smoke else FULL, args)
    import jaxlib

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

    model_cfg = paper_model(**spec["model"])
    for name, cases in (("synth", synth_cases), ("train", train_cases)):
        if args.only in (None, name):
            try:
                cases(spec, model_cfg, emit, guard, auditor)
            except Exception:
                traceback.print_exc()
    if dump:
        shutil.rmtree(dump, ignore_errors=True)
    print(write_table(rows, os.path.join(args.out, "accelerator.md")), flush=True)
    print(f"wrote {jsonl} and accelerator.md ({len(rows)} rows, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
