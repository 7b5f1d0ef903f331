"""The mixup preview's computation, apart from its widget: images at preview scale, the mixed tiles,
the mosaic. No Qt and no napari here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from ...core.data.preprocess import to_model_channels
from ...core.method.ram import amplitude_mixup
from ...core.data.geometry import resize_image
from ...errors import RamsegInputError

PREVIEW_SIZE = 256  # long side of the preview, in pixels: the scale the model is trained at


@dataclass
class PreviewImage:
    """An image at preview resolution: normalised model channels and its log-amplitude spectrum."""

    name: str
    tensor: torch.Tensor  # (3, h, w) float32 in [-1, 1]
    spectrum: np.ndarray | None = None  # (h, w)


def preview_shape(height: int, width: int, size: int = PREVIEW_SIZE) -> tuple[int, int]:
    scale = min(1.0, size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_preview(image: np.ndarray, shape: tuple[int, int] | None = None, size: int = PREVIEW_SIZE) -> torch.Tensor:
    """A 2D grey/colour image -> (3, h, w) in [-1, 1] at the preview scale (or at ``shape``)."""
    image = np.asarray(image)
    target = shape or preview_shape(image.shape[0], image.shape[1], size)
    # cheap stride-subsampling first so that huge photographs do not stall the UI, then antialiased resize
    step = max(1, min(image.shape[0] // (2 * target[0]), image.shape[1] // (2 * target[1])))
    if step > 1:
        image = image[::step, ::step]
    try:
        channels = to_model_channels(image, 3)
    except ValueError as exc:
        raise RamsegInputError(str(exc)) from None
    return resize_image(torch.from_numpy(channels), target)


@contextlib.contextmanager
def single_threaded():
    """One intra-op thread for the preview's small FFTs: several threads only add start-up and
    contention cost at 256 px (3-7x slower on a busy 2-core machine). Restored afterwards."""
    before = torch.get_num_threads()
    if before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before > 1:
            torch.set_num_threads(before)


def _fingerprint(plane: np.ndarray) -> int:
    """A cheap hash of about 4096 evenly spread pixels: tells a changed image from a cached one."""
    step = max(1, int(np.sqrt(plane.shape[0] * plane.shape[1] / 4096)))
    return hash(np.ascontiguousarray(plane[::step, ::step]).tobytes())


def mix_tiles(original: torch.Tensor, partners: list[torch.Tensor], lam: float, window_ratio: float) -> torch.Tensor:
    """(1 + k, 3, h, w): the original, then its mixup with each partner (resized to its size)."""
    shape = tuple(original.shape[-2:])
    if not partners:
        return original[None]
    stack = torch.stack([resize_image(p, shape) for p in partners])
    mixed = amplitude_mixup(original[None].expand_as(stack), stack, lam, window_ratio)
    return torch.cat([original[None], mixed])


def mosaic(tiles: np.ndarray, gap: int, fill: float = 0.0) -> np.ndarray:
    """Tiles (n, h, w[, c]) side by side with ``gap`` pixels between them."""
    n, h, w = tiles.shape[:3]
    out = np.full((h, n * w + (n - 1) * gap, *tiles.shape[3:]), fill, dtype=tiles.dtype)
    for i in range(n):
        out[:, i * (w + gap): i * (w + gap) + w] = tiles[i]
    return out
