"""Sample pictures a person can read: mel spectrograms with axes, titles and a colour bar, and image
sample grids with their temperature; rendered headless with matplotlib (no pyplot state), returned as
RGB arrays for TensorBoard and written as PNG."""

from __future__ import annotations

import io
import os

import numpy as np

from nanoflow_jax.files import atomic_write


def _render(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def mel_figure(panels: dict[str, np.ndarray], hop_length: int, sample_rate: int) -> np.ndarray:
    """{title: (bands, frames) log-mel} -> one RGB image, one panel per entry stacked vertically, time
    in seconds on x, mel band on y (low bands at the bottom), one shared colour scale and bar."""
    from matplotlib.figure import Figure

    mels = [np.asarray(m, np.float32) for m in panels.values()]
    lo, hi = min(float(m.min()) for m in mels), max(float(m.max()) for m in mels)
    fig = Figure(figsize=(8, 2.2 * len(mels) + 0.4), dpi=100, layout="constrained")
    axes = fig.subplots(len(mels), 1, squeeze=False)[:, 0]
    for ax, (title, m) in zip(axes, panels.items(), strict=True):
        seconds = m.shape[1] * hop_length / sample_rate
        im = ax.imshow(
            m, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi, extent=(0, seconds, 0, m.shape[0])
        )
        ax.set_title(title)
        ax.set_ylabel("mel band")
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(im, ax=list(axes), label="log magnitude (nats)")
    return _render(fig)


def image_grid(images: np.ndarray, cols: int = 8) -> np.ndarray:
    """(n, H, W, C) uint8 -> one (rows*H, cols*W, C) image, row-major, empty cells black."""
    n, h, w, c = images.shape
    rows = -(-n // cols)
    pad = np.zeros((rows * cols - n, h, w, c), np.uint8)
    grid = np.concatenate([images, pad]).reshape(rows, cols, h, w, c)
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def grid_figure(images: np.ndarray, title: str, cols: int = 8) -> np.ndarray:
    """(n, H, W, C) uint8 samples -> an RGB picture of their grid under `title`."""
    from matplotlib.figure import Figure

    grid = image_grid(images, cols)
    scale = max(1, 512 // grid.shape[1])  # small grids are drawn larger, without smoothing
    fig = Figure(figsize=(grid.shape[1] * scale / 100 + 0.4, grid.shape[0] * scale / 100 + 0.6), dpi=100)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.86))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return _render(fig)


def save_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write an RGB uint8 array as a PNG, atomically."""
    from PIL import Image

    def write(f):
        buf = io.BytesIO()
        Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG")
        f.write(buf.getvalue())

    atomic_write(path, write, suffix=".png")
