"""Serialise the synthesis function with `jax.export`, for serving without this package's Python code.

    python -m nanoflow_jax.export --checkpoint runs/wave_g16 --frames 172 --batch 1 --out synth.jaxexport

The artifact holds the weights and the compiled-to-be program `(mel, z) -> audio` with
mel (B, bands, F) float32, z (B, hop * (F - 3)) float32 (the latent noise: temperature * N(0, 1)) and
audio (B, hop * (F - 3)). Load and run it with:

    exported, info = nanoflow_jax.export.load("synth.jaxexport")  # checked, then deserialised
    audio = exported.call(mel, z)

The file is one line `nanoflow-jaxexport 1`, one line of JSON (`info`: the SHA-256 and length of the
program, the model and mel settings, shapes, dtype, platforms, jax version), then the bytes of
`Exported.serialize()`. `load` verifies the length and checksum before `jax.export.deserialize` sees a
byte, so a damaged file is one error, never a crash inside JAX. Without this package: read the two lines,
check `hashlib.sha256` of the rest against `info["sha256"]`, then deserialise the rest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp

from nanoflow_jax.errors import InputError, UsageError
from nanoflow_jax.files import atomic_write, check_input_file, first_line, memory_budget, resolve_path
from nanoflow_jax.models import POLICIES, row_kernel
from nanoflow_jax.synth.fast import min_frames, output_length, synthesis_fn
from nanoflow_jax.synth.vocoder import Vocoder

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
MAGIC = b"nanoflow-jaxexport 1\n"
MAX_INFO_BYTES = 1 << 20
INT32_MAX = 2**31 - 1


def check_platforms(platforms: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Platform names as `jax.export` takes them (lower case, no repeats); an unknown one is a UsageError."""
    if platforms is None:
        return None
    names = tuple(dict.fromkeys(p.strip().lower() for p in platforms))
    bad = [p for p in names if p not in PLATFORMS]
    if bad or not names:
        raise UsageError(f"--platforms {','.join(platforms)!r} is not allowed: a comma-separated list of {PLATFORMS}")
    return names


def export_synthesis(
    vocoder: Vocoder,
    frames: int,
    batch: int = 1,
    dtype: str = "float32",
    platforms: tuple[str, ...] | None = None,
) -> jax.export.Exported:
    """The synthesis of `batch` mels of `frames` frames by `vocoder` as a `jax.export.Exported` (its
    inference-form weights included)."""
    cfg = vocoder.config
    if dtype not in POLICIES:
        raise UsageError(f"dtype must be one of {', '.join(POLICIES)}, got {dtype!r}")
    if frames < min_frames(cfg) or batch < 1:
        raise UsageError(f"need frames >= {min_frames(cfg)} and batch >= 1, got {frames} and {batch}")
    t = output_length(frames, cfg)
    if batch * max(t, cfg.cond_channels * frames) > INT32_MAX:
        raise UsageError(
            f"--frames {frames} with --batch {batch} makes arrays of more than 2**31 - 1 elements "
            f"({batch} x {t} samples): at most {INT32_MAX // batch // cfg.hop_length} frames at this batch"
        )
    platforms = check_platforms(platforms)
    fn = synthesis_fn(cfg, dtype)
    mel = jax.ShapeDtypeStruct((batch, cfg.cond_channels, frames), jnp.float32)
    z = jax.ShapeDtypeStruct((batch, t), jnp.float32)
    params = vocoder.params
    kernel = [jax.export.DisabledSafetyCheck.custom_call(row_kernel.CUSTOM_CALL)]  # the fused row kernel (CUDA)
    return jax.export.export(jax.jit(lambda m, z: fn(params, m, z)), platforms=platforms, disabled_checks=kernel)(
        mel, z
    )


def save(exported: jax.export.Exported, path: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the artifact atomically: the format line, `info` (with the program's SHA-256, length,
    shapes, platforms and jax version added) as one line of JSON, then the serialised program. -> info."""
    payload = bytes(exported.serialize())
    info = dict(
        info or {},
        sha256=hashlib.sha256(payload).hexdigest(),
        bytes=len(payload),
        in_shapes=[list(a.shape) for a in exported.in_avals],
        out_shapes=[list(a.shape) for a in exported.out_avals],
        platforms=list(exported.platforms),
        jax=jax.__version__,
    )
    line = json.dumps(info, default=str).encode() + b"\n"

    def write(f) -> None:
        f.write(MAGIC)
        f.write(line)
        f.write(payload)

    atomic_write(resolve_path(path), write, suffix=".jaxexport")
    return info


def load(path: str) -> tuple[jax.export.Exported, dict[str, Any]]:
    """(Exported, info) of an artifact `save` wrote, its length and SHA-256 verified before
    `jax.export.deserialize` reads it; anything else (another file, damage, truncation, a program this jax
    cannot read) is an InputError naming the file."""
    path = resolve_path(path)
    size = check_input_file(path, "export", max_bytes=memory_budget())
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise InputError(f"export {path} is not a nanoflow-jax export (no '{MAGIC.decode().strip()}' line)")
        line = f.readline(MAX_INFO_BYTES + 1)
        try:
            info = json.loads(line.decode("utf-8"))
            digest, length = info["sha256"], info["bytes"]
            if not (isinstance(digest, str) and isinstance(length, int)):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise InputError(f"export {path}: its info line is damaged") from None
        if size - f.tell() != length:
            raise InputError(f"export {path}: the program should be {length} bytes but {size - f.tell()} follow")
        payload = f.read(length)
    if hashlib.sha256(payload).hexdigest() != digest:
        raise InputError(f"export {path} is damaged: its program does not match its SHA-256")
    try:
        exported = jax.export.deserialize(bytearray(payload))
    except Exception as e:  # flatbuffers / StableHLO report a foreign program in their own types
        raise InputError(
            f"export {path} cannot be read by jax {jax.__version__} (written by jax {info.get('jax')}): {first_line(e)}"
        ) from None
    return exported, info
