"""Segmentation, semantic-consistency and restoration losses (the RAM-DSIR paper's, ECCV 2022).

Partial labels: a source domain may annotate only some structures (DRIONS-DB marks the optic disc, not
the cup). Its masks then hold no inner label at all, and scoring them as "no cup here" would teach the
network that such eyes have no cup. :func:`annotated_channels` finds, per domain, the nested channels
its masks ever use; :class:`SegmentationLoss` takes those per-sample weights and leaves an unannotated
channel of a sample out of both the BCE and the Dice, so no gradient reaches it from that label.

Thin structures: the soft Dice is dominated by the wide vessels, which hold most foreground pixels, so
a network can score well while it drops the one-to-two-pixel branches. :class:`CenterlineDiceLoss`
(soft clDice, Shit et al., CVPR 2021) scores the overlap of soft skeletons instead, where every
branch counts by its length, not its area; ``TrainConfig.cldice_weight`` turns it on (default off).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, SoftclDiceLoss

from ..labels import LabelScheme


def nested_targets(mask: torch.Tensor, labels: LabelScheme) -> torch.Tensor:
    """(B, H, W) class indices -> (B, K, H, W) binary targets; channel k is ``mask >= k + 1``."""
    levels = torch.arange(1, labels.num_classes + 1, device=mask.device).view(1, -1, 1, 1)
    return (mask.unsqueeze(1) >= levels).float()


def annotated_channels(masks_by_domain: Sequence[Iterable[np.ndarray]], labels: LabelScheme) -> torch.Tensor:
    """(num_domains, channels) 1.0 where a domain annotates a channel, 0.0 where none of its masks uses it.

    Nested schemes only: channel 0 (the outermost structure, which every mask of the task draws) is
    always annotated; inner channel k is annotated when some mask of the domain reaches value k + 1.
    Exclusive (softmax) heads cannot leave a class out of one pixel's distribution: all ones.
    """
    rows = []
    for masks in masks_by_domain:
        row = torch.ones(labels.out_channels)
        if labels.kind == "nested":
            top = max((int(np.asarray(m).max()) for m in masks), default=labels.num_classes)
            row[max(top, 1):] = 0.0
        rows.append(row)
    return torch.stack(rows) if rows else torch.ones(0, labels.out_channels)


def unannotated_names(annotated: torch.Tensor, domains: Sequence[str], labels: LabelScheme) -> dict[str, list[str]]:
    """Per domain (the rows of :func:`annotated_channels`), the structures it never draws; only the domains
    that leave one out (none for exclusive schemes)."""
    if labels.kind != "nested":
        return {}
    missing = {d: [n for n, a in zip(labels.names, row.tolist()) if not a] for d, row in zip(domains, annotated)}
    return {d: names for d, names in missing.items() if names}


class SegmentationLoss(torch.nn.Module):
    """BCE + soft Dice for sigmoid (nested) heads; CE + soft Dice on the foreground for softmax heads."""

    def __init__(self, labels: LabelScheme):
        super().__init__()
        self.labels = labels
        if labels.kind == "nested":
            self.dice = DiceLoss(sigmoid=True, batch=True)
            self.dice_of_probs = DiceLoss(sigmoid=False, batch=True)
        else:
            self.dice = DiceLoss(softmax=True, to_onehot_y=True, include_background=False, batch=True)

    def forward(self, logits: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``weights``: (B, channels) 0/1, where 0 leaves that channel of that sample out (partial labels)."""
        logits = logits.float()
        if self.labels.kind == "nested":
            target = nested_targets(mask, self.labels)
            if weights is None or bool((weights > 0).all()):
                return F.binary_cross_entropy_with_logits(logits, target) + self.dice(logits, target)
            w = weights.to(logits.dtype)[:, :, None, None].expand_as(target)
            bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum() / w.sum().clamp_min(1)
            # masked probabilities and targets drop out of the Dice sums; a channel no sample of the
            # batch annotates scores 0 (MONAI's smoothing: 1 - s / s), with no gradient
            return bce + self.dice_of_probs(torch.sigmoid(logits) * w, target * w)
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


# Soft-skeleton erosions (MONAI's and the authors' default). A skeleton pixel is found only up to a
# radius of about iterations + 1, so vessels wider than ~8 px add little: the term weighs the thin ones,
# which is the point. Each iteration costs six 3x3 max-pools over the (B, K, H, W) probabilities.
CLDICE_ITERATIONS = 3


class CenterlineDiceLoss(torch.nn.Module):
    """Soft clDice (MONAI ``SoftclDiceLoss``) on the foreground channels, one value per sample, averaged.

    Nested heads: sigmoid of each channel; exclusive heads: softmax without the background. The term
    is computed in float32 whatever the autocast (its max-pools and ratios on bf16 probabilities lose
    the small skeleton sums). ``weights`` (B, channels) 0/1 zeroes an unannotated channel's
    probabilities and targets before the skeletons, so it adds nothing to the sums and gets no gradient.
    The field of view needs no mask here: outside it the target is background and so is the picture,
    as for the BCE and Dice of :class:`SegmentationLoss`.
    """

    def __init__(self, labels: LabelScheme, iterations: int = CLDICE_ITERATIONS):
        super().__init__()
        self.labels = labels
        self.cldice = SoftclDiceLoss(iter_=iterations)

    def forward(self, logits: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        if self.labels.kind == "nested":
            probs, target = torch.sigmoid(logits), nested_targets(mask, self.labels)
        else:
            probs = torch.softmax(logits, dim=1)[:, 1:]
            levels = torch.arange(1, self.labels.num_classes + 1, device=mask.device).view(1, -1, 1, 1)
            target = (mask.long().unsqueeze(1) == levels).float()
        if weights is not None and not bool((weights > 0).all()):
            if self.labels.kind != "nested":
                weights = weights[:, 1:]  # the background column; annotated_channels keeps it 1
            w = weights.to(probs.dtype)[:, :, None, None]
            probs, target = probs * w, target * w
        with torch.autocast(logits.device.type, enabled=False):
            return self.cldice(probs, target)
