"""Loss values on known inputs."""

import math

import pytest
import torch

from napari_ramseg.core.labels import OPTIC_DISC_CUP, PROSTATE
from napari_ramseg.core.method.losses import SegmentationLoss, nested_targets, restoration_mse, symmetric_kl


def test_nested_targets_disc_contains_cup():
    mask = torch.tensor([[[0, 1, 2]]])
    t = nested_targets(mask, OPTIC_DISC_CUP)
    assert t.shape == (1, 2, 1, 3)
    assert t[0, 0, 0].tolist() == [0, 1, 1]  # disc: rim or cup
    assert t[0, 1, 0].tolist() == [0, 0, 1]  # cup


@pytest.mark.parametrize("labels, channels", [(OPTIC_DISC_CUP, 2), (PROSTATE, 2)])
def test_consistency_is_zero_for_equal_predictions_and_symmetric(labels, channels):
    a = torch.randn(2, channels, 8, 8)
    b = torch.randn(2, channels, 8, 8)
    assert symmetric_kl(a, a, labels).item() == pytest.approx(0.0, abs=1e-7)
    assert symmetric_kl(a, b, labels).item() == pytest.approx(symmetric_kl(b, a, labels).item(), rel=1e-6)
    assert symmetric_kl(a, b, labels).item() > 0


def test_bernoulli_symmetric_kl_matches_the_definition():
    p, q = 0.8, 0.3
    a = torch.full((1, 1, 1, 1), math.log(p / (1 - p)))
    b = torch.full((1, 1, 1, 1), math.log(q / (1 - q)))
    kl = lambda x, y: x * math.log(x / y) + (1 - x) * math.log((1 - x) / (1 - y))  # noqa: E731
    assert symmetric_kl(a, b, OPTIC_DISC_CUP.__class__(("x",), "nested")).item() == pytest.approx(kl(p, q) + kl(q, p), rel=1e-5)


def test_categorical_symmetric_kl_matches_the_definition():
    p = torch.tensor([0.7, 0.3])
    q = torch.tensor([0.2, 0.8])
    expected = float((p * (p / q).log()).sum() + (q * (q / p).log()).sum())
    got = symmetric_kl(p.log().view(1, 2, 1, 1), q.log().view(1, 2, 1, 1), PROSTATE).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_segmentation_loss_low_for_right_and_high_for_wrong_answers():
    mask = torch.zeros(2, 16, 16, dtype=torch.long)
    mask[:, 4:12, 4:12] = 1
    mask[:, 6:10, 6:10] = 2
    loss = SegmentationLoss(OPTIC_DISC_CUP)
    right = (nested_targets(mask, OPTIC_DISC_CUP) * 2 - 1) * 20
    assert loss(right, mask).item() < 0.01
    assert loss(-right, mask).item() > 1.5
    prostate = SegmentationLoss(PROSTATE)
    pmask = (mask > 0).long()
    onehot = torch.nn.functional.one_hot(pmask, 2).permute(0, 3, 1, 2).float() * 40 - 20
    assert prostate(onehot, pmask).item() < 0.01
    assert prostate(-onehot, pmask).item() > 1.5


def test_restoration_mse():
    x = torch.zeros(1, 3, 4, 4)
    assert restoration_mse(x + 0.5, x).item() == pytest.approx(0.25)
