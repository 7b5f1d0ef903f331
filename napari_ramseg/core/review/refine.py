"""Refine a mask from a clinician's strokes, seeded by the network's probabilities.

Strokes are a class-index array of the mask's spatial shape: at each stroked pixel the class the mask
should have there (the same indices as the masks ``ramseg predict`` writes), ``BACKGROUND_STROKE``
(255) for "this is background", and 0 where nothing was drawn. The same function serves
``ramseg refine``, the Correct dock and ``bench/strokes/benchmark.py``, so they cannot disagree.

Each output channel (nested: ``mask >= k + 1``; exclusive: ``mask == k``) is refined as a binary
map, then the channels are put back together as ``predictor.labels_from_probabilities`` does. A stroke
changes the mask only inside its *reach*: the pixels within ``RefineConfig.reach`` of it (in a volume,
also ``RefineConfig.slices`` slices above and below), so a stroke never changes anything far from it.
Distances are given at the model's working scale (``working_scale``, ``at_scale``): the same settings
reach the same anatomy on a 768 px working image and on the 3504 px photograph it came from.

Two methods (``RefineConfig.method``; chosen by ``bench/strokes/benchmark.py``, see bench/results/strokes/):

- ``threshold``: the stroke moves the decision threshold inside its reach to just past the
  probabilities it was drawn over (a positive stroke lowers it to what it covers, a negative stroke
  raises it above it), and the pixels that change must connect to the stroke. A missed vessel the
  network saw faintly is taken whole, a cup drawn too large shrinks to the probability contour the
  stroke passes through. The move stops at ``floor`` and ``ceiling``: what the network all but rules
  out (a vessel it never saw) or is sure of is left to the stroke itself.
- ``random_walker``: scikit-image's random walker on the probabilities inside the reach, seeded by the
  strokes and, away from them, by the mask as it is.
- ``head``: a per-scan correction of the network's logit from its last decoder features and the image,
  fitted on the stroked pixels (``core/review/refine_head.py``); it needs the scan's ``features``, which
  ``refine_case`` takes from the predictor.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ...errors import RamsegInputError
from ..config import RefineConfig
from ..labels import LabelScheme

__all__ = ["BACKGROUND_STROKE", "RefineConfig", "at_scale", "check_strokes", "refine_case", "refine_labels",
           "refine_prediction", "working_scale"]

BACKGROUND_STROKE = 255  # "this is background" in a strokes array; 0 is "nothing drawn"


def check_strokes(strokes: Any, shape: tuple[int, ...], scheme: LabelScheme) -> np.ndarray:
    """The strokes as uint8 of the mask's ``shape``; a wrong shape or an unknown class is one line."""
    array = np.asarray(strokes)
    if array.shape != tuple(shape):
        raise RamsegInputError(f"the strokes {array.shape} do not match the image's shape {tuple(shape)}")
    if array.dtype.kind not in "biu":
        raise RamsegInputError(f"strokes must hold whole class numbers, not {array.dtype} values")
    values = set(np.unique(array).tolist()) - {0, BACKGROUND_STROKE}
    bad = sorted(v for v in values if not 1 <= v <= scheme.num_classes)
    if bad:
        names = ", ".join(f"{i} {n}" for i, n in enumerate(scheme.names, start=1))
        raise RamsegInputError(f"the strokes use value {bad[0]}; they may hold only {names}, "
                               f"{BACKGROUND_STROKE} background and 0 (nothing drawn)")
    return array.astype(np.uint8)


def _channel_strokes(strokes: np.ndarray, scheme: LabelScheme, channel: int) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) pixels of one output channel; ``channel`` counts foreground classes from 0."""
    drawn = strokes != 0
    background = strokes == BACKGROUND_STROKE
    value = channel + 1
    if scheme.kind == "nested":  # channel k is "mask >= k + 1": a cup stroke is also a disc stroke
        positive = drawn & ~background & (strokes >= value)
    else:
        positive = strokes == value
    return positive, drawn & ~positive


def _channel_masks(labels: np.ndarray, scheme: LabelScheme) -> list[np.ndarray]:
    value = np.asarray(labels)
    if scheme.kind == "nested":
        return [value >= k + 1 for k in range(scheme.num_classes)]
    return [value == k + 1 for k in range(scheme.num_classes)]


def _channel_probabilities(probabilities: np.ndarray, scheme: LabelScheme) -> list[np.ndarray]:
    """Each foreground class's probability map (an exclusive head's channel 0 is background)."""
    first = 0 if scheme.kind == "nested" else 1
    return [np.asarray(probabilities[first + k], np.float32) for k in range(scheme.num_classes)]


def _labels_from_masks(masks: list[np.ndarray], probabilities: list[np.ndarray], scheme: LabelScheme) -> np.ndarray:
    """Class indices from refined binary channels: nested, a class needs all its outer ones (a cup never
    outside its disc); exclusive, a pixel two classes claim goes to the more probable one."""
    out = np.zeros(masks[0].shape, np.uint8)
    if scheme.kind == "nested":
        inside = np.ones(masks[0].shape, bool)
        for k, mask in enumerate(masks):
            inside &= mask
            out[inside] = k + 1
        return out
    best = np.full(masks[0].shape, -1.0, np.float32)
    for k, (mask, prob) in enumerate(zip(masks, probabilities)):
        take = mask & (prob > best)
        out[take], best[take] = k + 1, prob[take]
    return out


def _start_probabilities(prob: np.ndarray, start: np.ndarray, threshold: float) -> np.ndarray:
    """The probabilities as the mask being refined has them: where the mask disagrees with the network
    (an earlier refinement or a painted fix), mirror the probability across the threshold, so the mask
    as it is is what the map says and the network's confidence still shapes it."""
    disagree = start != (prob > threshold)
    return np.where(disagree, np.clip(2 * threshold - prob, 0.0, 1.0), prob).astype(np.float32)


def _reach(stroke: np.ndarray, config: RefineConfig) -> np.ndarray:
    """The pixels a stroke may change: within ``config.reach`` pixels of it in-plane (and ``config.slices``
    slices along a volume's first axis)."""
    sampling = (1.0, 1.0) if stroke.ndim == 2 else (config.reach / max(config.slices, 0.5), 1.0, 1.0)
    return ndi.distance_transform_edt(~stroke, sampling=sampling) <= config.reach


def _connected_to(candidates: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The candidate pixels in components (8- / 26-connected) that touch a seed."""
    components, _ = ndi.label(candidates | seeds, structure=np.ones((3,) * candidates.ndim, bool))
    touched = np.unique(components[seeds])
    return np.isin(components, touched[touched > 0]) & candidates


def _refine_threshold(prob: np.ndarray, mask: np.ndarray, positive: np.ndarray, negative: np.ndarray,
                      threshold: float, config: RefineConfig) -> np.ndarray:
    """Move the threshold inside each stroke's reach to what the stroke was drawn over."""
    out = mask.copy()
    structure = np.ones((3,) * prob.ndim, bool)
    for strokes, grow in ((positive, True), (negative, False)):
        components, count = ndi.label(strokes, structure=structure)
        for index, box in enumerate(ndi.find_objects(components), start=1):
            box = _padded(box, prob.shape, config)
            stroke = components[box] == index
            local, reach = prob[box], _reach(stroke, config)
            if grow:  # lower the threshold to the stroke's faint end: what it covers counts as foreground
                level = min(threshold, max(config.floor, float(np.quantile(local[stroke], config.quantile))))
                change = _connected_to(reach & (local >= level) & ~out[box], stroke)
                out[box] |= change | stroke
            else:  # raise it above what the stroke covers
                level = max(threshold, min(config.ceiling, float(np.quantile(local[stroke], 1 - config.quantile))))
                change = _connected_to(reach & (local <= level) & out[box], stroke)
                out[box] &= ~(change | stroke)
    return out


def _padded(box: tuple[slice, ...], shape: tuple[int, ...], config: RefineConfig) -> tuple[slice, ...]:
    pads = [config.slices] + [config.reach + 1] * (len(shape) - 1) if len(shape) == 3 else [config.reach + 1] * 2
    return tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, p, n in zip(box, pads, shape))


def _clear_band(mask: np.ndarray, negative: np.ndarray, config: RefineConfig) -> np.ndarray:
    """``mask`` less its foreground within ``config.negative_band`` px of a negative stroke that connects to
    the stroke inside that band: a stroke drawn along a false branch takes the branch's edges with it, and
    a structure crossing the stroke loses only the band's width."""
    out = mask.copy()
    wide = replace(config, reach=config.negative_band, slices=0)  # in-plane: the slice it was drawn on
    components, _ = ndi.label(negative, structure=np.ones((3,) * mask.ndim, bool))
    for box in ndi.find_objects(components):
        box = _padded(box, mask.shape, wide)
        stroke = negative[box]
        band = _reach(stroke, wide)
        out[box] &= ~_connected_to(band & out[box], stroke)
    return out


def _refine_random_walker(prob: np.ndarray, mask: np.ndarray, positive: np.ndarray, negative: np.ndarray,
                          config: RefineConfig) -> np.ndarray:
    """Random walker inside the strokes' reach: strokes seed it, and so does the mask outside the reach."""
    from skimage.segmentation import random_walker

    drawn = positive | negative
    out = mask.copy()
    components, _ = ndi.label(ndi.binary_dilation(drawn, iterations=config.reach), structure=np.ones((3,) * prob.ndim, bool))
    for index, box in enumerate(ndi.find_objects(components), start=1):
        box = _padded(box, prob.shape, config)
        reach = _reach(drawn[box], config) & (components[box] == index)
        seeds = np.where(mask[box], 1, 2).astype(np.int32)
        seeds[reach] = 0  # the walker decides inside the reach
        seeds[positive[box]], seeds[negative[box]] = 1, 2
        if not (seeds == 1).any() or not (seeds == 2).any():
            out[box] = np.where(reach, bool((seeds == 1).any()), out[box])
            continue
        walked = random_walker(prob[box], seeds, beta=config.beta, mode="cg_j", tol=1e-3) == 1
        out[box] = np.where(reach, walked, out[box])
    return out


def _refine_head(prob: np.ndarray, mask: np.ndarray, positive: np.ndarray, negative: np.ndarray,
                 threshold: float, config: RefineConfig, features: Any) -> np.ndarray:
    """The per-scan head (``core/review/refine_head.py``) inside the strokes' reach."""
    from .refine_head import refine_channel

    if features is None:
        raise RamsegInputError("the head refinement needs the scan's features (refine_case takes them from the model)")
    drawn = positive | negative
    reach = np.zeros(drawn.shape, bool)
    box = _padded(ndi.find_objects(drawn.astype(np.uint8))[0], drawn.shape, config)
    reach[box] = _reach(drawn[box], config)
    return refine_channel(prob, mask, positive, negative, reach, features, threshold, config)


def at_scale(config: RefineConfig, scale: float) -> RefineConfig:
    """``config`` with its distances (given at the model's working scale) in pixels of an image ``scale``
    times as large: a stroke reaches as far into the anatomy on a full-size photograph as on the
    working-scale image the settings were chosen on."""
    if scale == 1.0:
        return config
    return replace(config, reach=max(1, round(config.reach * scale)),
                   head_near=config.head_near if config.head_near <= 0 else max(1, round(config.head_near * scale)),
                   head_min_size=max(1, round(config.head_min_size * scale ** 2)),
                   head_smooth=config.head_smooth * scale,
                   negative_band=config.negative_band if config.negative_band <= 0 else max(1, round(config.negative_band * scale)))


def working_scale(predictor: Any, image: Any, extras: dict | None = None) -> float:
    """Image pixels per pixel of the model's working scale, in-plane: the size the network saw the image
    (or a volume's slices, or the optic-disc task's ROI, ``extras["roi"]``) at, against its size."""
    shape = tuple(image.spatial_shape)
    roi = (extras or {}).get("roi")
    if roi:
        side = int(roi["side"])
        return side / predictor.input_shape(side, side)[0]
    if image.is_volume:
        seen = predictor.input_shape(*shape[1:], volume=True, spacing=image.spacing)
    else:
        seen = predictor.input_shape(*shape)
    return float(max(shape[-2] / seen[0], shape[-1] / seen[1]))


def refine_labels(probabilities: np.ndarray, strokes: np.ndarray, scheme: LabelScheme, threshold: float = 0.5,
                  start: np.ndarray | None = None, config: RefineConfig = RefineConfig(),
                  features: Any = None, scale: float = 1.0) -> np.ndarray:
    """The refined class-index mask.

    ``probabilities``: the network's (C, *spatial) map (``Prediction.probabilities``); ``strokes``: see
    the module docstring; ``start``: the mask to refine (default: the network's own, thresholded at
    ``threshold``). Without strokes the result is ``start``; stroked pixels always get their stroke's class.
    ``features``: the scan's ``refine_head.ScanFeatures``, which the ``head`` method needs. ``scale``:
    image pixels per working-scale pixel (``working_scale``), since ``config``'s distances are given at
    the working scale.
    """
    config = at_scale(config, scale)
    probabilities = np.asarray(probabilities, np.float32)
    spatial = probabilities.shape[1:]
    strokes = check_strokes(strokes, spatial, scheme)
    maps = _channel_probabilities(probabilities, scheme)
    if start is None:
        starts = [p > threshold for p in maps]
    else:
        if np.shape(start) != spatial:
            raise RamsegInputError(f"the starting mask {np.shape(start)} does not match the image's shape {spatial}")
        starts = _channel_masks(start, scheme)
        maps = [_start_probabilities(p, s, threshold) for p, s in zip(maps, starts)]
    refined = []
    for k, (prob, mask) in enumerate(zip(maps, starts)):
        positive, negative = _channel_strokes(strokes, scheme, k)
        if not (positive.any() or negative.any()):
            refined.append(mask)
        elif config.method == "random_walker":
            refined.append(_refine_random_walker(prob, mask, positive, negative, config))
        elif config.method == "head":
            refined.append(_refine_head(prob, mask, positive, negative, threshold, config, features))
        else:
            refined.append(_refine_threshold(prob, mask, positive, negative, threshold, config))
        if config.negative_band > 0 and negative.any():
            refined[-1] = _clear_band(refined[-1], negative, config)
    labels = _labels_from_masks(refined, maps, scheme)
    drawn = strokes != 0
    labels[drawn] = np.where(strokes[drawn] == BACKGROUND_STROKE, 0, strokes[drawn])  # a stroke is the last word
    return labels


def refine_prediction(prediction: Any, strokes: np.ndarray, scheme: LabelScheme, threshold: float = 0.5,
                      start: np.ndarray | None = None, config: RefineConfig = RefineConfig(),
                      features: Any = None, scale: float = 1.0) -> np.ndarray:
    """``refine_labels`` on a ``CaseResult``'s prediction (``core.inference.predictor.Prediction``); ``start`` defaults
    to the prediction's own labels (its task's post-processing included)."""
    start = prediction.labels if start is None else start
    return refine_labels(prediction.probabilities, strokes, scheme, threshold, start, config, features, scale)


def refine_case(predictor: Any, image: Any, strokes: np.ndarray, start: np.ndarray | None = None,
                config: RefineConfig = RefineConfig(), result: Any = None) -> tuple[np.ndarray, Any]:
    """One case refined the same way for ``ramseg refine`` and the Correct dock: the case segmented by
    ``pipeline.segment_case`` (or its ``result`` kept from before: the dock segments once per scan), then
    ``refine_prediction``. Returns (the refined mask, the ``CaseResult``); a refused case is one line."""
    from .pipeline import segment_case

    result = segment_case(predictor, image) if result is None else result
    if result.refused:
        raise RamsegInputError(f"the model cannot segment this image, so strokes cannot refine it: {result.refusal}")
    features = None
    if config.method == "head":  # the scan's features, one network pass kept with the result
        from .refine_head import cached_scan_features

        features = cached_scan_features(predictor, image, result)
    scale = working_scale(predictor, image, result.extras)
    refined = refine_prediction(result.prediction, strokes, predictor.labels, predictor.threshold, start, config,
                                features, scale)
    return refined, result
