"""The inference fast path: an eval-only copy of the segmentation network with BatchNorm folded away.

At inference BatchNorm is a fixed per-channel affine map (running statistics, never batch ones), so
``BN(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) + beta``.
Folding removes one full read and write of every feature map per layer, which on a CPU is about 5-10 %
of the forward pass on top of channels_last (see bench/speed/benchmark.py). The decoder also applies its 1x1
channel-reducing conv before the bilinear upsampling instead of after (they commute). The fold is computed in float64 and
stored in float32; it changes the logits by about 1e-7 relative, far below anything that moves a label.

:func:`build_fast_model` returns the folded copy, in channels_last on CPU/CUDA, or ``None`` when the
model does not have the layout this module knows (the caller then keeps the plain model). The copy
holds only the encoder, the segmentation decoder and the head; the restoration decoder, which needs
its per-domain BatchNorm, stays on the original model. The original model is never modified.

:func:`use_channels_last` is the training side: it converts a network's parameters to channels_last in
place, so that oneDNN runs every convolution on NHWC data, forward and backward (the fp32 training
step is ~15 % faster on an AVX2 CPU, bench/speed/benchmark.py). Checkpoint writers call ``.contiguous()``.

:func:`tune_cpu_allocator` stops glibc from unmapping and re-faulting the feature maps on every call.

:class:`CompiledModule` wraps ``torch.compile`` as an opt-in extra (``RAMSEG_COMPILE=1``): on this
kind of CPU it gains a further ~10-20 % but compiles for 8-75 s per new input shape, so it is
off by default, and any compile or run failure falls back to the eager module for good.
"""

from __future__ import annotations

import copy
import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..method.model import encoder_features

logger = logging.getLogger(__name__)

__all__ = ["use_channels_last", "fold_conv_bn", "fold_sequential", "FoldedSegNet", "build_fast_model", "CompiledModule",
           "fast_path_enabled", "compile_requested", "tune_cpu_allocator"]

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_ALLOCATOR_TUNED: bool | None = None


def use_channels_last(net: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """``net`` with 4D parameters in channels_last (in place) on CPU/CUDA; other devices unchanged."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    if device.type in ("cpu", "cuda"):
        net.to(memory_format=torch.channels_last)
    return net


def fast_path_enabled() -> bool:
    """``RAMSEG_FAST=0`` turns the folded fast path off (for debugging or A/B timing)."""
    return os.environ.get("RAMSEG_FAST", "1").strip().lower() not in ("0", "false", "no", "off")


def compile_requested() -> bool:
    """``RAMSEG_COMPILE=1`` asks for ``torch.compile`` on top of the folded model (off by default)."""
    return os.environ.get("RAMSEG_COMPILE", "0").strip().lower() in ("1", "true", "yes", "on")


def tune_cpu_allocator(mmap_threshold_mb: int = 128, trim_threshold_mb: int = 512) -> bool:
    """Keep freed feature-map memory in the heap instead of handing it back to the OS (glibc only).

    By default glibc serves the multi-megabyte feature maps of every forward pass with fresh ``mmap``
    calls and returns them with ``munmap``, so each call page-faults its memory in again: ~10-20 %
    of a CPU prediction here went to the kernel (bench/speed/benchmark.py). With these thresholds blocks below
    128 MB come from the heap and up to 512 MB of freed memory stays there for the next call. Peak
    memory is unchanged; what the process keeps between calls grows by at most that much.

    Process-wide and done once; ``RAMSEG_MALLOC_TUNE=0`` leaves the allocator alone. Returns whether
    the setting is in effect.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is not None:
        return _ALLOCATOR_TUNED
    _ALLOCATOR_TUNED = False
    if os.environ.get("RAMSEG_MALLOC_TUNE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold_mb) << 20) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold_mb) << 20) == 1 and ok
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    return ok


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d (with bias) equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    if conv.out_channels != bn.num_features:
        raise ValueError(f"conv has {conv.out_channels} outputs but BatchNorm {bn.num_features} features")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    var = bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    fused.weight.copy_((conv.weight.double() * scale.reshape(-1, 1, 1, 1)).to(conv.weight.dtype))
    fused.bias.copy_(((bias - bn.running_mean.double()) * scale + beta).to(conv.weight.dtype))
    return fused.eval().requires_grad_(False)


def fold_sequential(block: nn.Sequential) -> nn.Sequential:
    """A copy of ``block`` with every Conv2d -> BatchNorm2d pair replaced by one folded Conv2d."""
    children = list(block.children())
    out: list[nn.Module] = []
    i = 0
    while i < len(children):
        module = children[i]
        following = children[i + 1] if i + 1 < len(children) else None
        if isinstance(module, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
            out.append(fold_conv_bn(module, following))
            i += 2
            continue
        if isinstance(module, nn.BatchNorm2d):
            raise ValueError("a BatchNorm2d that does not follow a Conv2d cannot be folded")
        if not isinstance(module, (nn.Conv2d, nn.ReLU, nn.Identity)):
            raise ValueError(f"unexpected layer {type(module).__name__} in a conv block")
        out.append(copy.deepcopy(module))
        i += 1
    return nn.Sequential(*out)


class _FoldedUp(nn.Module):
    def __init__(self, reduce: nn.Conv2d, conv: nn.Sequential):
        super().__init__()
        self.reduce = reduce
        self.conv = conv

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # The 1x1 reduce conv and bilinear upsampling are both linear and the interpolation weights
        # sum to one, so they commute (bias included): reducing first runs the 1x1 conv on a quarter
        # of the pixels and upsamples half the channels. Equal to the original up to rounding.
        x = F.interpolate(self.reduce(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class FoldedSegNet(nn.Module):
    """``RamSegNet.forward`` (encoder + segmentation decoder + head) with BatchNorm folded, eval only."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stride = int(net.stride)
        self.encoder = nn.ModuleList(fold_sequential(block) for block in net.encoder)
        self.decoder = nn.ModuleList(_FoldedUp(copy.deepcopy(block.reduce), fold_sequential(block.conv))
                                     for block in net.decoder)
        self.head = copy.deepcopy(net.head)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "FoldedSegNet":
        if mode:
            raise RuntimeError("FoldedSegNet is inference-only (its BatchNorm is folded into the convolutions)")
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = encoder_features(self.encoder, x)
        x = features[-1]
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            x = block(x, skip)
        return self.head(x)


def build_fast_model(net: nn.Module, device: torch.device, channels_last: bool = True) -> nn.Module | None:
    """The folded inference copy of ``net`` on ``device`` (channels_last where it helps), or None.

    None means the model's layout is not the one this module folds, or the fast path is switched
    off with ``RAMSEG_FAST=0``; the caller should then run ``net`` itself.
    """
    if not fast_path_enabled():
        return None
    try:
        folded = FoldedSegNet(net).to(device)
    except (AttributeError, TypeError, ValueError) as exc:
        logger.info("napari-ramseg: fast path unavailable for this model (%s); using the plain model", exc)
        return None
    if channels_last and device.type in ("cpu", "cuda"):
        folded = folded.to(memory_format=torch.channels_last)
    return folded


class CompiledModule:
    """``torch.compile(module)`` with a permanent fallback to ``module`` on any failure.

    Compilation happens lazily on the first call of each new input shape (about a minute on a small
    CPU), so this is only worth it for long same-shape runs (whole volumes, batch evaluation).
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.failed: str | None = None
        try:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # constant-fold the weights and pre-pack them for oneDNN
            self.compiled = torch.compile(module, dynamic=False)
        except Exception as exc:  # pragma: no cover - depends on the installation
            self.compiled = None
            self.failed = f"{type(exc).__name__}: {exc}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as exc:  # no C++ compiler, unsupported op, ...: stay eager from now on
                self.failed = f"{type(exc).__name__}: {exc}"
                self.compiled = None
                logger.warning("napari-ramseg: torch.compile failed (%s); using the eager fast path", self.failed)
        return self.module(x)
