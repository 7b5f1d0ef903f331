"""Dice, HD95 and ASD per structure, computed with MONAI, as the RAM-DSIR paper evaluates.

Definitions (those of MONAI, which this module only wraps):

- ``dice``: ``2 |P ∩ T| / (|P| + |T|)``.
- Surfaces are the mask's border pixels/voxels (the mask minus its binary erosion with the
  4/6-connected cross). Distances are Euclidean between surface pixel centres, scaled by ``spacing``.
- ``hd95``: symmetric 95th-percentile Hausdorff distance: the larger of the 95th percentiles of the
  pred→truth and truth→pred surface distances (linear interpolation, ``torch.quantile``).
- ``asd``: symmetric average surface distance: the mean of all pred→truth and truth→pred surface
  distances together.

``spacing`` is given in the array's axis order (napari's ``scale``: ``(Z, Y, X)`` for a volume,
``(Y, X)`` for an image). With it distances are in physical units (e.g. mm); without it in pixels.

Edge cases (these never call MONAI, so it emits no empty-mask warnings):

========================  ======  ========  ========
case                      dice    hd95      asd
========================  ======  ========  ========
both empty                1.0     0.0       0.0
exactly one empty         0.0     nan       nan
========================  ======  ========  ========

A distance to an empty set is undefined, hence ``nan`` (never ``inf``). :func:`summarize` averages
distances with ``nanmean`` over the cases where they are defined; write results through
:func:`json_safe` so that ``nan``/``inf`` become JSON ``null``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

from ...files import json_safe  # the one JSON cleaning (files.py); imported from here by older callers
from ..labels import LabelScheme

__all__ = ["binary_metrics", "case_dice", "case_metrics", "summarize", "mean_dice", "json_safe", "structure_masks"]

METRIC_KEYS = ("dice", "hd95", "asd")


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> list[float] | None:
    if spacing is None:
        return None
    values = [float(s) for s in spacing]
    if len(values) != ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(values)} entries for a {ndim}D mask")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be finite and positive, got {tuple(spacing)}")
    return values


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice alone, in numpy, for validation inside training where distances would cost too much.

    Same conventions as :func:`binary_metrics`: both empty -> 1.0, one empty -> 0.0.
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def binary_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] | None = None
) -> dict[str, float]:
    """Dice, HD95 and ASD of two 2D or 3D binary masks of the same shape.

    Any non-zero value counts as foreground. Returns ``{"dice", "hd95", "asd"}`` as Python floats;
    see the module docstring for the definitions and the empty-mask conventions.
    """
    pred = np.asarray(pred).astype(bool, copy=False)
    truth = np.asarray(truth).astype(bool, copy=False)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in shape")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected 2D or 3D masks, got shape {pred.shape}")
    spacing_list = _check_spacing(spacing, pred.ndim)

    p_any, t_any = bool(pred.any()), bool(truth.any())
    if not p_any and not t_any:
        return {"dice": 1.0, "hd95": 0.0, "asd": 0.0}
    if not p_any or not t_any:
        return {"dice": 0.0, "hd95": float("nan"), "asd": float("nan")}

    # MONAI wants (batch, channel, *spatial); one image, one channel.
    y_pred = torch.from_numpy(np.ascontiguousarray(pred))[None, None].float()
    y = torch.from_numpy(np.ascontiguousarray(truth))[None, None].float()
    with warnings.catch_warnings():
        # both masks are non-empty here; silence anything MONAI says about empty masks regardless
        warnings.filterwarnings("ignore", message=r".*is all 0.*")
        # MONAI 1.5/1.6 trips over its own deprecation of get_mask_edges(always_return_as_numpy=...)
        warnings.filterwarnings("ignore", message=r".*always_return_as_numpy.*", category=FutureWarning)
        dice = compute_dice(y_pred, y, include_background=True, ignore_empty=False)
        hd95 = compute_hausdorff_distance(
            y_pred, y, include_background=True, percentile=95, spacing=spacing_list
        )
        asd = compute_average_surface_distance(
            y_pred, y, include_background=True, symmetric=True, spacing=spacing_list
        )
    return {"dice": float(dice.item()), "hd95": float(hd95.item()), "asd": float(asd.item())}


def structure_masks(labels: np.ndarray, scheme: LabelScheme) -> dict[str, np.ndarray]:
    """Binary mask of every structure of ``scheme`` in a class-index label image.

    ``nested``: structure ``k`` (1-based) is ``labels >= k`` (the disc includes the cup);
    ``exclusive``: class ``k`` is ``labels == k``.
    """
    labels = np.asarray(labels)
    out = {}
    for k, name in enumerate(scheme.names, start=1):
        out[name] = labels >= k if scheme.kind == "nested" else labels == k
    return out


def case_dice(pred_labels: np.ndarray, truth_labels: np.ndarray, scheme: LabelScheme,
              names: Sequence[str] | None = None) -> float:
    """One case's Dice: the mean over ``scheme``'s structures (or ``names``, those the case's domain
    annotates) of :func:`dice_score` (a volume's slices stacked count as one case). Validation in
    training, fine-tuning's held-out cases and the threshold choice all score a case with this."""
    pred_masks, truth_masks = structure_masks(pred_labels, scheme), structure_masks(truth_labels, scheme)
    return float(np.mean([dice_score(pred_masks[n], truth_masks[n]) for n in (names or scheme.names)]))


def case_metrics(
    pred_labels: np.ndarray,
    truth_labels: np.ndarray,
    scheme: LabelScheme,
    spacing: tuple[float, ...] | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`binary_metrics` for each structure of ``scheme``: ``{label_name: {"dice", "hd95", "asd"}}``."""
    pred_masks = structure_masks(pred_labels, scheme)
    truth_masks = structure_masks(truth_labels, scheme)
    return {name: binary_metrics(pred_masks[name], truth_masks[name], spacing) for name in scheme.names}


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def summarize(cases: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Average :func:`case_metrics` results over cases, per label.

    Returns ``{label_name: {"dice": mean, "hd95": nanmean, "asd": nanmean}}``; labels appear in the
    order first seen. Dice is never nan (see the conventions), so its plain mean counts every case;
    distances average over the cases where they are defined, and are nan if defined in none.
    """
    names: list[str] = []
    for case in cases:
        names.extend(n for n in case if n not in names)
    summary = {}
    for name in names:
        per_case = [case[name] for case in cases if name in case]
        summary[name] = {
            "dice": float(np.mean([c["dice"] for c in per_case])),
            "hd95": _nanmean([c["hd95"] for c in per_case]),
            "asd": _nanmean([c["asd"] for c in per_case]),
        }
    return summary


def mean_dice(summary: Mapping[str, Mapping[str, float]]) -> float:
    """Mean of the per-label Dice of a :func:`summarize` result (nan if it has no labels)."""
    values = [float(v["dice"]) for v in summary.values()]
    return float(np.mean(values)) if values else float("nan")
