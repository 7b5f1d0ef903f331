"""What one training step learns from: a (micro-)batch of the source pool on the training device, RAM's
amplitude-mixed view of it and, under DDP, this rank's share of the global batch with its per-domain weights.

The Trainer owns the pool and the lambda generator (both are part of its resume state); a :class:`BatchDrawer`
draws from them. The method and the batch size are passed to each draw: fine-tuning sets its Trainer's config
after construction, so the drawer keeps no copy of it.
"""

from __future__ import annotations

import torch

from ..config import MethodConfig
from ..method.ram import amplitude_mixup, sample_lambda
from ..method.sampling import SourcePool
from . import distributed

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None", "list[float] | None"]


class BatchDrawer:
    def __init__(self, pool: SourcePool, lambda_generator: torch.Generator, device: torch.device,
                 num_domains: int, dist_context: distributed.DistContext | None = None):
        self.pool = pool
        self.lambda_generator = lambda_generator
        self.device = device
        self.num_domains = num_domains
        self.dist = dist_context
        self.rank = dist_context.rank if dist_context else 0
        self.world_size = dist_context.world_size if dist_context else 1

    def draw(self, batch: int, method: MethodConfig) -> Batch:
        """One (micro-)batch on the device: images, masks, domains, the RAM view (None without RAM) and,
        under DDP, the per-domain weights of this rank's share of the global batch (else None)."""
        partners = lam = weights = None
        if self.dist is None:
            images, masks, domains = self.pool.draw_batch(batch)
            if method.ram:
                partners = self.pool.draw_partners(domains)
                lam = sample_lambda(len(images), method.lam_mode, self.lambda_generator)
        else:
            # every rank draws the same global batch and keeps its own slots (SourcePool.draw_shard)
            shard = self.pool.draw_shard(batch, self.rank, self.world_size, partners=method.ram)
            images, masks, domains, partners = shard.images, shard.masks, shard.domains, shard.partners
            if method.ram:  # the global batch's, so that every slot gets the same lambda at any world size
                lam = sample_lambda(batch, method.lam_mode, self.lambda_generator)
                lam = lam[torch.from_numpy(shard.slots)]
            weights = distributed.domain_weights(shard.global_domains, domains.tolist(), self.num_domains,
                                                 self.world_size)
        images = images.to(self.device)  # before RAM, which runs on the training device
        mixed = self._mixup(images, partners, lam, method.window_ratio) if method.ram else None
        return images, masks.to(self.device), domains.to(self.device), mixed, weights

    def _mixup(self, images: torch.Tensor, partners: torch.Tensor, lam: torch.Tensor,
               window_ratio: float) -> torch.Tensor:
        # On the training device (``images`` is already there): done on the CPU that feeds a GPU, the
        # FFTs took ~0.12 s per batch of 8 at 256 px on the CI machine, four times a whole RAM-DSIR
        # step on an H200 (bench/results/gpu).
        return amplitude_mixup(images, partners.to(self.device), lam.to(self.device), window_ratio)
