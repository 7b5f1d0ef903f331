"""Training on several processes with PyTorch's own stack: ``torchrun`` + DistributedDataParallel.

``torchrun --nproc_per_node N -m napari_ramseg train ...`` starts N copies of the ordinary command;
torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``)
is what switches this module on. Without it nothing here runs and training is single-process as before.

Design (see also ``Trainer`` and ``SourcePool.draw_shard``):

- NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPU.
- Every rank holds the whole source pool and draws the *same* global batch (images, augmentation,
  RAM partners from every domain of the pool, mixing weights) from identically seeded generators,
  then keeps its own share of the slots: domains are dealt round-robin, so each rank gets an even
  share of every domain. ``--batch`` is the global batch; each rank trains on ``batch / world_size``.
- The objective is defined on the global batch, so that N processes compute what one process with
  the same batch computes: the soft Dice sums are all-reduced (``GlobalBatchSegmentationLoss``), the
  per-domain restoration MSE is weighted by each rank's share of that domain, and with
  ``--sync-batchnorm`` every BatchNorm, the per-domain ones included, normalises with the statistics
  of the global (sub-)batch (``SyncBatchNorm2d``). Pixel means (BCE, CE, consistency) average
  correctly on their own because every rank has the same number of slots.
- ``torch.nn.SyncBatchNorm`` is not used: it refuses CPU tensors (so gloo runs, and the CI test,
  could not use it). ``SyncBatchNorm2d`` is a plain ``nn.BatchNorm2d`` subclass (same state-dict
  keys) whose training forward combines per-rank mean / M2 / count with one autograd-aware
  all-reduce, so it works on every backend, and with empty sub-batches: every rank calls every
  domain's BatchNorm in the same order, a domain with no slot on a rank contributes a zero count.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import inspect
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..labels import LabelScheme
from ..device import resolve_device
from ..method.losses import nested_targets

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
DICE_SMOOTH = 1e-5  # MONAI DiceLoss's smooth_nr and smooth_dr, which SegmentationLoss uses


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend}


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) when launched by torchrun (or an equivalent launcher), else None."""
    if not all(name in os.environ for name in ENV_VARS):
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def env_rank() -> int:
    """This process's global rank, 0 outside torchrun: only rank 0 talks to the user."""
    env = torchrun_env()
    return 0 if env is None else env[0]


def _device_for(requested: str, local_rank: int) -> torch.device:
    device = resolve_device(requested)
    if device.type == "cuda":
        if device.index is not None and device.index != local_rank:
            raise ValueError(f"under torchrun each process uses cuda:LOCAL_RANK (here cuda:{local_rank}); "
                             f"use --device cuda or auto, not {requested}")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                             "visible; start at most one process per GPU (--nproc_per_node)")
        return torch.device("cuda", local_rank)
    if device.type == "mps":
        raise ValueError("distributed training supports CUDA (NCCL) and CPU (gloo), not MPS; use --device cpu")
    return device


@contextlib.contextmanager
def initialize(requested_device: str = "auto", timeout_minutes: float = 30.0) -> Iterator[DistContext | None]:
    """Join the torchrun job for the duration of the block; yields None (and does nothing) outside torchrun.

    A process group that the caller initialised already is used as it is and left open.
    """
    env = torchrun_env()
    if env is None:
        yield None
        return
    rank, world_size, local_rank = env
    device = _device_for(requested_device, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owned = not dist.is_initialized()
    if owned:
        kwargs: dict[str, Any] = {"backend": backend, "timeout": _dt.timedelta(minutes=timeout_minutes)}
        if device.type == "cuda":
            torch.cuda.set_device(device)
            if "device_id" in inspect.signature(dist.init_process_group).parameters:  # torch >= 2.3
                kwargs["device_id"] = device  # binds NCCL to this GPU eagerly
        dist.init_process_group(**kwargs)
    else:
        backend = dist.get_backend()
    try:
        yield DistContext(rank, world_size, local_rank, device, backend)
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


# -- small collectives -----------------------------------------------------------------------------


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x, on every rank. Each rank's loss depends on y, so the gradient of the
    sum of the ranks' losses with respect to this rank's x is the sum over ranks of dL_r/dy: an
    all-reduce again. (DDP then averages parameter gradients, which gives the global objective.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, differentiable (see ``_AllReduceSum``); identity outside DDP or with one rank."""
    if not active() or dist.get_world_size() == 1:
        return tensor
    return _AllReduceSum.apply(tensor)


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats (same keys on every rank) over the ranks, in one all-reduce."""
    if not active() or not values:
        return dict(values)
    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    packed /= dist.get_world_size()
    return dict(zip(keys, packed.tolist()))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any (e.g. one rank was asked to stop)."""
    if not active():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


class PeerFailed(RuntimeError):
    """Another rank failed during setup; that rank reports the cause."""


def raise_if_any_failed(error: BaseException | None) -> None:
    """Setup errors (bad data, an existing run folder) on any rank stop every rank, instead of a hang.

    Raises ``error`` on the rank where it happened and ``PeerFailed`` (or, for input errors, a copy of
    the same error type) on the others.
    """
    if not active():
        if error is not None:
            raise error
        return
    summary = None if error is None else (type(error).__name__, str(error))
    reports = gather_objects(summary)
    if error is not None:
        raise error
    failed = [(rank, r) for rank, r in enumerate(reports) if r is not None]
    if failed:
        rank, (kind, message) = failed[0]
        from ...errors import RamsegInputError

        if kind == "RamsegInputError":
            raise RamsegInputError(f"{message} (reported by rank {rank})")
        if kind in ("ValueError", "FileExistsError", "FileNotFoundError"):
            raise {"ValueError": ValueError, "FileExistsError": FileExistsError,
                   "FileNotFoundError": FileNotFoundError}[kind](f"{message} (reported by rank {rank})")
        raise PeerFailed(f"rank {rank} failed: {kind}: {message}")


def check_same_everywhere(fingerprint: str, what: str) -> None:
    """All ranks must hold the same data (same cases, same order): a mismatch would train garbage."""
    fingerprints = gather_objects(fingerprint)
    if len(set(fingerprints)) > 1:
        differing = [rank for rank, f in enumerate(fingerprints) if f != fingerprints[0]]
        raise ValueError(f"ranks {differing} see different {what} than rank 0; every node must read the same "
                         "dataset (same files, same --domains/--target)")


def state_digests(module: nn.Module) -> dict[str, str]:
    """SHA-256 of the parameters and of the buffers, to show that every replica ended identical."""
    params, buffers = hashlib.sha256(), hashlib.sha256()
    names = {name for name, _ in module.named_parameters()}
    for name, tensor in module.state_dict().items():
        target = params if name in names else buffers
        target.update(name.encode())
        target.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return {"parameters": params.hexdigest(), "buffers": buffers.hexdigest()}


# -- the global-batch objective --------------------------------------------------------------------


def domain_weights(global_domains: Sequence[int], local_domains: Sequence[int], num_domains: int,
                   world_size: int) -> list[float]:
    """Per-domain weights that make the ranks' mean of restoration terms the global one.

    Single process: sum_k MSE_k over each domain's whole sub-batch. Rank r sees n_kr of domain k's n_k
    slots; with weight world_size * n_kr / n_k, the DDP gradient average (1 / world_size) sum_r
    gives sum_k sum_r (n_kr / n_k) MSE_kr = sum_k MSE_k exactly, however the domains fall on ranks.
    A domain with no slot on this rank gets weight 0 (its decoder still runs, on an empty batch).
    """
    total = [0] * num_domains
    local = [0] * num_domains
    for d in global_domains:
        total[int(d)] += 1
    for d in local_domains:
        local[int(d)] += 1
    return [world_size * local[k] / total[k] if local[k] else 0.0 for k in range(num_domains)]


class GlobalBatchSegmentationLoss(nn.Module):
    """``SegmentationLoss`` of the global batch: BCE/CE pixel means plus a soft Dice whose sums span all ranks.

    The formula is MONAI's ``DiceLoss(batch=True)`` as ``SegmentationLoss`` configures it:
    ``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)`` per channel, averaged over channels, with p the
    sigmoid (nested) or the softmax without background (exclusive). The three sums are all-reduced
    with autograd, so each rank's loss is the global Dice and the gradient is the global one too.
    """

    def __init__(self, labels: LabelScheme):
        super().__init__()
        self.labels = labels

    def forward(self, logits: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        if self.labels.kind == "nested":
            target = nested_targets(mask, self.labels)
            probs = torch.sigmoid(logits)
            if weights is None:
                pixel = F.binary_cross_entropy_with_logits(logits, target)
            else:  # partial labels (losses.SegmentationLoss): unannotated channels of a sample drop out
                w = weights.to(logits.dtype)[:, :, None, None].expand_as(target)
                pixel = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum() / w.sum().clamp_min(1)
                probs, target = probs * w, target * w
        else:
            mask = mask.long()
            pixel = F.cross_entropy(logits, mask)
            probs = torch.softmax(logits, dim=1)[:, 1:]
            target = F.one_hot(mask, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
        dims = (0, *range(2, logits.dim()))
        sums = torch.stack([(probs * target).sum(dims), probs.sum(dims), target.sum(dims)])
        sums = all_reduce_sum(sums)
        dice = 1.0 - (2.0 * sums[0] + DICE_SMOOTH) / (sums[1] + sums[2] + DICE_SMOOTH)
        return pixel + dice.mean()


# -- synchronised BatchNorm ------------------------------------------------------------------------


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch over all ranks (any backend).

    Outside an initialised process group, and in eval mode, it is exactly ``nn.BatchNorm2d``. In
    training under DDP each rank contributes (count, mean, M2) of its slice in its own row of a
    (world_size, 1 + 2C) table; one differentiable all-reduce gives every rank every row, and Chan's
    formula combines them (no E[x^2] - E[x]^2 cancellation). A rank with an empty batch contributes
    a zero count; if the global batch is empty (a domain absent from the whole batch) the running
    statistics are left as they are, as single-process training, which never calls that BN, does.

    Every rank must call the layer the same number of times in the same order (an all-reduce each
    forward and each backward); ``RamDsirObjective`` runs every domain's restoration on every rank.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        self._check_input_dim(x)
        rank, world = dist.get_rank(), dist.get_world_size()
        channels = x.shape[1]
        shape = (1, channels) + (1,) * (x.dim() - 2)
        xf = x.float()
        dims = (0, *range(2, x.dim()))
        n_local = x.numel() // channels if channels else 0
        local_mean = xf.sum(dims) / max(n_local, 1)
        local_m2 = (xf - local_mean.view(shape)).pow(2).sum(dims)
        row = torch.cat([xf.new_full((1,), float(n_local)), local_mean, local_m2])
        table = torch.cat([row.new_zeros(rank, row.numel()), row[None], row.new_zeros(world - rank - 1, row.numel())])
        table = all_reduce_sum(table)
        counts, means, m2s = table[:, :1], table[:, 1:channels + 1], table[:, channels + 1:]
        total = counts.sum()
        safe_total = total.clamp_min(1.0)
        mean = (counts * means).sum(0) / safe_total
        var = (m2s + counts * (means - mean).pow(2)).sum(0) / safe_total  # biased, used to normalise
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        out = (xf - mean.view(shape)) * scale.view(shape)
        if self.bias is not None:
            out = out + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                present = total > 0
                self.num_batches_tracked.add_(present.to(self.num_batches_tracked.dtype))
                if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                    factor = 1.0 / self.num_batches_tracked.clamp_min(1).to(mean.dtype)
                else:
                    factor = torch.tensor(self.momentum, dtype=mean.dtype, device=mean.device)
                unbiased = var * total / (total - 1).clamp_min(1.0)
                new_mean = (1 - factor) * self.running_mean + factor * mean.detach()
                new_var = (1 - factor) * self.running_var + factor * unbiased.detach()
                self.running_mean.copy_(torch.where(present, new_mean, self.running_mean))
                self.running_var.copy_(torch.where(present, new_var, self.running_var))
        return out.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` (the domain-specific ones included) by ``SyncBatchNorm2d``.

    The new layers share the old ones' parameters and buffers, so state-dict keys, checkpoints and an
    optimizer built before the conversion all stay valid.
    """
    if type(module) is nn.BatchNorm2d:
        sync = SyncBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        sync._parameters = module._parameters
        sync._buffers = module._buffers
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            module._modules[name] = converted
    return module


def grad_scaler(device: torch.device) -> Any:
    """The loss scaler that fp16 autocast needs (bf16 and fp32 need none)."""
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler(device.type)
    return torch.cuda.amp.GradScaler()


def wrap_ddp(module: nn.Module, context: DistContext) -> nn.Module:
    """DistributedDataParallel around the whole objective (it computes the loss in ``forward``)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.device.index] if context.device.type == "cuda" else None
    # Buffers (BatchNorm running statistics) are synchronised from rank 0 at every forward (the
    # default); every parameter is used in every step (see RamDsirObjective), so no unused-parameter search.
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=False)
