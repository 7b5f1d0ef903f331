"""Domain-balanced batches with fresh augmentation, drawn from decoded images cached at the working scale."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import PreprocessConfig
from ..data.geometry import resize_image, resize_mask, working_shape
from ..data.photometric import apply_photometric, draw_photometric


@dataclass
class CachedSample:
    image: torch.Tensor  # (C, H, W) float32 in [-1, 1] at the working scale
    mask: torch.Tensor  # (H, W) uint8
    name: str


class SourcePool:
    """All training samples of the source domains, decoded once and cached at the working scale.

    ``draw_batch`` gives every domain an (almost) equal share of each batch. Each domain walks through
    its own shuffled order of cases, reshuffled when it runs out, so every case is seen once per
    "epoch" and augmentation is drawn afresh each time (no frozen replay of a small domain).
    """

    def __init__(
        self,
        samples_by_domain: dict[str, Sequence],
        domains: Sequence[str],
        preprocess: PreprocessConfig,
        scale_aug_p: float = 0.5,
        scale_aug_max: float = 1.5,
        seed: int = 0,
        photometric_p: float = 0.0,
    ):
        self.domains = list(domains)
        missing = [d for d in self.domains if not samples_by_domain.get(d)]
        if missing:
            raise ValueError(f"no training cases for source domain(s): {', '.join(missing)}")
        self.preprocess = preprocess
        self.size = preprocess.size
        self.scale_aug_p = scale_aug_p
        self.scale_aug_max = scale_aug_max
        self.photometric_p = photometric_p  # core/data/photometric.py: each training image, with this probability
        self.cache: list[list[CachedSample]] = []
        for domain in self.domains:
            cached = []
            for sample in samples_by_domain[domain]:
                image = torch.from_numpy(np.array(sample.image, dtype=np.float32))
                mask = torch.from_numpy(np.array(sample.mask, dtype=np.uint8))
                shape = working_shape(*image.shape[-2:], preprocess)
                cached.append(CachedSample(resize_image(image, shape), resize_mask(mask, shape), sample.name))
            self.cache.append(cached)
        self.rng = np.random.default_rng(seed)
        self._orders: list[list[int]] = [[] for _ in self.domains]
        self.style: list[CachedSample] = []  # unlabelled scans of a new site: extra RAM partners only
        self.style_share = 0.0

    def set_style_images(self, images: Sequence[torch.Tensor], share: float) -> None:
        """Target-style RAM: unlabelled scans of the site a model is adapted to, (C, H, W) in [-1, 1],
        lend their amplitude as RAM partners: each slot's partner is one of them with probability
        ``share``, else drawn as before. They are never trained on as images (no mask)."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"the target-style share must be in 0..1, not {share}")
        self.style = []
        for i, image in enumerate(images):
            image = torch.as_tensor(image, dtype=torch.float32)
            image = resize_image(image, working_shape(*image.shape[-2:], self.preprocess))
            self.style.append(CachedSample(image, torch.zeros(image.shape[-2:], dtype=torch.uint8), f"style{i}"))
        self.style_share = float(share) if self.style else 0.0

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def __len__(self) -> int:
        return sum(len(c) for c in self.cache)

    def state(self) -> dict[str, Any]:
        """What drawing depends on, so that a resumed run draws on exactly as this one would:
        ``rng`` (numpy's bit-generator state) and ``orders`` (each domain's indices still to draw)."""
        return {"rng": self.rng.bit_generator.state, "orders": [[int(i) for i in order] for order in self._orders]}

    def load_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state` returned."""
        self.rng.bit_generator.state = state["rng"]
        self._orders = [[int(i) for i in order] for order in state["orders"]]

    def _next_index(self, domain: int) -> int:
        if not self._orders[domain]:
            self._orders[domain] = list(self.rng.permutation(len(self.cache[domain])))
        return int(self._orders[domain].pop())

    def batch_domains(self, batch: int) -> np.ndarray:
        """Domain index of each slot: an even share for every domain, remainder to random domains."""
        k = self.num_domains
        slots = np.concatenate([np.arange(k)] * (batch // k) + [self.rng.permutation(k)[: batch % k]])
        return np.sort(slots).astype(np.int64)

    def _crop_plan(self, sample: CachedSample) -> tuple[tuple[int, int] | None, int, int]:
        """Draw one augmentation (scale-up shape or None, crop top, crop left) without touching pixels.

        Drawing and applying are separate so that a rank can draw the whole global batch (keeping its
        random stream in step with the other ranks) but build only its own slots' crops.
        """
        h, w = sample.image.shape[-2:]
        scaled = None
        if self.rng.random() < self.scale_aug_p:
            # Scale up independently in y and x by U(1, max), as the paper does.
            sy, sx = self.rng.uniform(1.0, self.scale_aug_max, size=2)
            h, w = int(round(h * sy)), int(round(w * sx))
            scaled = (h, w)
        h, w = max(h, self.size), max(w, self.size)  # images smaller than the crop are padded
        top = int(self.rng.integers(0, h - self.size + 1))
        left = int(self.rng.integers(0, w - self.size + 1))
        return scaled, top, left

    def _apply_plan(self, sample: CachedSample, plan: tuple[tuple[int, int] | None, int, int]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        scaled, top, left = plan
        image, mask = sample.image, sample.mask
        if scaled is not None:
            image, mask = resize_image(image, scaled), resize_mask(mask, scaled)
        h, w = image.shape[-2:]
        pad_h, pad_w = max(self.size - h, 0), max(self.size - w, 0)
        if pad_h or pad_w:
            # Images smaller than the crop (e.g. long_side < size) are padded with background.
            image = F.pad(image, (0, pad_w, 0, pad_h), value=-1.0)
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=0)
        crop = (slice(top, top + self.size), slice(left, left + self.size))
        return image[(slice(None), *crop)], mask[crop]

    def _slot_plans(self, domains: np.ndarray) -> list[tuple[CachedSample, tuple, Any]]:
        plans = []
        for d in domains:
            sample = self.cache[d][self._next_index(d)]
            crop = self._crop_plan(sample)
            plans.append((sample, crop, draw_photometric(self.rng, self.photometric_p, sample.image.shape[0])))
        return plans

    def _apply_slot(self, sample: CachedSample, plan: tuple, photometric: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """A training slot: the crop, then its photometric change (RAM partners only lend amplitude: no change)."""
        image, mask = self._apply_plan(sample, plan)
        return apply_photometric(image, photometric), mask

    def _partner_plans(self, domains: Sequence[int]) -> list[tuple[CachedSample, tuple]]:
        plans = []
        k = self.num_domains
        for d in domains:
            # no draw at all without style images, so a pool without them draws exactly as before
            if self.style and self.rng.random() < self.style_share:
                sample = self.style[int(self.rng.integers(0, len(self.style)))]
            else:
                other = d if k == 1 else int((d + 1 + self.rng.integers(0, k - 1)) % k)
                sample = self.cache[other][int(self.rng.integers(0, len(self.cache[other])))]
            plans.append((sample, self._crop_plan(sample)))
        return plans

    def draw_batch(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images (B, C, S, S), masks (B, S, S) long, domain indices (B,)) for one training step."""
        domains = self.batch_domains(batch)
        pairs = [self._apply_slot(*slot) for slot in self._slot_plans(domains)]
        images = torch.stack([p[0] for p in pairs])
        masks = torch.stack([p[1] for p in pairs]).long()
        return images, masks, torch.from_numpy(domains)

    def draw_partners(self, domains: torch.Tensor) -> torch.Tensor:
        """A RAM partner for each slot: a uniformly drawn *other* domain, then a uniform image of it.

        Partners come from the whole pool, not only from the current batch. With one source domain the
        partner comes from the same domain.
        """
        plans = self._partner_plans([int(d) for d in domains.tolist()])
        return torch.stack([self._apply_plan(sample, plan)[0] for sample, plan in plans])

    def draw_shard(self, batch: int, rank: int, world_size: int, partners: bool = True) -> "Shard":
        """This rank's part of the global batch that ``draw_batch`` (+ ``draw_partners``) would give.

        Every rank calls this with the same pool, seed and ``batch``: all draw the same global batch
        (same cases, augmentations and RAM partners, partners from every domain of the pool) and build
        only the slots that ``shard_slots`` deals to ``rank``. The random stream is consumed exactly
        as ``draw_batch`` followed by ``draw_partners`` consumes it, so the union over the ranks is the
        single-process batch.
        """
        if batch % world_size:
            raise ValueError(f"the global batch ({batch}) must be divisible by the number of processes ({world_size})")
        domains = self.batch_domains(batch)
        slot_plans = self._slot_plans(domains)
        partner_plans = self._partner_plans([int(d) for d in domains]) if partners else None
        keep = shard_slots(domains, rank, world_size)
        pairs = [self._apply_slot(*slot_plans[i]) for i in keep]
        images = torch.stack([p[0] for p in pairs])
        masks = torch.stack([p[1] for p in pairs]).long()
        partner_images = None
        if partner_plans is not None:
            partner_images = torch.stack([self._apply_plan(*partner_plans[i])[0] for i in keep])
        return Shard(images, masks, torch.from_numpy(domains[keep]), partner_images, keep, domains)

    def fingerprint(self) -> str:
        """Domains, case names and shapes in pool order: equal on every rank, or the ranks disagree."""
        import hashlib

        digest = hashlib.sha256()
        for domain, cached in zip(self.domains, self.cache):
            digest.update(domain.encode())
            for sample in cached:
                digest.update(f"{sample.name}:{tuple(sample.image.shape)}".encode())
        for sample in self.style:
            digest.update(f"style {sample.name}:{tuple(sample.image.shape)}:{self.style_share}".encode())
        return digest.hexdigest()


@dataclass
class Shard:
    """One rank's slots of a global batch, and what it needs to know about the whole batch."""

    images: torch.Tensor  # (b, C, S, S), b = batch / world_size
    masks: torch.Tensor  # (b, S, S) long
    domains: torch.Tensor  # (b,) domain index of each slot
    partners: torch.Tensor | None  # (b, C, S, S) RAM partners, or None
    slots: np.ndarray  # indices of these slots in the global batch
    global_domains: np.ndarray  # (B,) domain index of every slot of the global batch


def shard_slots(domains: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The global-batch slots that ``rank`` trains on, in batch order.

    The slots, grouped by domain, are dealt to the ranks in turn (slot i of the grouped order goes to
    rank i mod world_size). Each rank gets ``batch / world_size`` slots, and of every domain's n slots
    floor(n / world_size) or one more; so every rank sees every domain once the per-rank batch is at
    least the number of domains (then every domain has at least world_size slots).
    """
    domains = np.asarray(domains)
    batch = len(domains)
    if batch % world_size:
        raise ValueError(f"the global batch ({batch}) must be divisible by the number of processes ({world_size})")
    grouped = np.argsort(domains, kind="stable")
    return np.sort(grouped[rank::world_size])
