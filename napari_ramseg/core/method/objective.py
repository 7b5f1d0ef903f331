"""The RAM-DSIR training objective and its optimiser (RAM-DSIR, Zhou, Qi, Shi, ECCV 2022): what one step minimises, and how.

``core/training/trainer.py`` runs the loop around it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..config import TrainConfig
from .losses import CenterlineDiceLoss, SegmentationLoss, restoration_mse, symmetric_kl
from .model import RamSegNet

__all__ = ["RamDsirObjective", "poly_lr", "make_optimizer"]


class RamDsirObjective(nn.Module):
    """The whole training objective as one module, so that DistributedDataParallel can wrap it.

    Both views go through the encoder and segmentation decoder in one batch of 2B; the DSIR decoder
    then restores each domain's sub-batch of mixed-image bottlenecks with that domain's BatchNorm and
    is scored against the un-augmented originals. Reusing the bottleneck of the shared pass (rather
    than encoding every sub-batch again) keeps the method's overhead small.

    ``seg_loss``: the segmentation loss, ``SegmentationLoss`` unless the caller gives another; under DDP
    the trainer gives ``training.distributed.GlobalBatchSegmentationLoss``, whose Dice spans all ranks,
    and ``forward`` then takes per-domain ``domain_weights`` and runs every domain's restoration on every
    rank, an empty sub-batch included, so that synchronised BatchNorms see the same calls everywhere and
    every parameter gets a gradient. The method never knows about processes.
    """

    def __init__(self, net: RamSegNet, config: TrainConfig, seg_loss: nn.Module | None = None,
                 annotated: torch.Tensor | None = None):
        super().__init__()
        # (num_domains, channels) from losses.annotated_channels: a domain's unannotated channels get no
        # segmentation loss (partial labels); None when every domain annotates everything
        self.partial = annotated is not None and not bool((annotated > 0).all())
        self.register_buffer("annotated", annotated if self.partial else torch.ones(0), persistent=False)
        self.net = net
        self.method = config.method
        self.seg_loss = seg_loss if seg_loss is not None else SegmentationLoss(config.labels)
        self.labels = config.labels
        # a term of its own (not inside seg_loss) so that it is logged apart and needs nothing from
        # the global-batch Dice under DDP: its per-sample mean averages over ranks like the BCE
        self.cldice_weight = float(config.cldice_weight)
        self.cldice = CenterlineDiceLoss(config.labels) if self.cldice_weight > 0 else None

    def forward(self, images: torch.Tensor, masks: torch.Tensor, domains: torch.Tensor,
                mixed: torch.Tensor | None, domain_weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
        method = self.method
        batch = images.shape[0]
        inputs = images if mixed is None else torch.cat([images, mixed])
        features = self.net.encode(inputs)
        logits = self.net.decode(features)
        weights = self.annotated[domains] if self.partial else None
        terms: dict[str, torch.Tensor] = {"seg": self.seg_loss(logits[:batch], masks, weights)}
        if self.cldice is not None:
            terms["cldice"] = self.cldice_weight * self.cldice(logits[:batch], masks, weights)
        if mixed is not None:
            terms["seg_ram"] = self.seg_loss(logits[batch:], masks, weights)
            if self.cldice is not None:
                terms["cldice_ram"] = self.cldice_weight * self.cldice(logits[batch:], masks, weights)
            if method.consistency:
                terms["consistency"] = method.consistency_weight * symmetric_kl(logits[:batch], logits[batch:], self.labels)
        if method.dsir:
            # Restore the mixed view when RAM is on (the paper's setting), else the image itself.
            bottleneck = features[-1][batch:] if mixed is not None else features[-1]
            restoration = images.new_zeros(())
            if domain_weights is None:
                for k in torch.unique(domains).tolist():
                    select = domains == k
                    restored = self.net.restore(bottleneck[select], int(k), size=tuple(images.shape[-2:]))
                    restoration = restoration + restoration_mse(restored, images[select])
            else:
                for k, weight in enumerate(domain_weights):
                    select = domains == k
                    restored = self.net.restore(bottleneck[select], k, size=tuple(images.shape[-2:]))
                    if weight > 0:
                        restoration = restoration + weight * restoration_mse(restored, images[select])
                    else:  # no slot of this domain here: keep its decoder in the graph with a zero gradient
                        restoration = restoration + 0.0 * restored.float().sum()
            terms["restoration"] = method.restoration_weight * restoration
        terms["loss"] = sum(terms.values())
        return terms


def poly_lr(base: float, iteration: int, total: int, power: float) -> float:
    return base * (1 - iteration / max(total, 1)) ** power


def make_optimizer(net: RamSegNet, config: TrainConfig) -> torch.optim.Adam:
    """Adam without weight decay; the encoder runs at half the rate when DSIR is on (as in the paper)."""
    groups = net.parameter_groups()
    encoder_scale = 0.5 if config.method.dsir else 1.0
    param_groups = [
        {"params": groups["encoder"], "lr": config.lr * encoder_scale, "base_lr": config.lr * encoder_scale, "name": "encoder"},
        {"params": groups["decoder"], "lr": config.lr, "base_lr": config.lr, "name": "decoder"},
    ]
    if config.method.dsir:
        param_groups.append({"params": groups["restoration"], "lr": config.lr, "base_lr": config.lr, "name": "restoration"})
    return torch.optim.Adam(param_groups, betas=(0.9, 0.999), weight_decay=0.0)
