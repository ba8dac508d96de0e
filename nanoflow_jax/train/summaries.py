"""TensorBoard (tensorboardX, no TensorFlow), mel images and the console progress line."""

from __future__ import annotations

import os
import time

import numpy as np

# anchor colours of a dark-to-bright map for spectrogram images
_CMAP = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], np.float64)


def mel_image(*mels: np.ndarray, zoom: int = 2) -> np.ndarray:
    """(bands, frames) log-mels -> one HWC uint8 image, stacked vertically, low bands at the bottom."""
    rows = []
    for m in mels:
        m = np.asarray(m, np.float64)
        v = (m - m.min()) / max(m.max() - m.min(), 1e-9) * (len(_CMAP) - 1)
        lo = np.floor(v).astype(int).clip(0, len(_CMAP) - 2)
        rgb = _CMAP[lo] + (v - lo)[..., None] * (_CMAP[lo + 1] - _CMAP[lo])
        rows.append(rgb[::-1])
    width = max(r.shape[1] for r in rows)
    img = np.concatenate([np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows])
    return np.repeat(np.repeat(img, zoom, 0), zoom, 1).astype(np.uint8)


def save_png(path: str, img: np.ndarray) -> None:
    from PIL import Image

    tmp = path + ".tmp.png"
    Image.fromarray(img).save(tmp)
    os.replace(tmp, path)


class Writer:
    """TensorBoard event files under <workdir>/tb; a no-op on processes other than 0."""

    def __init__(self, logdir: str, active: bool):
        self.tb = None
        if active:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(logdir)

    def scalars(self, step: int, values: dict) -> None:
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(k, float(v), step)

    def audio(self, step: int, tag: str, audio: np.ndarray, sample_rate: int) -> None:
        if self.tb:
            self.tb.add_audio(tag, np.clip(np.asarray(audio, np.float32), -1, 1), step, sample_rate=sample_rate)

    def image(self, step: int, tag: str, img: np.ndarray) -> None:
        if self.tb:
            self.tb.add_image(tag, img, step, dataformats="HWC")

    def flush(self) -> None:
        if self.tb:
            self.tb.flush()

    def close(self) -> None:
        if self.tb:
            self.tb.close()


class Progress:
    """`step 1200/5000 (24%) | loss 1.234 | 3.1 steps/s | ETA 20m25s` lines."""

    def __init__(self, start_step: int, total: int, log=print):
        self.start_step, self.total, self.log = start_step, total, log
        self.t0 = time.perf_counter()

    def rate(self, step: int) -> float:
        return (step - self.start_step) / max(time.perf_counter() - self.t0, 1e-9)

    def line(self, step: int, values: dict) -> None:
        rate = self.rate(step)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        eta_s = "?" if not np.isfinite(eta) else f"{int(eta // 60)}m{int(eta % 60):02d}s"
        vals = " | ".join(f"{k} {v:.4g}" for k, v in values.items())
        self.log(
            f"step {step}/{self.total} ({100 * step / self.total:.0f}%) | {vals} | {rate:.2f} steps/s | ETA {eta_s}"
        )
