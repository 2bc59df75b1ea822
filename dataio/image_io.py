"""Image conversion and grids. uint8 conversion rounds (the reference truncated)."""

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from utils.atomic import atomic_path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounded to nearest."""
    x = (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)  # +128 then floor == round(x*127.5+127.5)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid_image(images: np.ndarray, cols: int | None = None) -> Image.Image:
    """(N, H, W, C) uint8 -> one PIL image, row-major, `cols` per row (default: square-ish)."""
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        canvas[r * h:(r + 1) * h, k * w:(k + 1) * w] = img
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas)


def save_png_atomic(image: Image.Image, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_figure_atomic(fig, path: str | Path) -> None:
    """Matplotlib figure -> PNG via temp file + rename."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
