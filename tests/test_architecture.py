"""The layering written in pyproject.toml holds (import-linter), modules stay small, nothing imports the
package root from inside it, the package imports light, and ruff is clean."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "nanoflow_jax")
BIN = os.path.dirname(sys.executable)
# what `import nanoflow_jax` must not load: they come with the trainer, a command line or the converter
HEAVY = ("orbax", "tensorstore", "ml_collections", "tensorboardX", "soundfile", "scipy", "PIL", "matplotlib", "soxr")


def modules():
    for folder, _, names in os.walk(PACKAGE):
        for n in names:
            if n.endswith(".py"):
                yield os.path.join(folder, n)


def test_import_contracts_hold():
    r = subprocess.run([os.path.join(BIN, "lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_no_module_over_400_lines():
    sizes = {os.path.relpath(p, ROOT): sum(1 for _ in open(p)) for p in modules()}
    assert max(sizes.values()) <= 400, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_nothing_inside_imports_the_package_root():
    offenders = []
    for path in modules():
        if path.endswith(os.path.join("nanoflow_jax", "__init__.py")):
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module == "nanoflow_jax":
                names = ["nanoflow_jax"]
            if "nanoflow_jax" in names:
                offenders.append(os.path.relpath(path, ROOT))
    assert not offenders, offenders


def test_import_is_light():
    code = "import sys, nanoflow_jax; print(sorted({m.split('.')[0] for m in sys.modules}))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    loaded = set(eval(r.stdout))
    assert "jax" in loaded and "flax" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_ruff_is_clean():
    r = subprocess.run([os.path.join(BIN, "ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
