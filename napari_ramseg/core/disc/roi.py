"""The disc-centred region of interest: where it lies in a photograph, cropping it, pasting a result back.

A ROI is a square of side ``ratio`` x disc diameter centred on the disc, as the DoFE packaging cut its
ROIs (``bench/tasks.py`` measures the ratio on Drishti-GS: about 1.35). Where the square leaves the
photograph it is padded with black, so a crop always has the same scale and the disc in its centre;
pasting back drops the padding, so the round trip returns the photograph's own geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Roi:
    """A square ``side`` x ``side`` with its top-left corner at (``top``, ``left``) in image pixels
    (it may start before 0 or end past the image: that part is padding)."""

    top: int
    left: int
    side: int

    @classmethod
    def around(cls, center: tuple[float, float], diameter: float, ratio: float) -> "Roi":
        """The ROI of a disc of ``diameter`` pixels centred on ``center`` (y, x)."""
        side = max(8, int(round(ratio * diameter)))
        return cls(int(round(center[0] - side / 2)), int(round(center[1] - side / 2)), side)

    @property
    def center(self) -> tuple[float, float]:
        return self.top + self.side / 2, self.left + self.side / 2

    def inside(self, shape: tuple[int, int]) -> tuple[slice, slice, slice, slice]:
        """(image rows, image cols, crop rows, crop cols): the part of the ROI that lies in the image."""
        h, w = shape[:2]
        t0, l0 = max(self.top, 0), max(self.left, 0)
        t1, l1 = min(self.top + self.side, h), min(self.left + self.side, w)
        if t1 <= t0 or l1 <= l0:
            raise ValueError(f"ROI {self} lies outside the image {h}x{w}")
        return (slice(t0, t1), slice(l0, l1), slice(t0 - self.top, t1 - self.top), slice(l0 - self.left, l1 - self.left))

    def to_dict(self) -> dict[str, int]:
        return {"top": self.top, "left": self.left, "side": self.side}


def crop(image: np.ndarray, roi: Roi, fill: float = 0) -> np.ndarray:
    """The ROI of an (H, W) or (H, W, C) array at the image's own resolution, padded with ``fill``."""
    rows, cols, crows, ccols = roi.inside(image.shape)
    out = np.full((roi.side, roi.side, *image.shape[2:]), fill, dtype=image.dtype)
    out[crows, ccols] = image[rows, cols]
    return out


def paste(labels: np.ndarray, roi: Roi, shape: tuple[int, int]) -> np.ndarray:
    """A ROI's class-index labels (or a float map: probabilities) placed into a zero image of ``shape``;
    the padding is dropped. Any square size is brought back to ``roi.side`` first (nearest neighbour
    for integer labels, bilinear for float maps)."""
    labels = np.asarray(labels)
    if labels.shape != (roi.side, roi.side):
        ints = np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool
        t = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))[None, None]
        mode = {"mode": "nearest-exact"} if ints else {"mode": "bilinear", "align_corners": False}
        labels = F.interpolate(t, size=(roi.side, roi.side), **mode)[0, 0].numpy().astype(labels.dtype)
    out = np.zeros(tuple(shape[:2]), dtype=labels.dtype)
    rows, cols, crows, ccols = roi.inside(shape)
    out[rows, cols] = labels[crows, ccols]
    return out


def resize_square(array: np.ndarray, size: int, labels: bool = False) -> np.ndarray:
    """A square crop to ``size`` x ``size``: antialiased bilinear for images, nearest for labels."""
    if array.shape[0] == size and array.shape[1] == size:
        return array
    t = torch.from_numpy(np.ascontiguousarray(array)).float()
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    if labels:
        out = F.interpolate(t, size=(size, size), mode="nearest-exact")
    else:
        out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    out = out[0, 0] if array.ndim == 2 else out[0].permute(1, 2, 0)
    return out.round().clamp(0, 255).to(torch.uint8).numpy() if array.dtype == np.uint8 else out.numpy()
