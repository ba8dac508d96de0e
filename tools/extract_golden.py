"""Copy the arrays the tests use from the official golden data (../shared/reference) into tests/data.

    python tools/extract_golden.py [--reference ../shared/reference]

The golden files were made by running the official PyTorch code; see their golden_README.md.
"""

import argparse
import json
import os
import shutil

import numpy as np

MODELS = ("waveflow_small", "nanoflow_naive_small", "nanoflow_decomp_small", "nanoflow_small")
KEEP = (
    "x",
    "mel",
    "z",
    "logdet",
    "loss",
    "z_syn",
    "audio_syn_slow",
    "audio_syn_fast",
    "h_cache",
    "c_up_first512",
    "c_up_len",
)
KEEP_PREFIX = ("param/", "fwd_log_s/", "fwd_t/")


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--reference", default=os.path.join(here, "..", "..", "shared", "reference"))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    manifest = json.load(open(os.path.join(args.reference, "golden_manifest.json")))
    configs = {}
    for name in MODELS:
        d = np.load(os.path.join(args.reference, name + ".npz"))
        keep = {k: d[k] for k in d.files if k in KEEP or k.startswith(KEEP_PREFIX)}
        np.savez_compressed(os.path.join(args.out, name + ".npz"), **keep)
        configs[name] = {"config": manifest[name]["config"], "checks": manifest[name]["checks"]}
    with open(os.path.join(args.out, "golden_configs.json"), "w") as f:
        json.dump(configs, f, indent=1)
    for extra in ("nanoflow_small_config.json", "nanoflow_small_official_ckpt.pt", "mel_pipeline.npz"):
        shutil.copy(os.path.join(args.reference, extra), os.path.join(args.out, extra))


if __name__ == "__main__":
    main()
