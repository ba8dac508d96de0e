"""What the persistent compilation cache saves: the same short train.py run twice, the first with an empty
cache, the second reading it (each in a fresh workdir, so nothing else is reused).

    python -m bench.compile_cache [--config configs/demo.py] [--steps 2]

Prints the wall time of both runs and the number of programs the cache holds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/demo.py")
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        walls = []
        for run in ("cold", "warm"):
            cmd = [
                sys.executable,
                "train.py",
                f"--config={args.config}",
                f"--workdir={os.path.join(tmp, run)}",
                f"--compilation_cache={cache}",
                f"--config.train.num_steps={args.steps}",
                "--config.eval.synthesize=False",
            ]
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, env=dict(os.environ, XLA_FLAGS=""))
            walls.append(time.perf_counter() - t0)
            print(f"{run}: {walls[-1]:.1f} s", flush=True)
        n = len(os.listdir(cache))
        print(f"cache: {n} entries; the warm run took {walls[1] / walls[0]:.2f}x the cold one")


if __name__ == "__main__":
    main()
