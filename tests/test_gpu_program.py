"""The deviceless GPU audit (bench/gpu_program.py): its reading of XLA's thunk sequence and HLO on fixed
texts in XLA's format (always), and the whole command on a tiny model when the CUDA plugin is installed."""

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from bench import gpu_program as gp

ROOT = Path(__file__).resolve().parents[1]

# the shape XLA 0.10 prints: a while's "condition:" at column 0, "body:" two spaces in, a dynamic-slice
# fusion with its embedded copy, a command buffer holding the rest of the body
THUNKS = """\
001: kCustomKernel  [source       | next=002 (1)] loop_pad_fusion grid: [1, 1, 1]
002: kConvolution   [prev=001 (1) | next=003 (1)] kConvolution
003: kWhile         [prev=002 (1) | next=012 (1)]
condition:
    004: kCustomKernel [source | sink] loop_compare_fusion grid: [1, 1, 1]
  body:
    005: kCustomKernel       [source       | next=006 (1)] gemm_fusion_dot grid: [2, 1, 1]
    006: kDynamicSliceFusion [prev=005 (1) | next=000 (1)] params=1, results=1
        007: kCopy [source | sink] kCopy
    000: kCommandBuffer      [prev=006 (1) | sink        ]
        008: kCustomKernel [source       | next=009 (1)] loop_add_fusion grid: [1, 1, 1]
        009: kWhile        [prev=008 (1) | sink        ]
condition:
            010: kCustomKernel [source | sink] loop_compare_fusion_1 grid: [1, 1, 1]
          body:
            011: kCustomKernel [source | sink] gemm_fusion_dot_1 grid: [1, 1, 1]
012: kCopy          [prev=003 (1) | sink        ] kCopy
"""
METADATA = """\
thunk_metadata {
  thunk_info {
    profile_annotation: "w.7"
    thunk_id: 3
  }
  thunk_kind: "kWhile"
}
thunk_metadata {
  thunk_info {
    profile_annotation: "while.9"
    thunk_id: 9
  }
  thunk_kind: "kWhile"
}
"""
HLO_WHILE = """\
  %w.7 = (s32[], /*index=1*/f32[4]) while(%t1), condition=%c1, body=%b1, backend_config={"known_trip_count":{"n":"3"}}
  %while.9 = (s32[], f32[4]{0}) while(%t2), condition=%c2, body=%b2, backend_config={"known_trip_count":{"n":"5"}}
"""


def test_thunk_sequence_is_counted_with_trip_counts():
    thunks = gp.parse_thunks(THUNKS)
    assert [t.kind for t in thunks] == ["kCustomKernel", "kConvolution", "kWhile", "kCopy"]
    loop = thunks[2]
    assert [t.ident for t in loop.condition] == [4]
    assert [t.kind for t in loop.body] == ["kCustomKernel", "kDynamicSliceFusion", "kCommandBuffer"]
    inner = loop.body[2].children[1]
    assert (inner.kind, [t.ident for t in inner.condition], [t.ident for t in inner.body]) == ("kWhile", [10], [11])
    trips = gp.while_trip_counts(METADATA, HLO_WHILE)
    assert trips == {3: 3, 9: 5}
    # inner loop: 6 conditions + 5 bodies = 11; outer body: 2 + (1 + 11) = 14; outer: 4 conditions + 3 bodies
    launches, graphed = gp.count_launches(thunks, trips)
    assert launches == 1 + 1 + 4 + 3 * 14 + 1
    assert graphed == 3 * 12
    # the host: 3 outside the loop, per trip the condition, two launches and one graph; the last condition
    assert gp.host_launches(thunks, trips) == 3 + 3 * (1 + 3) + 1


def test_hlo_count_follows_loops_and_skips_non_kernels():
    hlo = """\
%c.1 (p: (s32[], f32[4])) -> pred[] {
  %p = (s32[], f32[4]{0}) parameter(0)
  %gte = s32[] get-tuple-element(%p), index=0
  ROOT %compare_fusion = pred[] fusion(%gte), kind=kLoop, calls=%fc
}

%b.1 (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]{0}) parameter(0)
  %a = f32[4]{0} fusion(%p), kind=kLoop, calls=%f1
  %b = f32[4]{0} custom-call(%a), custom_call_target="__cublas$gemm"
  %bc = f32[2,2]{1,0} bitcast(%b)
  ROOT %t = (s32[], f32[4]{0}) tuple(%p, %b)
}

ENTRY %main (x: f32[4]) -> f32[4] {
  %x = f32[4]{0} parameter(0)
  %c = f32[4]{0} copy(%x)
  %w = (s32[], /*index=1*/f32[4]) while(%t0), condition=%c.1, body=%b.1, backend_config={"known_trip_count":{"n":"3"}}
  ROOT %r = f32[4]{0} get-tuple-element(%w), index=1
}
"""
    assert gp.hlo_launches(hlo) == 1 + 4 * 1 + 3 * 2


def cuda_plugin() -> bool:
    return find_spec("jax_plugins") is not None and find_spec("jax_plugins.xla_cuda12") is not None


@pytest.mark.skipif(not cuda_plugin(), reason="the CUDA extra is not installed")
def test_audit_command_on_a_tiny_model(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    tiny = json.dumps(dict(n_flows=2, n_layers=3, channels=16, n_groups=8, embed_dim=8))
    cmd = [sys.executable, "-m", "bench.gpu_program", "--target", "h100", "--quick", "--model", tiny]
    cmd += ["--seconds", "0.1", "--batches", "1", "--out", str(tmp_path)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    xla = cmd + ["--only", "synth", "--synth-form", "xla"]
    subprocess.run(xla, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    rows = [json.loads(line) for line in (tmp_path / "gpu_program.jsonl").read_text().splitlines()]
    assert [r["program"] for r in rows] == ["synth", "train", "synth (xla)"]
    # the fused row kernel: fewer launches per layer-row than the XLA row form; one graph per call
    assert rows[0]["per_layer_row"] < rows[2]["per_layer_row"]
    assert rows[0]["host_launches"] == 1 and rows[0]["in_graphs"] == 1.0
    for r in rows:
        assert r["launches"] == r["launches_hlo"] > 0
        assert 0 <= r["in_graphs"] <= 1 and 0 < r["host_launches"] <= r["launches"]
        assert r["temp_gb"] > 0 and r["estimate_ms"] > 0
    assert rows[0]["per_layer_row"] == rows[0]["launches"] / (2 * 8 * 3)
