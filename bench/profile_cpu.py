"""Where the CPU time goes: XLA's own per-op timing of synthesis and of the training step, against the
matmul roofline of this CPU.

    python -m bench.profile_cpu roofline
    python -m bench.profile_cpu synth [--frames 172] [--dtype float32]
    python -m bench.profile_cpu train [--dtype float32] [--batch 2] [--seg 16000]

The model is the paper's NanoFlow and the programs are `bench.common`'s. Each is AOT-compiled, warmed
up, timed `--repeats` times (median, each blocked on), then run once more under `jax.profiler.trace`: the CPU
runtime records every thunk (one HLO instruction or fusion) it executes. Each thunk is put in a class
read off the optimised HLO (matmul, convolution, elementwise, data movement) and the matmul / convolution
FLOPs are counted from the HLO shapes, so the report gives the time share of each class, the achieved
GFLOP/s of the matmuls and their fraction of the roofline (`roofline`: large matmuls in JAX).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import tempfile
import time

from bench.common import median, paper_model, synthesis_program, timed, train_program, working_params

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

MOVES = {
    "copy", "concatenate", "slice", "dynamic-slice", "dynamic-update-slice", "pad", "transpose", "bitcast",
    "broadcast", "reshape", "parameter", "constant", "tuple", "get-tuple-element", "iota", "reverse",
}  # fmt: skip
CONTROL = {"while", "conditional", "call"}  # containers: their time is their children's
_INSTR = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\S+?)\[([\d,]*)\]\S* (\S+?)\((.*)$")
_COMP = re.compile(r"^(?:ENTRY )?%(\S+) ")


def parse_hlo(text: str) -> tuple[dict, dict]:
    """-> ({instruction: (opcode, dims, dtype, rest of line, computation)}, {computation: [instructions]})."""
    instrs, comps, comp = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        if not line.startswith(" ") and line.rstrip().endswith("{"):
            m = _COMP.match(line)
            comp = m.group(1) if m else None
            continue
        m = _INSTR.match(line)
        if m:
            name, dtype, dims, op, rest = m.groups()
            instrs[name] = (op, [int(d) for d in dims.split(",") if d], dtype, rest, comp)
            comps[comp].append(name)
    return instrs, comps


def _operands(rest: str) -> list[str]:
    return re.findall(r"%([\w.\-]+)", rest.split(")")[0])


def instr_flops(instrs: dict, name: str) -> float:
    """FLOPs of one dot or convolution (2 per multiply-add), from the HLO shapes."""
    op, dims, _, rest, _ = instrs[name]
    out = math.prod(dims)
    if op == "dot":
        lhs = instrs[_operands(rest)[0]][1]
        contract = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest).group(1)
        return 2.0 * out * math.prod(lhs[int(d)] for d in contract.split(",") if d)
    if op == "convolution":
        kernel = instrs[_operands(rest)[1]][1]
        labels = re.search(r"dim_labels=\S+?_(\S+?)->", rest).group(1)
        return 2.0 * out * math.prod(kernel) / kernel[labels.index("o")]
    return 0.0


def classify(instrs: dict, comps: dict, name: str) -> tuple[str, float]:
    """One executed thunk -> (class, FLOPs of its matmuls / convolutions)."""
    op, _, _, rest, _ = instrs[name]
    if op in CONTROL:
        return "control", 0.0
    body = [name]
    if op == "fusion":
        called = re.search(r"calls=%([\w.\-]+)", rest).group(1)
        body = comps[called]
    ops = [instrs[n][0] for n in body]
    flops = sum(instr_flops(instrs, n) for n in body if instrs[n][0] in ("dot", "convolution"))
    if "convolution" in ops:
        return "convolution", flops
    if "dot" in ops or "__onednn$matmul" in rest or "ynn" in name:
        return "matmul", flops
    if op == "custom-call":
        return "custom-call", flops
    if all(o in MOVES for o in ops):
        return "data movement", 0.0
    return "elementwise", 0.0


def trace_ops(run, log_dir: str) -> tuple[dict[str, list[float]], float, float]:
    """Run `run()` once under the profiler -> ({hlo op: [durations in s]}, wall s of the run, s of it
    during which at least one thunk ran)."""
    import jax

    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
        t0 = time.perf_counter()
        run()
        wall = time.perf_counter() - t0
    (path,) = glob.glob(os.path.join(log_dir, "plugins", "profile", "*", "perfetto_trace.json.gz"))
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    ops, spans = collections.defaultdict(list), []
    for e in events:
        if e.get("ph") == "X" and "hlo_op" in e.get("args", {}):
            ops[e["args"]["hlo_op"]].append(e["dur"] * 1e-6)
            if not e["args"]["hlo_op"].startswith(tuple(CONTROL)):
                spans.append((e["ts"], e["ts"] + e["dur"]))
    covered, end = 0.0, -math.inf
    for a, b in sorted(spans):
        covered += max(0.0, b - max(a, end))
        end = max(end, b)
    return ops, wall, covered * 1e-6


def profile(run, hlo_text: str, repeats: int, roof_gflops: float | None) -> dict:
    """Time `run()` (median of `repeats` after a warm-up), then profile one run."""
    import jax

    times, _ = timed(run, repeats)
    instrs, comps = parse_hlo(hlo_text)
    with tempfile.TemporaryDirectory() as tmp:
        ops, traced_wall, covered = trace_ops(lambda: jax.block_until_ready(run()), tmp)
    by_class = collections.defaultdict(lambda: {"s": 0.0, "count": 0, "flops": 0.0})
    rows = []
    for name, durs in ops.items():
        if name not in instrs:
            continue
        cls, flops = classify(instrs, comps, name)
        if cls == "control":
            continue
        c = by_class[cls]
        c["s"] += sum(durs)
        c["count"] += len(durs)
        c["flops"] += flops * len(durs)
        meta = re.search(r'op_name="([^"]*)"', instrs[name][3])
        rows.append((sum(durs), len(durs), name, cls, flops * len(durs), meta.group(1) if meta else ""))
    busy = sum(c["s"] for c in by_class.values())
    fusions = sum(1 for n, v in instrs.items() if v[0] == "fusion" and v[4] and not v[4].startswith("fused"))
    report = {
        "median_s": median(times),
        "thunk_s": busy,
        "traced_wall_s": traced_wall,
        "some_thunk_running_s": covered,
        "fusions": fusions,
        "instructions": len(instrs),
        "classes": {},
        "top": [],
    }
    for cls, c in sorted(by_class.items(), key=lambda kv: -kv[1]["s"]):
        entry = {"s": c["s"], "share": c["s"] / busy, "thunks": c["count"]}
        if c["flops"]:
            entry["gflops_per_s"] = c["flops"] / c["s"] / 1e9
            entry["gflop"] = c["flops"] / 1e9
            if roof_gflops:
                entry["of_roofline"] = entry["gflops_per_s"] / roof_gflops
        report["classes"][cls] = entry
    for s, n, name, cls, flops, meta in sorted(rows, reverse=True)[:15]:
        row = {"op": name, "class": cls, "s": s, "runs": n, "share": s / busy, "where": meta[-70:]}
        if flops:
            row["gflops_per_s"] = flops / s / 1e9
        report["top"].append(row)
    return report


def roofline(sizes=(1024, 2048, 4096), repeats: int = 5) -> dict:
    """Achieved GFLOP/s of square matmuls: float32 at true float32 precision, and bfloat16 operands with
    float32 accumulation (the precision policies' forms). -> {dtype: {n: GFLOP/s}, dtype_best: ...}."""
    import jax
    import jax.numpy as jnp

    out = {}
    for dtype, prec in (("float32", jax.lax.Precision.HIGHEST), ("bfloat16", None)):
        res = {}
        for n in sizes:
            a = jax.random.normal(jax.random.PRNGKey(0), (n, n)).astype(dtype)
            b = jax.random.normal(jax.random.PRNGKey(1), (n, n)).astype(dtype)
            f = jax.jit(lambda x, y, p=prec: jnp.matmul(x, y, precision=p, preferred_element_type=jnp.float32))
            f = f.lower(a, b).compile()
            ts, _ = timed(lambda f=f, a=a, b=b: f(a, b), repeats)
            res[n] = 2 * n**3 / median(ts) / 1e9
        out[dtype] = res
        out[dtype + "_best"] = max(res.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("program", choices=("roofline", "synth", "train"))
    ap.add_argument("--frames", type=int, default=172)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seg", type=int, default=16000)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--roofline-gflops", type=float, default=None, help="for the fraction (default: measure)")
    ap.add_argument("--out", default=None, help="also write the report as JSON here")
    args = ap.parse_args()

    import jax

    print(f"jax {jax.__version__}, {jax.devices()[0].platform} x {jax.device_count()}, {os.cpu_count()} CPUs")
    if args.program == "roofline":
        report = roofline()
        for k, v in report.items():
            print(k, v if isinstance(v, float) else {n: round(g, 1) for n, g in v.items()})
    else:
        roof = args.roofline_gflops
        if roof is None:
            roof = roofline(sizes=(2048,))[args.dtype + "_best" if args.dtype == "bfloat16" else "float32_best"]
        cfg = paper_model()
        if args.program == "synth":
            run, info = synthesis_program(cfg, working_params(cfg), 1, args.frames, args.dtype)
        else:
            run, info = train_program(cfg, args.dtype, args.batch, args.seg)
        compiled = info.pop("compiled")
        report = dict(program=args.program, dtype=args.dtype, roofline_gflops=roof, **info)
        report.update(profile(run, compiled.as_text(), args.repeats, roof))
        print(
            f"{args.program} {args.dtype}: {report['median_s']:.3f} s median "
            f"({info['samples'] / report['median_s'] / 1e3:.2f} kHz); profiled run {report['traced_wall_s']:.3f} s, "
            f"a thunk running {report['some_thunk_running_s']:.3f} s of it, thunks busy {report['thunk_s']:.3f} s, "
            f"{report['fusions']} fusions, roofline {roof:.0f} GFLOP/s"
        )
        for cls, c in report["classes"].items():
            extra = f"  {c['gflops_per_s']:6.0f} GFLOP/s = {c['of_roofline']:.0%} of roofline" if "gflop" in c else ""
            print(f"  {cls:14s} {c['s']:8.3f} s {c['share']:6.1%}  {c['thunks']:7d} thunks{extra}")
        print("  top ops:")
        for r in report["top"]:
            g = f" {r['gflops_per_s']:5.0f} GFLOP/s" if "gflops_per_s" in r else ""
            head = f"    {r['s']:7.3f} s {r['share']:6.1%} x{r['runs']:<5d} {r['op']:32s}"
            print(f"{head} {r['class']:13s}{g}  {r['where']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
