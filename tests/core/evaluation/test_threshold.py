"""Choosing the sigmoid threshold on source validation."""

import numpy as np
import pytest
import torch

from napari_ramseg.core.labels import PROSTATE, VESSELS
from napari_ramseg.core.data.dataset import Sample
from napari_ramseg.core.evaluation.threshold import THRESHOLD_GRID, choose_threshold


class _UnderConfident:
    """Probability 0.42 on every true vessel pixel, 0.2 elsewhere: only a threshold below 0.42 finds them."""

    labels = VESSELS

    def __init__(self, masks):
        self.masks = iter(masks)

    def predict_prepared(self, image):
        mask = next(self.masks)
        return torch.from_numpy(np.where(mask > 0, 0.42, 0.2).astype(np.float32))[None]


def _samples(n=4, domains=("A", "B")):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        mask = (rng.random((20, 20)) > 0.8).astype(np.uint8)
        out.append(Sample(np.zeros((3, 20, 20), np.float32), mask, domains[i % len(domains)], f"c{i}"))
    return out


def test_an_under_confident_head_gets_a_lower_threshold():
    samples = _samples()
    choice = choose_threshold(_UnderConfident([s.mask for s in samples]), samples)
    assert choice.threshold < 0.42 and choice.dice == pytest.approx(1.0)
    assert choice.dice_at[0.5] == 0.0 and set(choice.dice_at) == set(THRESHOLD_GRID)
    assert choice.to_dict()["chosen_on"] == "source-domain validation cases" and choice.cases == 4


def test_ties_go_to_the_threshold_nearest_one_half():
    class Certain(_UnderConfident):
        def predict_prepared(self, image):
            return torch.from_numpy((next(self.masks) > 0).astype(np.float32))[None]

    samples = _samples()
    assert choose_threshold(Certain([s.mask for s in samples]), samples).threshold == 0.5


def test_softmax_heads_and_empty_validation_are_refused():
    class Softmax:
        labels = PROSTATE

    with pytest.raises(ValueError, match="exclusive heads"):
        choose_threshold(Softmax(), _samples())
    with pytest.raises(ValueError, match="needs held-out source cases"):
        choose_threshold(_UnderConfident([]), [])
