"""Compile time and program size of NanoFlow (C=128, L=8, G=16, D=512) for K = 4, 8, 16, 32 flows.

    python -m bench.compile_vs_k [--ks 4,8,16,32] [--repeats 3]

The flow steps run under nn.scan, so the program should not grow with K. For each K this lowers and
compiles the loss and its gradient (a training step's work) on abstract inputs (batch 1 x 16,000 samples),
and prints the median compile time of `repeats` fresh compilations, the StableHLO size and the compiled
HLO size, with ratios to K=8.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

import nanoflow_jax as nf
from bench.common import paper_model


def measure(k: int, repeats: int, mode: str) -> dict:
    cfg = paper_model(n_flows=k)
    model = nf.build_model(cfg)
    params = jax.eval_shape(lambda: nf.init_params(model, jax.random.PRNGKey(0)))
    audio = jax.ShapeDtypeStruct((1, 16000), jnp.float32)
    mel = jax.ShapeDtypeStruct((1, 80, 63), jnp.float32)

    def loss(p, a, m):
        return nf.nll(*model.apply(p, a, m))

    fn = loss if mode == "loss" else jax.grad(loss)
    lower_s, compile_s = [], []
    for _ in range(repeats):
        jax.clear_caches()
        t0 = time.perf_counter()
        lowered = jax.jit(fn).lower(params, audio, mel)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        lower_s.append(t1 - t0)
        compile_s.append(t2 - t1)
    return dict(
        k=k,
        lower_s=statistics.median(lower_s),
        compile_s=statistics.median(compile_s),
        stablehlo_chars=len(lowered.as_text()),
        hlo_chars=len(compiled.as_text()),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", default="4,8,16,32")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs")
    for mode in ("loss", "grad"):
        rows = [measure(k, args.repeats, mode) for k in ks]
        base = next((r for r in rows if r["k"] == 8), rows[0])
        print(f"\n{mode}: K  lower_s  compile_s  (x K=8)  stablehlo_chars (x K=8)  compiled_hlo_chars (x K=8)")
        for r in rows:
            ratio = r["compile_s"] / base["compile_s"]
            print(
                f"{mode}: {r['k']:2d}  {r['lower_s']:7.2f}  {r['compile_s']:9.2f}  ({ratio:.2f})"
                f"  {r['stablehlo_chars']:15d} ({r['stablehlo_chars'] / base['stablehlo_chars']:.2f})"
                f"  {r['hlo_chars']:18d} ({r['hlo_chars'] / base['hlo_chars']:.2f})"
            )


if __name__ == "__main__":
    main()
