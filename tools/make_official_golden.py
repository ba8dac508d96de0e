"""Make tests/data/nanoflow_short_field.npz: golden arrays from the official PyTorch NanoFlow for a model
whose estimator sees fewer rows than G (n_height 16, n_layer 5: 11 rows) and whose flow embedding table is
weight-normed (use_weightnorm_embed "True"), two settings the official code accepts.

    NANOFLOW_OFFICIAL_SRC=~/official-nanoflow ~/official-venv/bin/python tools/make_official_golden.py

Needs a copy of github.com/L0SG/NanoFlow (commit da88538) and torch (CPU); see ../shared/official-bench.
The official model is built by its own `utils.build_model` from the JSON section below and run unmodified;
its only GPU call (`.cuda()` when caching the embedding projections) is made a no-op. The projection heads
are randomised (they start near zero) so that every flow does real work.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

SRC = os.path.expanduser(os.environ.get("NANOFLOW_OFFICIAL_SRC", "~/official-nanoflow"))
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data")
CONFIG = {
    "model_name": "nanoflow_short_field",
    "cin_channels": 80,
    "res_channels": 32,
    "n_height": 16,
    "n_layer": 5,
    "n_flow": 4,
    "n_layer_per_cycle": 1,
    "coupling_type": "nanoflow",
    "size_flow_embed": 16,
    "use_weightnorm_embed": "True",
}


def main() -> None:
    sys.path.insert(0, SRC)
    torch.Tensor.cuda = lambda self, *a, **k: self  # CPU only
    from utils import build_model  # the official builder

    torch.manual_seed(1234)
    model = build_model(dict(CONFIG))
    gen = torch.Generator().manual_seed(1235)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj_log_s_t" in name:
                std = 0.1 if name.endswith("conv.weight") else 0.05
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif name.endswith("multgate"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    rng = np.random.default_rng(0)
    t = 16 * 1024
    x = torch.from_numpy((0.3 * rng.standard_normal((2, t))).astype(np.float32)).clamp(-1, 1)
    mel = torch.from_numpy((rng.standard_normal((2, 80, t // 256 + 3)) - 5.0).astype(np.float32))
    model.eval()
    with torch.no_grad():
        z, logdet = model(x, mel)
        loss = (0.5 * (np.log(2 * np.pi) + z**2)).sum() / z.numel() - logdet / z.numel()
        model.h_cache = model.cache_flow_embed()
        z_syn = torch.from_numpy(0.6 * rng.standard_normal(z.shape).astype(np.float32))  # temperature 0.6
        audio = model.reverse(mel, debug_z=z_syn)
    arrays = {f"param/{k}": v.numpy() for k, v in model.state_dict().items() if k != "h_cache"}
    arrays.update(
        x=x.numpy(), mel=mel.numpy(), z=z.numpy(), loss=np.float32(loss), z_syn=z_syn.numpy(), audio_syn=audio.numpy()
    )
    np.savez_compressed(os.path.join(OUT, "nanoflow_short_field.npz"), **arrays)
    with open(os.path.join(OUT, "nanoflow_short_field.json"), "w") as f:
        json.dump({"waveflow_config": CONFIG}, f, indent=1)
    print(f"loss {float(loss):.6f}, z std {float(z.std()):.4f}, audio std {float(audio.std()):.4f}")


if __name__ == "__main__":
    main()
