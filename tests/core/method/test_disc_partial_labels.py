"""Partial labels: a domain without cup annotations (DRIONS-DB) teaches the disc, never "no cup"."""

import numpy as np
import pytest
import torch

from napari_ramseg.core.config import MethodConfig, ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.labels import OPTIC_DISC_CUP, VESSELS
from napari_ramseg.core.data.dataset import Sample
from napari_ramseg.core.method.losses import SegmentationLoss, annotated_channels
from napari_ramseg.core.evaluation.metrics import case_dice
from napari_ramseg.core.method.model import RamSegNet
from napari_ramseg.core.method.objective import RamDsirObjective
from napari_ramseg.core.training.trainer import Trainer


def _disc_cup_masks(n=4, size=32, cup=True, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = np.zeros((size, size), np.uint8)
        y, x = rng.integers(6, size - 18, 2)
        m[y:y + 12, x:x + 12] = 1
        if cup:
            m[y + 4:y + 8, x + 4:x + 8] = 2
        out.append(m)
    return out


def test_a_domain_whose_masks_never_draw_the_cup_does_not_annotate_it():
    table = annotated_channels([_disc_cup_masks(), _disc_cup_masks(cup=False)], OPTIC_DISC_CUP)
    assert table.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    assert annotated_channels([[np.zeros((4, 4), np.uint8)]], VESSELS).tolist() == [[1.0]]  # outermost: always


def test_no_cup_gradient_from_a_disc_only_sample():
    loss = SegmentationLoss(OPTIC_DISC_CUP)
    masks = torch.from_numpy(np.stack(_disc_cup_masks(2) + _disc_cup_masks(2, cup=False))).long()
    logits = torch.randn(4, 2, 32, 32, requires_grad=True)
    weights = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    loss(logits, masks, weights).backward()
    grad = logits.grad
    assert torch.count_nonzero(grad[2:, 1]) == 0  # the disc-only samples' cup channel: nothing
    assert torch.count_nonzero(grad[2:, 0]) > 0  # their disc still trains
    assert torch.count_nonzero(grad[:2, 1]) > 0  # the annotated samples' cup trains


def test_all_annotated_weights_give_the_plain_loss():
    loss = SegmentationLoss(OPTIC_DISC_CUP)
    masks = torch.from_numpy(np.stack(_disc_cup_masks(3))).long()
    logits = torch.randn(3, 2, 32, 32)
    assert loss(logits, masks, torch.ones(3, 2)).item() == pytest.approx(loss(logits, masks).item(), rel=1e-6)


def test_masked_cup_is_not_no_cup():
    """Predicting a cup on a disc-only sample costs nothing with the mask, and a lot without it."""
    loss = SegmentationLoss(OPTIC_DISC_CUP)
    masks = torch.from_numpy(np.stack(_disc_cup_masks(2, cup=False))).long()
    disc = (masks >= 1).float()
    logits_no_cup = torch.stack([disc * 20 - 10, torch.full_like(disc, -10.0)], 1)
    logits_cup = torch.stack([disc * 20 - 10, disc * 20 - 10], 1)  # a cup as large as the disc
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert loss(logits_cup, masks, w).item() == pytest.approx(loss(logits_no_cup, masks, w).item(), abs=1e-4)
    assert loss(logits_cup, masks).item() > loss(logits_no_cup, masks).item() + 0.5


def test_objective_sends_no_cup_gradient_from_the_disc_only_domain():
    config = TrainConfig(labels=OPTIC_DISC_CUP, model=ModelConfig(base_width=4, depth=3),
                         method=MethodConfig(ram=True, dsir=True, consistency=False))
    net = RamSegNet(config.model, config.labels, num_domains=2)
    objective = RamDsirObjective(net, config, annotated=torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    captured = {}
    decode = net.decode

    def keep(features):
        captured["logits"] = logits = decode(features)
        logits.retain_grad()
        return logits

    net.decode = keep
    images = torch.randn(4, 3, 32, 32)
    masks = torch.from_numpy(np.stack(_disc_cup_masks(2) + _disc_cup_masks(2, cup=False))).long()
    domains = torch.tensor([0, 0, 1, 1])
    terms = objective(images, masks, domains, images.flip(-1))
    (terms["seg"] + terms["seg_ram"]).backward()
    grad = captured["logits"].grad  # (2B, 2, H, W): plain views then RAM views
    disc_only = torch.tensor([False, False, True, True]).repeat(2)
    assert torch.count_nonzero(grad[disc_only, 1]) == 0
    assert torch.count_nonzero(grad[~disc_only, 1]) > 0 and torch.count_nonzero(grad[disc_only, 0]) > 0


def test_trainer_records_and_validates_only_the_annotated_structures():
    def samples(domain, cup):
        rng = np.random.default_rng(1)
        return [Sample((rng.normal(0, 0.3, (3, 32, 32)) + m * 0.5).astype(np.float32), m, domain, f"{domain}{i}")
                for i, m in enumerate(_disc_cup_masks(3, cup=cup))]

    config = TrainConfig(labels=OPTIC_DISC_CUP, model=ModelConfig(base_width=4, depth=3),
                         preprocess=PreprocessConfig(size=32), batch=4, iterations=2, device="cpu", val_every=100)
    trainer = Trainer(config, ["cup", "disc_only"], {"cup": samples("cup", True), "disc_only": samples("disc_only", False)},
                      val_samples=samples("disc_only", False)[:1])
    assert trainer.unannotated == {"disc_only": ["cup"]}
    assert trainer.metadata().extra["unannotated_labels"] == {"disc_only": ["cup"]}
    trainer.run()
    # a predicted cup on a disc-only case is not scored as a wrong cup
    pred, truth = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    pred[2:6, 2:6], truth[2:6, 2:6] = 2, 1
    assert case_dice(pred, truth, OPTIC_DISC_CUP, ["disc"]) == 1.0
    assert case_dice(pred, truth, OPTIC_DISC_CUP) == 0.5
