"""Device choice and mixed precision: auto picks CUDA, then MPS, then CPU.

``DEVICE_CHOICES`` is the one device list (the CLI's ``--device``, every dock's device picker).
torch is imported by the functions, not by this module, so a dock can list the choices without
loading torch.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# auto: bf16 where it is faster (CUDA, CPUs with native bf16), fp16 on CUDA without bf16, else fp32.
# fp32 everywhere it must be exact (tests comparing paths); bf16 to use (or test) reduced precision
# on any CPU: without native bf16 it is slow, but the results are the same as on a bf16 CPU.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> dict[str, bool]:
    """Each of ``DEVICE_CHOICES``: whether this machine has it (``auto`` always)."""
    import torch

    return {"auto": True, "cpu": True, "cuda": torch.cuda.is_available(), "mps": _mps_available()}


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``auto``/``cpu``/``cuda``/``mps``; a clear error if the named one is absent."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu or auto")
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise ValueError("device 'mps' was requested but Apple MPS is not available; use --device cpu or auto")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 matrix support (AVX-512 BF16 or AMX), where bf16 is faster."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for plain fp32.

    ``auto`` picks the reduced precision that pays off on this device."""
    import torch

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
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype)
