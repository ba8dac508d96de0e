"""The GPU program without a GPU: compiles the synthesis program and the training step for an NVIDIA target
on this CPU host (the `.[cuda]` extra gives XLA's GPU compiler; no card is needed) and reports what the GPU
would run: kernel launches per call, the share of them recorded in CUDA graphs, memory, compile time and a
labelled estimate.

    pip install -c constraints.txt -c constraints-cuda.txt -e ".[cuda]"   # once, ~5 GB
    python -m bench.gpu_program --target h200 [--out DIR] [--quick]
    python -m bench.gpu_program --target h100 --only synth --dtypes bfloat16 --batches 1 --seconds 2

Targets are XLA GpuTargetConfig text protos in bench/gpu_targets/ (a100, h100, h200: hardware facts from
the data sheets, and the CUDA versions that make XLA record while loops as graphs). Per program:

- launches: every kernel, library call (cuBLAS, cuDNN) and device copy of one call, read from XLA's own
  thunk sequence after its passes (`*thunk_sequence_after_thunk_passes.txt`), each while loop's body and
  condition multiplied by its known trip count. `launches_hlo` is an independent count of the same thing
  from the optimised HLO (every instruction that becomes a kernel, with the same trip counts): the two
  agree when the parse is right.
- in_graphs: the share of those launches that sit inside a `kCommandBuffer` (one CUDA graph launch
  replays them), under the flags the project's entry points set (`nanoflow_jax.gpu_flags`).
- per_layer_row (synthesis): launches / (flows x rows x layers).
- temp / argument memory: `compiled.memory_analysis()`.
- host_launches: what the host issues per call: one per CUDA graph replayed, one per launch outside
  graphs (a while loop outside a graph: per trip).
- estimate_ms: an ESTIMATE, never a measurement: max(model FLOPs / the card's dense peak for the
  precision, host launches x 4 us + launches inside graphs x 1 us). XLA's cost analysis is not
  available for a deviceless compile, so the FLOPs are the model's (`common.forward_flops_per_sample`;
  x 3 for a training step).

No autotuning happens without the card: counts and memory can be trusted, tile choices and times
cannot. Rows are appended to DIR/gpu_program.jsonl as they finish and printed as a table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGETS = Path(__file__).parent / "gpu_targets"
KEEP = bool(os.environ.get("GPU_PROGRAM_KEEP_DUMP"))  # keep XLA's dump (its folder is printed first)
LAUNCH_US, GRAPH_NODE_US = 4.0, 1.0  # estimate constants: a stream launch, a node replayed in a graph
FULL = dict(
    synth=dict(dtypes=("float32", "bfloat16", "float16"), batches=(1, 8, 32), seconds=(2, 10)),
    train=dict(dtypes=("float32", "bfloat16"), batches=(8,), remats=(False, True), segment=16000),
)
QUICK = dict(
    synth=dict(dtypes=("bfloat16",), batches=(1,), seconds=(2,)),
    train=dict(dtypes=("bfloat16",), batches=(8,), remats=(False,), segment=16000),
)


# -- reading XLA's thunk sequence ----------------------------------------------------------------------
@dataclass
class Thunk:
    kind: str
    ident: int
    children: list[Thunk] = field(default_factory=list)  # a command buffer's or sequence's commands
    condition: list[Thunk] = field(default_factory=list)  # a while loop's
    body: list[Thunk] = field(default_factory=list)


CONTAINERS = {"kCommandBuffer", "kSequential"}
NOT_LAUNCHES = {"kWaitForStreams", "kHostSend", "kHostRecv", "kNop"}
_THUNK = re.compile(r"^(\s*)(\d+): (k\w+)\s*\[[^\]]*\]\s*(.*)$")


def parse_thunks(text: str) -> list[Thunk]:
    """`*thunk_sequence_after_thunk_passes.txt` -> the top-level thunks, nested by indentation: a
    command buffer's commands, a while loop's `condition:` and `body:`, a fusion's embedded thunks."""
    root: list[Thunk] = []
    stack: list[tuple[int, list[Thunk]]] = [(-1, root)]  # (indent of the list's owner, the list)
    owners: list[tuple[int, Thunk]] = []  # the thunks enclosing the current line, by indent
    last = None
    for line in text.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        m = _THUNK.match(line)
        if m is None:  # a while's "condition:" (printed at column 0, right after it) or "body:"
            label = line.strip().rstrip(":")
            if label == "condition":
                owner_indent, owner = next((i, t) for i, t in reversed(owners) if t is last)
            else:
                owner_indent, owner = next((i, t) for i, t in reversed(owners) if i == indent - 2)
            while stack[-1][0] >= owner_indent:
                stack.pop()
            stack.append((owner_indent, getattr(owner, label)))
            continue
        while stack[-1][0] >= indent:
            stack.pop()
        while owners and owners[-1][0] >= indent:
            owners.pop()
        last = Thunk(m.group(3), int(m.group(2)))
        stack[-1][1].append(last)
        owners.append((indent, last))
        stack.append((indent, last.children))
    return root


def count_launches(thunks: list[Thunk], trips: dict[int, int], in_graph: bool = False) -> tuple[int, int]:
    """-> (launches, of them inside a command buffer) for one execution of `thunks`; `trips` maps a
    while thunk's id to its trip count. A thunk with embedded thunks (a dynamic-slice fusion's copy) is
    one launch."""
    total = graphed = 0
    for t in thunks:
        if t.kind in CONTAINERS:
            n, g = count_launches(t.children, trips, in_graph or t.kind == "kCommandBuffer")
        elif t.kind == "kWhile":
            trip = trips[t.ident]
            cn, cg = count_launches(t.condition, trips, in_graph)
            bn, bg = count_launches(t.body, trips, in_graph)
            n, g = (trip + 1) * cn + trip * bn, (trip + 1) * cg + trip * bg
        elif t.kind in NOT_LAUNCHES:
            n = g = 0
        else:
            n, g = 1, int(in_graph)
        total, graphed = total + n, graphed + g
    return total, graphed


def while_trip_counts(metadata: str, hlo: str) -> dict[int, int]:
    """thunk id -> trip count, joining `*thunk_metadata.txt` (id -> HLO name) with the optimised HLO's
    `known_trip_count`."""
    pattern = r"%(\S+) = .*? while\(.*?\"known_trip_count\":\{\"n\":\"(\d+)\""
    trip_of = {m.group(1): int(m.group(2)) for m in re.finditer(pattern, hlo)}
    out = {}
    for block in re.finditer(r'profile_annotation: "([^"]+)"\s*thunk_id: (\d+)\s*\}\s*thunk_kind: "kWhile"', metadata):
        out[int(block.group(2))] = trip_of[block.group(1)]
    return out


def host_launches(thunks: list[Thunk], trips: dict[int, int]) -> int:
    """Launches the host issues for one call: a command buffer is one (its graph replays the rest, loops
    included), a while loop outside one costs its condition's and body's each trip."""
    n = 0
    for t in thunks:
        if t.kind == "kCommandBuffer":
            n += 1
        elif t.kind == "kSequential":
            n += host_launches(t.children, trips)
        elif t.kind == "kWhile":
            trip = trips[t.ident]
            n += (trip + 1) * host_launches(t.condition, trips) + trip * host_launches(t.body, trips)
        elif t.kind not in NOT_LAUNCHES:
            n += 1
    return n


# -- an independent count, from the optimised HLO ----------------------------------------------------------
NO_KERNEL = {
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "opt-barrier",
    "partition-id", "replica-id", "add-dependency", "domain",
}  # fmt: skip


def _opcode(line: str) -> str:
    """`  %x = TYPE op(...)` -> op; TYPE may be a tuple type with spaces and `/*index=5*/` comments."""
    rest = line.split(" = ", 1)[1]
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                rest = rest[i + 1 :]
                break
    else:
        rest = rest.split(" ", 1)[1]
    return rest.strip().split("(", 1)[0]


def hlo_launches(hlo: str) -> int:
    """Kernel-producing instructions of the entry computation, a while loop's body and condition counted
    (trip count) and (trip count + 1) times, recursively. Fused computations are inside their fusion."""
    comps: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo.splitlines():
        head = re.match(r"^(ENTRY )?%(\S+) .*\{\s*$", line)
        if head:
            current = head.group(2)
            comps[current] = []
            entry = current if head.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None and " = " in line:
            comps[current].append(line)

    def count(name: str) -> int:
        n = 0
        for line in comps[name]:
            op = _opcode(line)
            if op == "while":
                trip = int(re.search(r"\"known_trip_count\":\{\"n\":\"(\d+)\"", line).group(1))
                cond = re.search(r"condition=%(\S+?),", line).group(1)
                body = re.search(r"body=%(\S+?),", line).group(1)
                n += (trip + 1) * count(cond) + trip * count(body)
            elif op == "conditional":
                branches = re.findall(r"%([\w.-]+)", re.search(r"branch_computations=\{([^}]*)\}", line).group(1))
                n += max(count(b) for b in branches)
            elif op == "call":
                n += count(re.search(r"to_apply=%(\S+?)[,}\s]", line).group(1))
            elif op and op not in NO_KERNEL:
                n += 1
        return n

    return count(entry)


# -- compiling for a card that is not here ---------------------------------------------------------
def gpu_mesh(target: str):
    """A one-device mesh ("data") on the target GPU, from its text proto."""
    import jax
    import numpy as np
    from jax.experimental import topologies

    proto = (TARGETS / f"{target}.txtpb").read_text()
    topo = topologies.get_topology_desc(platform="cuda", target_config=proto, topology="1x1x1")
    return jax.sharding.Mesh(np.asarray(topo.devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def specs(tree, mesh):
    """Arrays or shapes -> ShapeDtypeStructs replicated on `mesh`."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    rep = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), tree)


def audit(lowered, dump: Path, keep: bool = False) -> tuple[Any, dict]:
    """Compile `lowered` with XLA's dump going to the folder `dump` (XLA_FLAGS' --xla_dump_to, set before
    JAX started) -> (the compiled program, its figures: launches, graphs, memory, compile seconds)."""
    before = set(dump.glob("*"))
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    new = sorted(set(dump.glob("*")) - before)
    module = max({re.match(r"(module_\d+)", p.name).group(1) for p in new if p.name.startswith("module_")})

    def read(*suffixes: str) -> str:
        for suffix in suffixes:
            paths = [p for p in new if p.name.startswith(module) and p.name.endswith(suffix)]
            if paths:
                return paths[0].read_text()
        raise FileNotFoundError(f"XLA's dump in {dump} has no {module}*{suffixes[-1]}")

    hlo = read("gpu_after_optimizations.txt")
    # XLA writes the sequence after its thunk passes only when a pass changed it
    thunks = parse_thunks(read("thunk_sequence_after_thunk_passes.txt", "thunk_sequence.txt"))
    trips = while_trip_counts(read("thunk_metadata.txt"), hlo)
    launches, graphed = count_launches(thunks, trips)
    host = host_launches(thunks, trips)
    mem = compiled.memory_analysis()
    for p in [] if keep else new:  # the dump of a big program runs to gigabytes of LLVM IR and PTX
        p.unlink()
    return compiled, {
        "launches": launches,
        "launches_hlo": hlo_launches(hlo),
        "in_graphs": graphed / launches if launches else 0.0,
        "host_launches": host,
        "temp_gb": mem.temp_size_in_bytes / 1e9,
        "argument_gb": mem.argument_size_in_bytes / 1e9,
        "compile_s": compile_s,
    }


def peak_tflops(mesh, dtype: str) -> float:
    """The dense peak of the mesh's card for the policy (`bench.common.PEAK_TFLOPS`, by device kind)."""
    from bench.common import PEAK_TFLOPS

    return PEAK_TFLOPS[mesh.devices.flat[0].device_kind][dtype]


def estimate_ms(row: dict, flops: float, peak_tflops: float) -> dict:
    """The labelled estimate of a row (see the module's docstring) for a card of that dense peak."""
    compute = flops / (peak_tflops * 1e12) * 1e3
    graphed = row["launches"] * row["in_graphs"]
    floor = (row["host_launches"] * LAUNCH_US + graphed * GRAPH_NODE_US) / 1e3
    return {"estimate_compute_ms": compute, "estimate_launch_ms": floor, "estimate_ms": max(compute, floor)}


def synth_row(cfg, mesh, dtype, batch, seconds, dump, form="shipped") -> dict:
    import jax
    import jax.numpy as jnp

    from bench.common import forward_flops_per_sample
    from nanoflow_jax.models import AudioFlow
    from nanoflow_jax.models.audio_params import inference_params, init_params
    from nanoflow_jax.synth.fast import cache_cond_fits, output_length, synthesis_fn

    frames = round(seconds * cfg.sample_rate / cfg.hop_length) + 3
    t = output_length(frames, cfg)
    model = AudioFlow(cfg)
    params = jax.eval_shape(lambda: inference_params(model, init_params(model, jax.random.PRNGKey(0))))
    mel = jax.ShapeDtypeStruct((batch, cfg.cond_channels, frames), jnp.float32)
    z = jax.ShapeDtypeStruct((batch, t), jnp.float32)
    # "xla": the XLA row form an accelerator gets without the fused kernel (rows unrolled)
    unroll = cfg.n_groups if form == "xla" else None
    fn = synthesis_fn(cfg, dtype, cache_cond=cache_cond_fits(cfg, batch, t), unroll=unroll)
    _, row = audit(fn.lower(*specs((params, mel, z), mesh)), dump, KEEP)
    row["per_layer_row"] = row["launches"] / (cfg.n_flows * cfg.n_groups * cfg.n_layers)
    row.update(estimate_ms(row, forward_flops_per_sample(cfg) * batch * t, peak_tflops(mesh, dtype)))
    return {
        "program": "synth" if form == "shipped" else f"synth ({form})",
        "dtype": dtype,
        "batch": batch,
        "frames": frames,
        "samples": batch * t,
        **row,
    }


def train_row(cfg, mesh, dtype, batch, segment, remat, dump) -> dict:
    import jax
    import jax.numpy as jnp

    from bench.common import forward_flops_per_sample
    from nanoflow_jax.audio.mel import MelConfig
    from nanoflow_jax.models import AudioFlow
    from nanoflow_jax.models.audio_params import init_params
    from nanoflow_jax.train.audio_loss import audio_nll
    from nanoflow_jax.train.optimizers import adam_halving
    from nanoflow_jax.train.step import init_state, make_train_step

    model = AudioFlow(cfg, remat=remat, dtype=dtype).for_platform(mesh.devices.flat[0].platform)  # as the trainer
    tx, schedule = adam_halving(1e-3, 200_000, 0.5, 5.0)
    step = make_train_step(audio_nll(model, MelConfig()), tx, schedule, mesh)
    state = jax.eval_shape(lambda: init_state(init_params(model, jax.random.PRNGKey(0)), tx, jax.random.PRNGKey(1)))
    x = jax.ShapeDtypeStruct((batch, segment), jnp.float32)
    _, row = audit(step.lower(*specs((state, x), mesh)), dump, KEEP)
    row.update(
        estimate_ms(
            row,
            3 * forward_flops_per_sample(cfg) * batch * segment,
            peak_tflops(mesh, dtype),
        )
    )
    return {"program": "train", "dtype": dtype, "batch": batch, "segment": segment, "remat": remat, **row}


COLUMNS = ["program", "dtype", "batch", "frames", "remat", "launches", "launches_hlo", "per_layer_row", "in_graphs",
           "host_launches", "temp_gb", "argument_gb", "compile_s", "estimate_ms"]  # fmt: skip


def table(rows: list[dict]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--target", default="h200", choices=sorted(p.stem for p in TARGETS.glob("*.txtpb")))
    ap.add_argument("--out", default=None, help="folder for gpu_program.jsonl / .md (default: print only)")
    ap.add_argument("--quick", action="store_true", help="one synthesis and one training row (bfloat16)")
    ap.add_argument("--only", choices=("synth", "train"), default=None)
    ap.add_argument("--dtypes", default=None, help="comma-separated: float32,bfloat16,float16")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes")
    ap.add_argument("--seconds", default=None, help="synthesis: comma-separated utterance seconds")
    ap.add_argument("--remats", default=None, help="training: comma-separated yes/no")
    ap.add_argument("--synth-form", choices=("shipped", "xla"), default="shipped",
                    help="xla: synthesis without the fused row kernel, for comparison")  # fmt: skip
    ap.add_argument("--model", default=None, help="JSON of ModelConfig fields to change (default: the paper's)")
    args = ap.parse_args(argv)

    dump = Path(tempfile.mkdtemp(prefix="gpu_program_"))
    os.environ["JAX_PLATFORMS"] = "cpu"  # before jax is imported: the GPU is a compile target only
    from nanoflow_jax.gpu_flags import apply as apply_gpu_flags

    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump}"
    apply_gpu_flags()
    import jax

    from bench.common import paper_model

    try:
        mesh = gpu_mesh(args.target)
    except (RuntimeError, NotImplementedError) as err:  # no CUDA plugin: the one set-up step
        print(f"cannot compile for {args.target}: {err}\ninstall the CUDA extra: pip install -c constraints.txt "
              '-c constraints-cuda.txt -e ".[cuda]"', file=sys.stderr)  # fmt: skip
        return 2
    spec = json.loads(json.dumps(QUICK if args.quick else FULL))
    for part in ("synth", "train"):
        if args.dtypes:
            spec[part]["dtypes"] = args.dtypes.split(",")
        if args.batches:
            spec[part]["batches"] = [int(b) for b in args.batches.split(",")]
    if args.seconds:
        spec["synth"]["seconds"] = [float(s) for s in args.seconds.split(",")]
    if args.remats:
        spec["train"]["remats"] = [r == "yes" for r in args.remats.split(",")]
    cfg = paper_model(**json.loads(args.model or "{}"))
    print(f"jax {jax.__version__}, target {args.target}, XLA_FLAGS {os.environ['XLA_FLAGS']}", flush=True)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    rows = []

    def emit(row):
        row = {"target": args.target, **row}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if out:
            with open(out / "gpu_program.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    if args.only in (None, "synth"):
        s = spec["synth"]
        for dtype in s["dtypes"]:
            for batch in s["batches"]:
                for seconds in s["seconds"]:
                    emit(synth_row(cfg, mesh, dtype, batch, seconds, dump, args.synth_form))
    if args.only in (None, "train"):
        s = spec["train"]
        for dtype in [d for d in s["dtypes"] if d != "float16"]:
            for batch in s["batches"]:
                for remat in s["remats"]:
                    emit(train_row(cfg, mesh, dtype, batch, s["segment"], remat, dump))
    print(table(rows))
    if out:
        (out / "gpu_program.md").write_text(table(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
