"""Image data for the Glow experiments: CIFAR-10 (the python-version archive or its extracted folder; or
TFDS when installed), or the bundled demo crops. Images are uint8 (N, H, W, C) in memory; the loader
(the image task's `stream.PositionStream`) hands out dequantised float batches (uniform noise, seeded by
stream position, so a resumed run sees the same data)."""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import tarfile
from typing import Any

import numpy as np

from nanoflow_jax.data.stream import PositionStream
from nanoflow_jax.errors import DataError
from nanoflow_jax.files import resolve_path
from nanoflow_jax.flows.image import bin_floor
from nanoflow_jax.schema import Choice, Section, Text, field

DEMO_IMAGES = os.path.join(os.path.dirname(__file__), "demo_images", "images.npz")
DEMO_TEST = 128
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


@dataclasses.dataclass(frozen=True)
class ImageDataConfig(Section):
    """The `data` section of an image run."""

    SECTION = "data"

    source: str = field(
        "cifar10", Choice(("cifar10", "tfds", "demo")), "cifar10 (python-version archive or folder), tfds, or demo"
    )
    path: str = field("", Text(), "cifar-10-python.tar.gz or its extracted folder (cifar10); TFDS data_dir")


def _cifar_arrays(batches: dict[str, dict]) -> tuple[np.ndarray, np.ndarray]:
    def stack(names):
        rows = np.concatenate([np.asarray(batches[n][b"data"], np.uint8) for n in names])
        return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored as CHW rows

    return stack(CIFAR_TRAIN), stack(["test_batch"])


@functools.cache
def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    import codecs

    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how Python 2 pickles wrote bytes
    }


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's python batches are pickles (dicts of NumPy arrays, lists and bytes): they are read with
    the globals a NumPy array needs and no others, so a crafted batch cannot run code (SECURITY.md)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _numpy_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing the global {module}.{name}: a CIFAR-10 batch holds only arrays")
        return allowed[(module, name)]


def _load_batch(f: Any) -> dict:
    return _CifarUnpickler(f, encoding="bytes").load()


def load_cifar10(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(train (50000, 32, 32, 3), test (10000, 32, 32, 3)) uint8 from `cifar-10-python.tar.gz` or the
    folder it extracts to (`cifar-10-batches-py`, or its parent)."""
    wanted = CIFAR_TRAIN + ["test_batch"]
    batches: dict[str, dict] = {}
    if os.path.isfile(path):
        try:
            with tarfile.open(path) as tar:
                for m in tar.getmembers():
                    name = os.path.basename(m.name)
                    if name in wanted:
                        batches[name] = _load_batch(tar.extractfile(m))
        except (tarfile.TarError, OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
            raise DataError(f"cannot read CIFAR-10 archive {path}: {e}") from None
    elif os.path.isdir(path):
        folder = path if os.path.exists(os.path.join(path, "test_batch")) else os.path.join(path, "cifar-10-batches-py")
        for name in wanted:
            f = os.path.join(folder, name)
            if os.path.exists(f):
                try:
                    with open(f, "rb") as fh:
                        batches[name] = _load_batch(fh)
                except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
                    raise DataError(f"cannot read CIFAR-10 batch {f}: {e}") from None
    else:
        raise DataError(f"CIFAR-10 path {path} does not exist (expected cifar-10-python.tar.gz or its folder)")
    missing = [n for n in wanted if n not in batches]
    if missing:
        raise DataError(f"{path} is not the CIFAR-10 python version: missing {', '.join(missing)}")
    return _cifar_arrays(batches)


def _load_tfds(path: str | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError("data.source='tfds' needs tensorflow and tensorflow-datasets installed") from None
    out = []
    for split in ("train", "test"):
        ds = tfds.as_numpy(tfds.load("cifar10", split=split, data_dir=path or None, batch_size=-1))
        out.append(np.asarray(ds["image"], np.uint8))
    return out[0], out[1]


def load_image_splits(data: Any, log=print) -> tuple[np.ndarray, np.ndarray]:
    """`data.source`: "demo" (bundled crops), "cifar10" (data.path: archive or folder) or "tfds"."""
    source = data.source
    if source == "demo":
        images = np.load(DEMO_IMAGES)["images"]
        train, test = images[DEMO_TEST:], images[:DEMO_TEST]
    elif source == "cifar10":
        if not data.path:
            raise DataError("data.path must point at cifar-10-python.tar.gz or its extracted folder")
        train, test = load_cifar10(resolve_path(data.path))
    elif source == "tfds":
        train, test = _load_tfds(data.path)
    else:
        raise DataError(f"unknown data.source {source!r} for images; expected demo, cifar10 or tfds")
    log(f"data: {len(train)} training and {len(test)} test images of shape {train.shape[1:]} ({source})")
    return train, test


def dequantize_np(images: np.ndarray, rng: np.random.Generator, n_bits: int = 8) -> np.ndarray:
    """uint8 images -> float32 in [-0.5, 0.5) with uniform dequantisation noise (flows.image.dequantize with
    a NumPy generator, for the host-side loader)."""
    x = bin_floor(images, n_bits)
    return (x + rng.uniform(0.0, 1.0 / 2**n_bits, x.shape)).astype(np.float32)


class ImageLoader(PositionStream):
    """Dequantised batches (batch, H, W, C) of this host's images (`host_shard`), with random horizontal
    flips; the flips and the noise are seeded by (seed, host, position)."""

    def __init__(
        self,
        images: np.ndarray,
        batch_size: int,
        seed: int,
        n_bits: int = 8,
        process_index: int = 0,
        position: int = 0,
        flip: bool = True,
    ):
        super().__init__(len(images), batch_size, seed, process_index, position)
        self.images, self.n_bits, self.flip = images, n_bits, flip

    def batch_at(self, position: int) -> np.ndarray:
        batch = self.images[np.asarray([idx for idx, _, _ in self.items(position)])]
        rng = np.random.default_rng((self.seed, self.process_index, position))
        if self.flip:
            flips = rng.random(len(batch)) < 0.5
            batch = np.where(flips[:, None, None, None], batch[:, :, ::-1], batch)
        return dequantize_np(batch, rng, self.n_bits)
