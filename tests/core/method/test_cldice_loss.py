"""The soft-clDice term (losses.CenterlineDiceLoss) and its wiring into the objective."""

import numpy as np
import pytest
import torch

from napari_ramseg.core.config import MethodConfig, ModelConfig, TrainConfig
from napari_ramseg.core.labels import OPTIC_DISC_CUP, VESSELS
from napari_ramseg.core.method.losses import CenterlineDiceLoss, SegmentationLoss
from napari_ramseg.core.method.model import RamSegNet
from napari_ramseg.core.method.objective import RamDsirObjective


def _vessel(size=40, width=3):
    """(1, H, W) mask: one horizontal vessel ``width`` px wide, across the middle."""
    m = torch.zeros(1, size, size, dtype=torch.long)
    m[0, size // 2 - width // 2: size // 2 - width // 2 + width, 4:size - 4] = 1
    return m


def _logits(binary: torch.Tensor) -> torch.Tensor:
    return torch.where(binary.bool(), 10.0, -10.0).float().unsqueeze(1)


def test_a_connected_vessel_beats_a_broken_one_that_plain_dice_scores_the_same():
    """Both predictions miss 6 of the vessel's pixels: across it (a break) or along its edge (no break).
    BCE + Dice cannot tell them apart; clDice must prefer the connected one."""
    truth = _vessel()
    broken, thinned = truth.clone(), truth.clone()
    broken[0, 19:22, 18:20] = 0  # a 2-px gap through the full width
    thinned[0, 19, 10:16] = 0  # the same number of pixels off one edge, the vessel still whole
    assert int(broken.sum()) == int(thinned.sum())
    seg = SegmentationLoss(VESSELS)
    assert seg(_logits(broken), truth).item() == pytest.approx(seg(_logits(thinned), truth).item(), abs=1e-6)
    cldice = CenterlineDiceLoss(VESSELS)
    assert cldice(_logits(thinned), truth).item() < cldice(_logits(broken), truth).item() - 0.02
    assert cldice(_logits(truth), truth).item() < 0.01  # the exact vessel: (almost) no loss


def test_gradients_are_finite_where_the_sums_are_zero():
    """Empty targets, empty and saturated predictions: finite loss, finite gradients (smoothing, no 0/0)."""
    loss = CenterlineDiceLoss(VESSELS)
    empty = torch.zeros(2, 32, 32, dtype=torch.long)
    for fill in (-30.0, 0.0, 30.0):
        logits = torch.full((2, 1, 32, 32), fill, requires_grad=True)
        for mask in (empty, _vessel(32).expand(2, -1, -1)):
            value = loss(logits, mask)
            (grad,) = torch.autograd.grad(value, logits)
            assert torch.isfinite(value) and torch.isfinite(grad).all()
    # nothing drawn and nothing predicted is a perfect score
    assert loss(torch.full((2, 1, 32, 32), -30.0), empty).item() == pytest.approx(0.0, abs=1e-3)


def test_unannotated_channels_get_no_gradient_and_cost_nothing():
    loss = CenterlineDiceLoss(OPTIC_DISC_CUP)
    disc = torch.zeros(2, 32, 32, dtype=torch.long)
    disc[:, 8:24, 8:24] = 1  # disc-only masks (no cup drawn)
    w = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    logits = torch.randn(2, 2, 32, 32, requires_grad=True)
    loss(logits, disc, w).backward()
    assert torch.count_nonzero(logits.grad[0, 1]) == 0  # the unannotated cup of sample 0
    assert torch.count_nonzero(logits.grad[1, 1]) > 0 and torch.count_nonzero(logits.grad[0, 0]) > 0
    # a thin structure: a filled square wider than ~8 px has no soft skeleton within 3 iterations,
    # so it would cost nothing either way and prove nothing
    disc = _vessel(32).expand(2, -1, -1).contiguous()
    d = (disc >= 1).float()
    no_cup = torch.stack([d * 20 - 10, torch.full_like(d, -10.0)], 1)
    cup = torch.stack([d * 20 - 10, d * 20 - 10], 1)
    masked = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert loss(cup, disc, masked).item() == pytest.approx(loss(no_cup, disc, masked).item(), abs=1e-5)
    assert loss(cup, disc).item() > loss(no_cup, disc).item() + 0.05  # unmasked, a phantom cup costs


def test_bf16_autocast_gives_the_float32_value():
    loss = CenterlineDiceLoss(VESSELS)
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 64, 64)
    mask = (torch.rand(2, 64, 64) > 0.8).long()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits.bfloat16(), mask)
    assert value.dtype == torch.float32
    # the only bf16 error left is the logits' own rounding
    assert value.item() == pytest.approx(loss(logits.bfloat16().float(), mask).item(), abs=1e-5)


@pytest.mark.parametrize("weight, ram", [(0.0, True), (1.0, True), (0.5, False)])
def test_objective_adds_the_term_on_both_views_only_when_weighted(weight, ram):
    config = TrainConfig(labels=VESSELS, model=ModelConfig(base_width=4, depth=3), cldice_weight=weight,
                         method=MethodConfig(ram=ram, dsir=False, consistency=False))
    net = RamSegNet(config.model, config.labels, num_domains=2)
    objective = RamDsirObjective(net, config)
    captured, decode = {}, net.decode
    net.decode = lambda features: captured.setdefault("logits", decode(features))
    images = torch.randn(2, 3, 32, 32)
    masks = _vessel(32).expand(2, -1, -1).contiguous()
    terms = objective(images, masks, torch.tensor([0, 1]), images.flip(-1) if ram else None)
    expected = {"seg"} | ({"seg_ram"} if ram else set())
    if weight > 0:
        expected |= {"cldice"} | ({"cldice_ram"} if ram else set())
        plain = CenterlineDiceLoss(VESSELS)(captured["logits"][:2], masks)  # the plain view's half
        assert terms["cldice"].item() == pytest.approx(weight * plain.item(), rel=1e-5)
    assert set(terms) - {"loss"} == expected
    assert terms["loss"].item() == pytest.approx(sum(terms[t].item() for t in expected), rel=1e-6)


def test_the_weight_round_trips_and_old_configs_read_as_off():
    config = TrainConfig(cldice_weight=1.0)
    assert TrainConfig.from_dict(config.to_dict()).cldice_weight == 1.0
    old = TrainConfig().to_dict()
    del old["cldice_weight"]  # a model.json written before the field existed
    assert TrainConfig.from_dict(old).cldice_weight == 0.0 == TrainConfig.default("cldice_weight")
