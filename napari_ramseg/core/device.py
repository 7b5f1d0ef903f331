"""Device choice and mixed precision: auto picks CUDA, then MPS, then CPU."""

from __future__ import annotations

import contextlib
from functools import lru_cache

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# auto: bf16 where it is faster (CUDA, CPUs with native bf16), fp16 on CUDA without bf16, else fp32.
# fp32 everywhere it must be exact (tests comparing paths); bf16 to use (or test) reduced precision
# on any CPU: without native bf16 it is slow, but the results are the same as on a bf16 CPU.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``auto``/``cpu``/``cuda``/``mps``; a clear error if the named one is absent."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu or auto")
        return torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ValueError("device 'mps' was requested but Apple MPS is not available; use --device cpu or auto")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 matrix support (AVX-512 BF16 or AMX), where bf16 is faster."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for plain fp32.

    ``auto`` picks the reduced precision that pays off on this device."""
    precision = (precision or "auto").lower()
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("precision 'bf16' was requested but this GPU has no bf16; use --precision fp16 or auto")
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast for ``dtype``, or a no-op when it is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
