"""Stage one: where is the optic disc, and is this a whole photograph or a disc-centred crop?

A classical locator, chosen over a learned one because it needs no training photographs: the only whole
photographs with disc annotations here (DRIONS-DB) are also a benchmark target, and a locator trained on
them would have seen the domain it is scored on. The optic disc is the brightest disc-sized blob of a
fundus photograph (the standard cue since Sinthanayothin et al., 1999). At a coarse scale
(``DiscConfig.coarse_long_side``) we take the luminance, subtract its local background (a band-pass:
Gaussian at a sixth of the expected disc diameter minus one at 1.5 diameters), keep the field of view
minus a margin, and return the strongest few peaks at least a disc diameter apart. The expected
diameter comes from the field of view's width (``DiscConfig.disc_fov_ratio``). Bright artefacts (a
lamp reflex, exudates) can win that contest; the caller checks every candidate with the segmentation
model (``core/tasks/disc/predict.py``), which is what makes the two stages reliable together.

A photograph has a dark border around its circular field of view; a crop around the disc (Drishti-GS,
the DoFE ROIs) is filled to its corners. That is the test: most corners dark -> photograph. Where the
test errs (a dim scanned slide), the caller's check of the crop's predicted disc size catches it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ...config import DiscConfig
from ...inference.postprocess import keep_largest_component


@dataclass(frozen=True)
class Candidate:
    """A possible disc: centre (y, x) and expected diameter in the input image's pixels, and its score."""

    y: float
    x: float
    diameter: float
    score: float  # contrast: robust standard deviations above the band-passed field of view's median


@dataclass(frozen=True)
class Located:
    """What stage one saw: ``photograph`` (else a disc-centred crop) and the disc candidates, best first."""

    photograph: bool
    candidates: tuple[Candidate, ...]
    fov_width: float  # pixels of the input image (the crop's width for a crop)


def coarse_luminance(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """Luminance in [0, 1] at ``long_side`` pixels on the longer side, and the scale factor applied."""
    rgb = np.asarray(image, dtype=np.float32)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    top = float(np.percentile(rgb, 99.9)) or 1.0
    luma = rgb[..., :3].mean(axis=-1) if rgb.shape[-1] < 3 else rgb[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    scale = min(1.0, long_side / max(luma.shape))
    if scale < 1.0:
        # area-average before sampling (no aliasing of vessels and noise into false peaks)
        luma = ndimage.zoom(ndimage.uniform_filter(luma, size=max(1, int(round(1 / scale)))), scale, order=1)
    return np.clip(luma / top, 0.0, 1.0), scale


def field_of_view(luma: np.ndarray, cfg: DiscConfig) -> np.ndarray:
    """The camera's field of view: brighter than ``fov_threshold`` of the median (scanned slides have a
    noisy, not black, border), opened, largest component, holes filled."""
    smooth = ndimage.gaussian_filter(luma, 1.5)
    mask = ndimage.binary_opening(smooth > cfg.fov_threshold * float(np.median(smooth)), iterations=2)
    if not mask.any():
        return np.ones(luma.shape, bool)
    return ndimage.binary_fill_holes(keep_largest_component(mask, connectivity=1))


def is_photograph(luma: np.ndarray, cfg: DiscConfig) -> bool:
    """At least ``dark_corners`` of the four corner patches are darker than ``corner_dark`` of the median."""
    smooth = ndimage.gaussian_filter(luma, 1.5)
    h, w = smooth.shape
    k = max(2, int(round(cfg.corner_fraction * min(h, w))))
    level = cfg.corner_dark * float(np.median(smooth))
    patches = (smooth[:k, :k], smooth[:k, -k:], smooth[-k:, :k], smooth[-k:, -k:])
    return sum(float(np.median(p)) < level for p in patches) >= cfg.dark_corners


def locate(image: np.ndarray, cfg: DiscConfig | None = None) -> Located:
    """Stage one on an (H, W[, C]) image: photograph or crop, and up to ``cfg.candidates`` disc candidates."""
    from skimage.feature import peak_local_max

    cfg = cfg or DiscConfig()
    luma, scale = coarse_luminance(image, cfg.coarse_long_side)
    fov = field_of_view(luma, cfg)
    photograph = is_photograph(luma, cfg)
    if not photograph:  # a crop: the disc fills about 1/ratio of its shorter side
        diameter = min(luma.shape) / cfg.roi_ratio
        width = float(luma.shape[1])
        area = np.ones(luma.shape, bool)
    else:
        cols = np.flatnonzero(fov.any(axis=0))
        width = float(cols[-1] - cols[0] + 1)
        diameter = cfg.disc_fov_ratio * width
        # a disc centre lies at least a third of a diameter inside the field of view
        area = ndimage.binary_erosion(fov, iterations=max(1, int(diameter / 3)))
        if not area.any():
            area = fov
    background = ndimage.gaussian_filter(luma, 1.5 * diameter, mode="nearest")
    blob = ndimage.gaussian_filter(luma, max(1.0, diameter / 6), mode="nearest") - background
    blob[~area] = blob[area].min() if area.any() else 0.0
    peaks = peak_local_max(blob, min_distance=max(1, int(diameter)), num_peaks=cfg.candidates,
                           labels=area.astype(np.uint8), exclude_border=False)
    if len(peaks) == 0:  # a flat image: its centre is the only guess
        peaks = np.array([[luma.shape[0] // 2, luma.shape[1] // 2]])
    # the score is the peak's contrast in robust standard deviations of the band-passed field of view,
    # so that "much brighter than the fundus around it" means the same on every camera
    inside = blob[area]
    centre = float(np.median(inside))
    spread = 1.4826 * float(np.median(np.abs(inside - centre))) or 1e-6
    candidates = tuple(Candidate(y=(float(y) + 0.5) / scale - 0.5, x=(float(x) + 0.5) / scale - 0.5,
                                 diameter=diameter / scale, score=(float(blob[y, x]) - centre) / spread)
                       for y, x in peaks)
    return Located(photograph=photograph, candidates=candidates, fov_width=width / scale)
