"""The disc-centred region of interest: where it lies in a photograph, cropping it, pasting a result back.

A ROI is a square of side ``ratio`` x disc diameter centred on the disc, as the DoFE packaging cut its
ROIs (``bench/common/tasks.py`` measures the ratio on Drishti-GS: about 1.35). Where the square leaves the
photograph it is padded with black, so a crop always has the same scale and the disc in its centre;
pasting back drops the padding, so the round trip returns the photograph's own geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ...config import DiscRoiSampling


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

    @classmethod
    def of_mask(cls, mask: np.ndarray, ratio: float) -> "Roi":
        """The ROI of the disc a mask draws (``mask >= 1``): centred on its centre of mass, with side ``ratio``
        x the larger extent of its bounding box, as the training ROIs and the DoFE packaging are cut."""
        cy, cx = ndimage.center_of_mass(np.asarray(mask) >= 1)
        return cls.around((cy, cx), disc_diameter(mask), ratio)

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


def edge_fade(roi: Roi, shape: tuple[int, int], band: float) -> np.ndarray:
    """(H, W) weights that bring a pasted map down to the 0 it has outside ``roi``: 1 inside, falling
    smoothly (smoothstep) to 0 over the ``band`` pixels inside each edge that lies within the image
    (an edge on the image's border keeps 1), 0 outside. A probability or uncertainty map pasted without
    it shows the ROI as a faint square: the model's low background values inside, exact zeros outside."""
    def axis(start: int, size: int) -> np.ndarray:
        at = np.arange(size) + 0.5
        w = ((at > start) & (at < start + roi.side)).astype(np.float32)
        if start > 0:
            w *= np.clip((at - start) / band, 0, 1)
        if start + roi.side < size:
            w *= np.clip((start + roi.side - at) / band, 0, 1)
        return w * w * (3 - 2 * w)

    return np.outer(axis(roi.top, shape[0]), axis(roi.left, shape[1])).astype(np.float32)


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


def disc_diameter(mask: np.ndarray) -> float:
    """The larger extent, in pixels, of the bounding box of the disc a mask draws (``mask >= 1``)."""
    disc = np.asarray(mask) >= 1
    rows, cols = np.flatnonzero(disc.any(axis=1)), np.flatnonzero(disc.any(axis=0))
    if rows.size == 0:
        raise ValueError("the mask draws no disc")
    return float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def training_rois(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, ratio: float,
                  sampling: DiscRoiSampling = DiscRoiSampling(), jitter: int | None = None,
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """A labelled fundus image as the disc model's training ROIs, each resized to ``sampling.size``: the
    ground-truth ROI (``ratio`` x disc diameter), then ``jitter`` (default ``sampling.jitter``) copies
    whose centre moves by up to ``sampling.shift`` disc diameters and whose side ratio is drawn from
    ``sampling.ratio_range``, so the model is used to the small errors of its own locator."""
    d = disc_diameter(mask)
    cy, cx = ndimage.center_of_mass(np.asarray(mask) >= 1)
    out = []
    for j in range((sampling.jitter if jitter is None else jitter) + 1):
        if j == 0:
            roi = Roi.around((cy, cx), d, ratio)
        else:
            dy, dx = rng.uniform(-sampling.shift, sampling.shift, 2) * d
            roi = Roi.around((cy + dy, cx + dx), d, rng.uniform(*sampling.ratio_range))
        out.append((resize_square(crop(image, roi), sampling.size),
                    resize_square(crop(mask, roi), sampling.size, labels=True)))
    return out


def negative_rois(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, count: int,
                  sampling: DiscRoiSampling = DiscRoiSampling()) -> list[tuple[np.ndarray, np.ndarray]]:
    """ROIs of a whole photograph at the disc's scale but away from it (at least
    ``sampling.negative_distance`` disc diameters), inside the field of view: empty masks, so that the
    model learns that a ROI without a disc has none, which is what lets it veto a wrong stage-one
    candidate (and refuse a photograph without a disc). A draw that catches a corner of the disc is
    dropped, so there may be fewer than ``count``."""
    cy, cx = ndimage.center_of_mass(np.asarray(mask) >= 1)
    d = disc_diameter(mask)
    luma = image[..., :3].mean(axis=-1)
    fov = luma > 0.4 * np.median(luma)
    yy, xx = np.mgrid[:mask.shape[0], :mask.shape[1]]
    far = np.hypot(yy - cy, xx - cx) >= sampling.negative_distance * d
    ys, xs = np.nonzero(fov & far)
    out = []
    for _ in range(count if ys.size else 0):
        i = int(rng.integers(ys.size))
        roi = Roi.around((float(ys[i]), float(xs[i])), d, rng.uniform(*sampling.ratio_range))
        msk = crop(mask, roi)
        if msk.any():
            continue
        out.append((resize_square(crop(image, roi), sampling.size), resize_square(msk, sampling.size, labels=True)))
    return out
