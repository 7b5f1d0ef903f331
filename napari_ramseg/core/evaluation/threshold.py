"""The decision threshold of sigmoid heads, chosen on source-domain validation only.

A vessel head trained with BCE + soft Dice is often under-confident on thin vessels: at 0.5 they are
missed while the wide ones are kept, so recall lags precision on an unseen camera. The threshold is
a free choice at inference time; it is chosen here, once, on the held-out cases of the *source*
domains (never the target), and stored in ``model.json`` like every other setting. Exclusive
(softmax) heads take the argmax and have no threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..inference.predictor import Predictor, labels_from_probabilities
from .metrics import case_dice

# Coarse on purpose: a fine grid over a dozen validation cases would fit their noise.
THRESHOLD_GRID = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


@dataclass
class ThresholdChoice:
    threshold: float
    dice: float  # mean of the per-domain mean Dice at ``threshold``
    dice_at: dict[float, float]  # the same at every threshold of the grid
    cases: int

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "dice": self.dice, "cases": self.cases,
                "dice_by_threshold": {f"{t:g}": round(d, 4) for t, d in self.dice_at.items()},
                "chosen_on": "source-domain validation cases"}


def choose_threshold(predictor: Predictor, samples: Sequence, grid: Sequence[float] = THRESHOLD_GRID) -> ThresholdChoice:
    """The grid threshold with the best source-validation Dice (each domain weighs the same, as in
    model selection); ties go to the threshold closest to 0.5."""
    labels = predictor.labels
    if labels.kind != "nested":
        raise ValueError("only sigmoid (nested) heads have a threshold; exclusive heads take the argmax")
    if not samples:
        raise ValueError("choosing a threshold needs held-out source cases; this run has none")
    per_domain: dict[str, list[list[float]]] = {}
    for sample in samples:
        probs = predictor.predict_prepared(torch.from_numpy(np.ascontiguousarray(sample.image, dtype=np.float32)))
        scores = [case_dice(labels_from_probabilities(probs, labels, t), sample.mask, labels) for t in grid]
        per_domain.setdefault(sample.domain, []).append(scores)
    by_threshold = np.mean([np.mean(v, axis=0) for v in per_domain.values()], axis=0)
    order = sorted(range(len(grid)), key=lambda i: (-round(float(by_threshold[i]), 6), abs(grid[i] - 0.5)))
    best = order[0]
    return ThresholdChoice(float(grid[best]), float(by_threshold[best]),
                           {float(t): float(d) for t, d in zip(grid, by_threshold)}, len(samples))
