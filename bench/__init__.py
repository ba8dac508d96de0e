"""Benchmarks (not tests): run each from the repository root as `python -m bench.NAME`; results, dated,
in bench/RESULTS.md."""
