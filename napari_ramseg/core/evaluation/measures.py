"""Clinical measures of one predicted (or corrected) case: the numbers a report, the worklist and the
Segment dock show.

One owner: every measure is computed here, from the class-index label image and the label scheme, so the
CLI's ``report.csv``, the worklist table and the dock always agree. Task-specific measures register a
function in ``MEASURES`` keyed by the label names they need: the optic disc's cup-to-disc ratios do, when
``core/tasks/disc`` is imported, which its task (``core/tasks/optic_disc.py``) does for every case it segments.

Sizes are in pixels (voxels) always, and in mm² (mL) when the pixel spacing is known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..labels import LabelScheme
from .metrics import structure_masks

Measures = dict[str, Any]
# (structure masks by name, spacing in mm or None) -> measures; run when all the key's names are present
MEASURES: dict[tuple[str, ...], Callable[[dict[str, np.ndarray], Sequence[float] | None], Measures]] = {}


def register(*names: str):
    """Decorator: ``fn(masks, spacing) -> dict`` runs for every scheme that has all ``names``."""
    def wrap(fn):
        MEASURES[tuple(names)] = fn
        return fn
    return wrap


def measure_case(labels: np.ndarray, scheme: LabelScheme, spacing: Sequence[float] | None = None,
                 fov: np.ndarray | None = None) -> Measures:
    """Measures of one case: per structure its size (and physical size with ``spacing``, in mm per axis,
    one per array axis), the fraction of the field of view it covers (``fov``: a boolean mask; default the
    whole image), and the registered task measures."""
    labels = np.asarray(labels)
    spacing = _spacing(spacing, labels.ndim)
    masks = structure_masks(labels, scheme)
    area = np.ones(labels.shape, bool) if fov is None else np.asarray(fov, bool)
    if area.shape != labels.shape:
        raise ValueError(f"field-of-view mask shape {area.shape} differs from the labels' {labels.shape}")
    out: Measures = {}
    unit = "voxels" if labels.ndim == 3 else "px"
    for name, mask in masks.items():
        count = int(mask.sum())
        out[f"{name}_{unit}"] = count
        out[f"{name}_fraction"] = float((mask & area).sum() / max(int(area.sum()), 1))
        if spacing is not None:
            cell = float(np.prod(spacing))
            if labels.ndim == 3:
                out[f"{name}_ml"] = count * cell / 1000.0  # mm³ -> mL
            else:
                out[f"{name}_mm2"] = count * cell
    task: Measures = {}
    for needed, fn in MEASURES.items():
        if all(n in masks for n in needed):
            task.update(fn(masks, spacing))
    return {**task, **out}  # the task's measures first (vCDR before areas): tables show the first ones


def _spacing(spacing: Sequence[float] | None, ndim: int) -> list[float] | None:
    if spacing is None:
        return None
    values = [float(s) for s in spacing][-ndim:]
    if len(values) != ndim or not all(np.isfinite(v) and v > 0 for v in values):
        return None  # unknown or broken spacing: sizes in pixels only, never a wrong mm value
    return values

