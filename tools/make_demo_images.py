"""Make the bundled demo image set (nanoflow_jax/data/demo_images/images.npz): 32x32 RGB crops of the two
photographs the Rust toolchain's documentation ships (embedded-book assets f3.jpg and verify.jpeg,
MIT OR Apache-2.0), at two scales, shuffled with a fixed seed; the first 128 crops are the test split.

    python tools/make_demo_images.py [--rust-docs RUST_TOOLCHAIN/share/doc/rust/html]
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "nanoflow_jax", "data", "demo_images", "images.npz")
PHOTOS = ("embedded-book/assets/f3.jpg", "embedded-book/assets/verify.jpeg")


def crops(img: Image.Image, stride: int) -> list[np.ndarray]:
    a = np.asarray(img.convert("RGB"))
    return [
        a[i : i + 32, j : j + 32] for i in range(0, a.shape[0] - 31, stride) for j in range(0, a.shape[1] - 31, stride)
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    default = sorted(glob.glob(os.path.expanduser("~/.rustup/toolchains/stable-*/share/doc/rust/html")))
    ap.add_argument("--rust-docs", default=default[0] if default else None)
    ap.add_argument("--n", type=int, default=640)
    args = ap.parse_args()
    out = []
    for rel in PHOTOS:
        img = Image.open(os.path.join(args.rust_docs, rel))
        for scale, stride in ((0.5, 12), (0.25, 6)):
            small = img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.LANCZOS)
            out += crops(small, stride)
    images = np.stack(out)
    images = images[np.random.default_rng(0).permutation(len(images))[: args.n]]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, images=images)
    print(f"{len(images)} crops from {len(out)} -> {OUT} ({os.path.getsize(OUT) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
