"""TensorBoard (tensorboardX, no TensorFlow) and the console progress line."""

from __future__ import annotations

import time

import numpy as np


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
