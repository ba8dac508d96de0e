"""Write constraints-cuda.txt: the packages `.[cuda]` adds to the CPU lock, pinned to what pip resolves.

    pip install --dry-run --ignore-installed --report cuda.json -c constraints.txt ".[cuda]"
    python tools/lock_cuda.py cuda.json            # -> constraints-cuda.txt

The CUDA wheels (the JAX plugin and NVIDIA's libraries, several GB) cannot be installed on the CPU
machines CI runs on, so their lock is resolved, not installed: pip's report lists every package it would
install; those already pinned in constraints.txt are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="pip's --report JSON")
    ap.add_argument("--cpu-lock", default=os.path.join(ROOT, "constraints.txt"))
    ap.add_argument("--out", default=os.path.join(ROOT, "constraints-cuda.txt"))
    args = ap.parse_args()
    with open(args.cpu_lock) as f:
        cpu = {canonical(line.split("==")[0]) for line in f if "==" in line}
    with open(args.report) as f:
        report = json.load(f)
    pins = sorted(
        (item["metadata"]["name"], item["metadata"]["version"])
        for item in report["install"]
        if canonical(item["metadata"]["name"]) not in cpu | {"nanoflow-jax"}
    )
    with open(args.out, "w") as f:
        f.write("# Extra pins of the CUDA build, resolved by `pip install --dry-run --report` (tools/lock_cuda.py):\n")
        f.write("# pip install -c constraints.txt -c constraints-cuda.txt -e '.[cuda]'\n")
        f.writelines(f"{name}=={version}\n" for name, version in pins)
    print(f"wrote {len(pins)} pins to {args.out}")


if __name__ == "__main__":
    main()
