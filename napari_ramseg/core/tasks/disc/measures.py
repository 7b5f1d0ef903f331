"""The optic disc's clinical measures, registered with ``core/evaluation/measures.py`` for every scheme that has a
``disc`` and a ``cup`` (so ``measure_case`` — the dock, ``ramseg predict``'s report — includes them).

- ``vcdr``: vertical cup-to-disc ratio, the cup's vertical extent over the disc's (the glaucoma
  measure); ``hcdr`` the same horizontally; both from the structures' bounding boxes (as graders
  measure them: the largest vertical diameter), 0 for a disc without a cup, None without a disc.
- ``rim_px`` (``rim_mm2`` with the pixel size): the neuroretinal rim, disc minus cup.
- ``cup_inside_disc``: every cup pixel lies inside the disc with rim around it (the cup does not
  reach the disc's outline); a prediction or a correction that breaks it should be looked at.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ...evaluation.measures import register


def _extent(mask: np.ndarray, axis: int) -> int:
    """Rows (axis 0) or columns (axis 1) spanned by the mask's pixels."""
    hit = np.flatnonzero(mask.any(axis=1 - axis))
    return int(hit[-1] - hit[0] + 1) if hit.size else 0


def disc_measures(disc: np.ndarray, cup: np.ndarray, spacing: Sequence[float] | None = None) -> dict:
    """The measures of one 2D case from its disc mask (which includes the cup) and its cup mask."""
    disc, cup = np.asarray(disc, bool), np.asarray(cup, bool)
    region = disc | cup  # an exclusive scheme's "disc" is the rim only; the disc is both
    dv, dh = _extent(region, 0), _extent(region, 1)
    out: dict = {"vcdr": _extent(cup, 0) / dv if dv else None,  # the ratios first: tables show the first measures
                 "hcdr": _extent(cup, 1) / dh if dh else None,
                 "rim_px": int((region & ~cup).sum())}
    if spacing is not None:
        out["rim_mm2"] = out["rim_px"] * float(np.prod(spacing))
    filled = ndimage.binary_fill_holes(region)
    interior = ndimage.binary_erosion(filled, iterations=1)
    out["cup_inside_disc"] = bool(region.any() and not (cup & ~interior).any())
    return out


@register("disc", "cup")
def _registered(masks: dict[str, np.ndarray], spacing: Sequence[float] | None) -> dict:
    disc, cup = masks["disc"], masks["cup"]
    if disc.ndim != 2:  # a stack of photographs has no single ratio
        return {}
    return disc_measures(disc, cup, spacing)
