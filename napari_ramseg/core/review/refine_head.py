"""Refinement that looks at the image: a per-scan head fitted on the strokes (``RefineConfig.method`` "head").

The probability-seeded refinements (``core/review/refine.py``: the threshold move, the random walker) can only
redraw the network's own contours. This one also looks at what the network saw: the network runs once
per scan for its last decoder feature map (the input of its 1x1 segmentation head,
``RamSegNet.decode_features``) and the normalised image it was given (``ScanFeatures``); each
refinement then fits, on this scan alone, a small correction of the network's logit from those
features (and the logit itself):

    logit'(x) = logit(x) + g(features(x), logit(x)),   g linear (``head_hidden`` 0) or a one-hidden-layer MLP,

``g`` starting at zero, so that without strokes the mask is the one being refined. The loss is a
partial-label one: binary cross-entropy on the stroked pixels only, plus, weighted by
``head_consistency``, cross-entropy towards the mask as it is (its probabilities) on the unstroked
pixels inside the strokes' reach and (as much again) across the scan, so the correction changes no
more than the strokes ask. Each set of pixels weighs as many pixels as it stands for (a few thousand
are sampled from each): a stroke's few hundred pixels against the tens of thousands around it, so
the correction flips only what looks like the strokes, not everything a little like them.
``head_steps`` Adam steps on a few thousand pixels: milliseconds to a fraction of a second on a CPU.
On an image larger than the maps (a full-size photograph), ``g`` is evaluated once per feature pixel
and interpolated, as the network's probabilities are. The refined mask takes ``logit' > logit(threshold)``
inside the strokes' reach only
(``RefineConfig.reach``, as the other methods), and of those changes keeps (``_follow_strokes``) the ones
within ``head_near`` of a stroke and, beyond, only whole structures the head is sure of: a refit moves
every marginal edge pixel and speck of the scan a little, which a clinician sees as the mask getting
worse where they did not draw (bench/results/strokes/README.md).

The features come from one place, ``scan_features``: for the Correct dock and ``ramseg refine``
(``refine.refine_case``, cached on the case's result so each Refine after the first costs no network
pass) and for ``bench/strokes/cases.py`` alike. A photograph the optic-disc model segmented through its
disc ROI gets the ROI's features, placed where the ROI lies (``ScanFeatures.box``); pixels the
features do not cover keep their mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from ...errors import RamsegInputError
from ..config import RefineConfig

__all__ = ["ScanFeatures", "network_features", "refine_channel", "scan_features", "cached_scan_features"]

TRAIN_PIXELS = 2048  # at most this many stroked pixels per sign, and consistency pixels per set, per fit
LOGIT_CLIP = 8.0  # probabilities of 0 and 1 become logits of -/+ this
LR = 0.05  # Adam's step on the correction
DECAY = 1e-3  # L2 on the correction's output layer
SEED = 0  # the pixels sampled and the hidden layer's start: a refinement is repeatable
CONTRAST_SIGMAS = (2.0, 5.0)  # px at the working scale: the local-contrast features' blurs
COARSE_FROM = 1.5  # image px per feature px from which the correction is evaluated per feature pixel (_coarse_delta)


@dataclass
class ScanFeatures:
    """What the network saw of a scan, for the head refinement.

    ``box``: (top, left, height, width), the image pixels the feature maps cover (a disc ROI may start
    before 0 or end past the image). ``maps``: slice index (None for a 2D image) -> (F, h, w) float32
    (the decoder's last map, then the network's input channels, at the size the network saw them);
    ``source`` computes a volume's missing slice on first use."""

    box: tuple[float, float, float, float]
    maps: dict = field(default_factory=dict)
    source: Callable[[int], np.ndarray] | None = None

    def map(self, index: int | None = None) -> np.ndarray:
        if index not in self.maps:
            if self.source is None:
                raise RamsegInputError(f"no features for slice {index} of this scan")
            self.maps[index] = self.source(index)
        if self.maps[index].dtype != np.float32:
            self.maps[index] = np.asarray(self.maps[index], np.float32)
        return self.maps[index]

    def covers(self, coords: tuple[np.ndarray, ...]) -> np.ndarray:
        """Which of the image pixels ``coords`` the maps cover."""
        top, left, height, width = self.box
        y, x = (np.asarray(c, np.float64) for c in coords[-2:])
        return (y >= top) & (y < top + height) & (x >= left) & (x < left + width)

    def pixel(self) -> float:
        """Image pixels per feature pixel (a 2D scan's maps: the network's working scale)."""
        return float(self.box[2]) / self.map(None).shape[-2]

    def sample(self, coords: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Features at image pixels ``coords`` ((y, x) or (z, y, x) index arrays), bilinear: (N, F)
        float32, and which of the pixels the maps cover (those outside get zeros)."""
        top, left, height, width = self.box
        y, x = (np.asarray(c, np.float64) for c in coords[-2:])
        inside = self.covers(coords)
        out = None
        slices = [None] if len(coords) == 2 else np.unique(coords[0]).tolist()
        for index in slices:
            pick = np.ones(len(y), bool) if index is None else (coords[0] == index)
            maps = torch.from_numpy(self.map(index))
            if out is None:
                out = np.zeros((len(y), maps.shape[0]), np.float32)
            grid = torch.from_numpy(np.stack([2 * (x[pick] + 0.5 - left) / width - 1,
                                              2 * (y[pick] + 0.5 - top) / height - 1], -1).astype(np.float32))
            taken = F.grid_sample(maps[None], grid[None, None], mode="bilinear", padding_mode="border",
                                  align_corners=False)[0, :, 0].T
            out[pick] = taken.numpy()
        if out is None:
            out = np.zeros((0, 0), np.float32)
        return out, inside


def network_features(predictor: Any, x: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """(F + 3 C, h, w) float32 for a prepared (C, H, W) input (``Predictor.prepare``) seen at ``shape``
    (the working scale), as the prediction sees it (one network pass, fp32): the decoder's last feature
    map, the network's input, and the input's local contrast (minus its Gaussian blur at
    ``CONTRAST_SIGMAS`` px: thin dark vessels and the cup's pale edge stand out in it)."""
    from ..data.geometry import resize_image
    from ..inference.predictor import pad_to_stride

    model = getattr(predictor, "model", None)
    if model is None or not hasattr(model, "decode_features"):
        raise RamsegInputError("the head refinement needs the model here (not a served one); "
                               "choose another refinement method")
    x = resize_image(x.float(), shape)[None]
    h, w = x.shape[-2:]
    with torch.inference_mode():
        padded = pad_to_stride(x, model.stride).to(predictor.device)
        features = model.decode_features(model.encode(padded))[..., :h, :w].float().cpu()
    image = x[0].numpy()
    contrast = [image - ndi.gaussian_filter(image, (0, sigma, sigma), mode="nearest") for sigma in CONTRAST_SIGMAS]
    return np.concatenate([features[0].numpy(), image, *contrast]).astype(np.float32)


def scan_features(predictor: Any, image: Any, extras: dict | None = None) -> ScanFeatures:
    """The features of the region the network segmented: a 2D image whole, or (``extras["roi"]``, the
    optic-disc task's) the disc ROI it was segmented through; a volume's slices, each on first use,
    as ``Predictor.predict_volume`` sees them."""
    array = np.asarray(image.array)
    if image.is_volume:
        shape = predictor.input_shape(*array.shape[1:], volume=True, spacing=image.spacing)
        return ScanFeatures((0, 0, array.shape[1], array.shape[2]),
                            source=lambda z: network_features(predictor, predictor.prepare(array, z), shape))
    roi = (extras or {}).get("roi")
    if roi:
        from ..tasks.disc.roi import Roi, crop

        roi = Roi(**roi)
        array, box = crop(array, roi), (roi.top, roi.left, roi.side, roi.side)
    else:
        box = (0, 0, array.shape[0], array.shape[1])
    x = predictor.prepare(array)
    return ScanFeatures(box, {None: network_features(predictor, x, predictor.input_shape(*x.shape[-2:]))})


def cached_scan_features(predictor: Any, image: Any, result: Any) -> ScanFeatures:
    """``scan_features`` kept on the case's ``result`` (``pipeline.CaseResult``), for this model: the
    Correct dock keeps one result per scan, so only its first Refine pays the network pass."""
    model = getattr(predictor, "model", None)
    key = None
    if model is not None and hasattr(model, "head"):
        key = hashlib.sha1(model.head.weight.detach().cpu().numpy().tobytes()).hexdigest()
    cached = result.refine_features
    if cached is not None and key is not None and cached[0] == key:
        return cached[1]
    features = scan_features(predictor, image, result.extras)
    result.refine_features = (key, features)
    return features


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float32), 1e-6, 1 - 1e-6)
    return np.clip(np.log(p) - np.log1p(-p), -LOGIT_CLIP, LOGIT_CLIP).astype(np.float32)


def _subsample(coords: tuple[np.ndarray, ...], count: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    n = len(coords[0])
    if n <= count:
        return coords
    pick = np.sort(rng.choice(n, count, replace=False))
    return tuple(c[pick] for c in coords)


class _Correction(torch.nn.Module):
    """g(features, logit): zero at the start (its last layer is zero), inputs standardised."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int, generator: torch.Generator):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        n = len(mean)
        if hidden > 0:
            first = torch.nn.Linear(n, hidden)
            with torch.no_grad():
                bound = 1 / np.sqrt(n)
                first.weight.uniform_(-bound, bound, generator=generator)
                first.bias.uniform_(-bound, bound, generator=generator)
            self.body = torch.nn.Sequential(first, torch.nn.ReLU())
            width = hidden
        else:
            self.body, width = torch.nn.Identity(), n
        self.out = torch.nn.Linear(width, 1)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body((x - self.mean) / self.std))[:, 0]


def _inputs(features: ScanFeatures, coords: tuple[np.ndarray, ...], logit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sampled, inside = features.sample(coords)
    base = logit[coords]
    return np.concatenate([sampled, base[:, None]], axis=1), inside


def refine_channel(prob: np.ndarray, mask: np.ndarray, positive: np.ndarray, negative: np.ndarray,
                   reach: np.ndarray, features: ScanFeatures, threshold: float,
                   config: RefineConfig = RefineConfig()) -> np.ndarray:
    """One binary channel refined by a per-scan head: ``prob`` the channel's probabilities as the mask
    being refined has them (``refine._start_probabilities``), ``mask`` that mask, ``positive`` /
    ``negative`` its strokes, ``reach`` the pixels they may change (``refine._reach``). Pixels out of
    the reach, or not covered by ``features``, keep ``mask``."""
    rng = np.random.default_rng(SEED)
    generator = torch.Generator().manual_seed(SEED)
    logit = _logit(prob)
    drawn = positive | negative
    if prob.ndim == 3:  # a volume: the scan-wide consistency pixels come from the slices the strokes reach
        slices = np.nonzero(reach.any(axis=(1, 2)))[0]
        anywhere = (rng.choice(slices, TRAIN_PIXELS),) + tuple(rng.integers(0, n, TRAIN_PIXELS) for n in prob.shape[1:])
    else:
        anywhere = tuple(rng.integers(0, n, TRAIN_PIXELS) for n in prob.shape)
    anywhere = tuple(c[~drawn[anywhere]] for c in anywhere)
    free = np.nonzero(reach & ~drawn)
    strokes, sets = 0, []  # (inputs, target, weight per pixel); each set weighs as the pixels it stands for
    for coords, target, weight in ((np.nonzero(positive), 1.0, 1.0), (np.nonzero(negative), 0.0, 1.0),
                                   (free, None, config.head_consistency),
                                   (anywhere, None, config.head_consistency * len(free[0]) / max(1, len(anywhere[0])))):
        population = len(coords[0])
        coords = _subsample(coords, TRAIN_PIXELS, rng)
        x, inside = _inputs(features, coords, logit) if len(coords[0]) else (None, np.zeros(0, bool))
        if not inside.any():
            continue
        x, coords = x[inside], tuple(c[inside] for c in coords)
        y = np.full(len(x), target, np.float32) if target is not None else prob[coords].astype(np.float32)
        sets.append((x, y, np.full(len(x), weight * population / len(x), np.float32)))
        strokes += target is not None
    if not strokes:  # the strokes lie where the features do not reach: nothing to learn
        return mask.copy()
    x = torch.from_numpy(np.concatenate([s[0] for s in sets]))
    y = torch.from_numpy(np.concatenate([s[1] for s in sets]))
    w = torch.from_numpy(np.concatenate([s[2] for s in sets]))
    w = w / w.sum()
    g = _Correction(x.mean(0), x.std(0).clamp_min(1e-3), config.head_hidden, generator)
    base = x[:, -1]
    optimiser = torch.optim.Adam(g.parameters(), lr=LR)
    for _ in range(config.head_steps):
        optimiser.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(base + g(x), y, reduction="none") * w).sum()
        loss = loss + DECAY * sum((p ** 2).sum() for p in g.out.parameters())
        loss.backward()
        optimiser.step()

    out = mask.copy()
    change = np.nonzero(reach & ~drawn)
    if len(change[0]) == 0:
        return out
    cut = float(_logit(np.float32(threshold)))
    new_logit = _new_logit(g, features, logit, reach, positive, negative, config.head_smooth)
    change = tuple(c[~np.isnan(new_logit[change])] for c in change)
    out[change] = new_logit[change] > cut
    if config.head_near >= 0:
        out = _follow_strokes(mask, out, new_logit - cut, positive, negative, config)
    return out


def _new_logit(g: torch.nn.Module, features: ScanFeatures, logit: np.ndarray, reach: np.ndarray, positive: np.ndarray,
               negative: np.ndarray, smooth: float) -> np.ndarray:
    """The corrected logit inside the reach (NaN where the features do not reach). ``smooth`` > 0: the
    correction (not the network's logit) is smoothed first (Gaussian, px; the stroked pixels' own
    corrections with it), so the edge it moves along a stroke follows the correction's trend, not each
    pixel's noise."""
    coords = np.nonzero(reach | positive | negative)
    step = features.pixel() if logit.ndim == 2 else 1.0
    if step >= COARSE_FROM:
        delta, inside = _coarse_delta(g, features, logit, coords, step)
    else:
        inputs, inside = _inputs(features, coords, logit)
        with torch.no_grad():
            delta = g(torch.from_numpy(inputs)).numpy()
    coords = tuple(c[inside] for c in coords)
    dense = np.zeros(logit.shape, np.float32)
    dense[coords] = delta[inside]
    if smooth > 0:
        dense = ndi.gaussian_filter(dense, (0.0, smooth, smooth) if logit.ndim == 3 else smooth, mode="nearest")
    out = np.full(logit.shape, np.nan, np.float32)
    out[coords] = logit[coords] + dense[coords]
    return out


def _coarse_delta(g: torch.nn.Module, features: ScanFeatures, logit: np.ndarray, coords: tuple[np.ndarray, ...],
                  step: float) -> tuple[np.ndarray, np.ndarray]:
    """The correction at image pixels ``coords`` of a 2D scan larger than its features (``step`` image pixels per
    feature pixel), evaluated once per feature pixel and interpolated bilinearly, as the network's probabilities
    are: on a full-size photograph a Refine then costs what it costs at the working scale, not ``step`` squared
    times more."""
    y, x = coords
    top, left = float(y.min()), float(x.min())
    rows = np.arange(int(np.ceil((y.max() - top) / step)) + 2) * step + top
    cols = np.arange(int(np.ceil((x.max() - left) / step)) + 2) * step + left
    grid = np.meshgrid(rows, cols, indexing="ij")
    base = ndi.map_coordinates(logit, grid, order=1, mode="nearest").ravel()
    sampled, _ = features.sample(tuple(axis.ravel() for axis in grid))
    with torch.no_grad():
        coarse = g(torch.from_numpy(np.concatenate([sampled, base[:, None]], axis=1).astype(np.float32))).numpy()
    coarse = coarse.reshape(len(rows), len(cols))
    delta = ndi.map_coordinates(coarse, [(y - top) / step, (x - left) / step], order=1, mode="nearest")
    return delta.astype(np.float32), features.covers(coords)


def _follow_strokes(mask: np.ndarray, proposed: np.ndarray, margin: np.ndarray, positive: np.ndarray,
                    negative: np.ndarray, config: RefineConfig) -> np.ndarray:
    """The changes a clinician asked for. Within ``head_near`` px of a stroke, the head's word. Beyond,
    only whole structures the head is sure of: components of at least ``head_min_size`` pixels flipped
    past the cut by ``head_margin`` (logit), with the changed pixels that touch them; never a speck or
    a marginal flip along an edge, which is what a stroke's fit does to the rest of a scan (a refit
    threshold moves every edge a little)."""
    drawn = positive | negative
    near = ndi.distance_transform_edt(~drawn) <= config.head_near if config.head_near > 0 else drawn
    structure = np.ones((3,) * mask.ndim, bool)

    def keep(candidates: np.ndarray, strong: np.ndarray) -> np.ndarray:
        taken = candidates & near
        strong &= candidates & ~near
        if config.head_min_size < 10**9 and strong.any():
            components, count = ndi.label(strong, structure=structure)
            sizes = np.bincount(components.ravel(), minlength=count + 1)
            big = (sizes >= config.head_min_size)[components] & (components > 0)
            taken |= ndi.binary_dilation(big, structure=structure) & candidates
        return taken

    with np.errstate(invalid="ignore"):
        added = keep(proposed & ~mask, margin > config.head_margin)
        removed = keep(mask & ~proposed, margin < -config.head_margin)
    return (mask | added) & ~removed
