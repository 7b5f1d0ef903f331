"""Segmentation, semantic-consistency and restoration losses (METHOD.md, "Losses")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from .config import LabelScheme


def nested_targets(mask: torch.Tensor, labels: LabelScheme) -> torch.Tensor:
    """(B, H, W) class indices -> (B, K, H, W) binary targets; channel k is ``mask >= k + 1``."""
    levels = torch.arange(1, labels.num_classes + 1, device=mask.device).view(1, -1, 1, 1)
    return (mask.unsqueeze(1) >= levels).float()


class SegmentationLoss(torch.nn.Module):
    """BCE + soft Dice for sigmoid (nested) heads; CE + soft Dice on the foreground for softmax heads."""

    def __init__(self, labels: LabelScheme):
        super().__init__()
        self.labels = labels
        if labels.kind == "nested":
            self.dice = DiceLoss(sigmoid=True, batch=True)
        else:
            self.dice = DiceLoss(softmax=True, to_onehot_y=True, include_background=False, batch=True)

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.labels.kind == "nested":
            target = nested_targets(mask, self.labels)
            return F.binary_cross_entropy_with_logits(logits, target) + self.dice(logits, target)
        mask = mask.long()
        return F.cross_entropy(logits, mask) + self.dice(logits, mask.unsqueeze(1))


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: LabelScheme) -> torch.Tensor:
    """KL(p || q) + KL(q || p), averaged over pixels; zero when the predictions agree.

    For Bernoulli heads the symmetric KL has the closed form (p - q) * (logit p - logit q), summed over
    channels; for softmax heads it is sum_c (p_c - q_c) * (log p_c - log q_c). Both are exact and
    stable because they use log-probabilities straight from the logits.
    """
    a, b = logits_a.float(), logits_b.float()
    if labels.kind == "nested":
        per_pixel = ((torch.sigmoid(a) - torch.sigmoid(b)) * (a - b)).sum(dim=1)
    else:
        log_p, log_q = F.log_softmax(a, dim=1), F.log_softmax(b, dim=1)
        per_pixel = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=1)
    return per_pixel.mean()


def restoration_mse(restored: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the DSIR decoder's image and the un-augmented original."""
    return F.mse_loss(restored.float(), original.float())
