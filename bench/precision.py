"""Reduced precision against float32 on the official small NanoFlow (tests/data, trained-like heads):
loss difference and gradient relative L2 error of one batch, per precision policy.

    python -m bench.precision

float16 gradients are computed with a loss scale of 2**12 (as the trainer's dynamic scaling would), then
unscaled.
"""

from __future__ import annotations

import os

import jax
import numpy as np

import nanoflow_jax as nf

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main() -> None:
    data = os.path.join(ROOT, "tests", "data")
    d = dict(np.load(os.path.join(data, "nanoflow_small.npz")))
    state_dict = {k[len("param/") :]: v for k, v in d.items() if k.startswith("param/")}
    model, params = nf.load_official(state_dict, os.path.join(data, "nanoflow_small_config.json"))
    x, mel = d["x"], d["mel"]

    def loss_and_grad(dtype: str, scale: float):
        m = nf.AudioFlow(model.config, dtype=dtype)
        value, grads = jax.jit(jax.value_and_grad(lambda p: nf.nll(*m.apply(p, x, mel)) * scale))(params)
        flat = np.concatenate([np.asarray(g, np.float64).ravel() for g in jax.tree.leaves(grads)]) / scale
        return float(value) / scale, flat

    ref_loss, ref = loss_and_grad("float32", 1.0)
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; official small NanoFlow, batch {x.shape}")
    print(f"{'policy':14s} {'loss':>10s} {'|loss - f32|':>13s} {'grad rel err':>13s} {'cosine':>8s}")
    for dtype, scale in (("float32", 1.0), ("tensorfloat32", 1.0), ("bfloat16", 1.0), ("float16", 2.0**12)):
        loss, g = loss_and_grad(dtype, scale)
        rel = np.linalg.norm(g - ref) / np.linalg.norm(ref)
        cos = float(g @ ref / np.linalg.norm(g) / np.linalg.norm(ref))
        print(f"{dtype:14s} {loss:10.6f} {abs(loss - ref_loss):13.2e} {rel:13.2e} {cos:8.5f}")


if __name__ == "__main__":
    main()
