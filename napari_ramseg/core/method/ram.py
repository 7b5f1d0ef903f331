"""Random amplitude mixup (RAM): swap low-frequency Fourier amplitude ("style") between domains.

The phase, which carries the anatomy, is kept, so the segmentation label stays valid.
Everything is batched in torch so that it runs inside the training step.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

DISCRETE_LAMBDAS = tuple(round(0.1 * i, 1) for i in range(1, 11))  # the paper's code: 0.1, ..., 1.0


def window_half_width(height: int, width: int, window_ratio: float) -> int:
    """b = floor(min(H, W) * L): half-width of the centred low-frequency window."""
    return int(math.floor(min(height, width) * window_ratio))


def window_bounds(height: int, width: int, window_ratio: float,
                  half_width: int | None = None) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1), end-exclusive, of the window in the centred (fftshifted) spectrum.

    The window spans centre - b .. centre + b inclusive, which is symmetric about zero frequency, so
    the mixed amplitude stays conjugate-symmetric and the inverse transform stays (nearly) real.
    ``half_width`` gives b in frequency bins (cycles per image) instead of as a fraction of the side.
    """
    b = window_half_width(height, width, window_ratio) if half_width is None else int(half_width)
    ch, cw = height // 2, width // 2
    return max(ch - b, 0), min(ch + b + 1, height), max(cw - b, 0), min(cw + b + 1, width)


def sample_lambda(
    n: int, mode: str = "uniform", generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """One mixing weight per image: U(0, 1) by default, or the paper's discrete set {0.1, ..., 1.0}."""
    if mode == "uniform":
        return torch.rand(n, generator=generator).to(device)
    if mode == "discrete":
        idx = torch.randint(len(DISCRETE_LAMBDAS), (n,), generator=generator)
        return torch.tensor(DISCRETE_LAMBDAS)[idx].to(device)
    raise ValueError(f"lambda mode must be 'uniform' or 'discrete', not {mode!r}")


def amplitude_mixup(
    images: torch.Tensor,
    partners: torch.Tensor,
    lam: torch.Tensor | float,
    window_ratio: float = 0.1,
    clip: tuple[float, float] | None = (-1.0, 1.0),
) -> torch.Tensor:
    """Mix ``lam * A + (1 - lam) * A_partner`` inside the low-frequency window, keep the phase.

    images, partners: (B, C, H, W) of the same shape; lam: scalar or (B,), one value per image shared
    by its channels. Returns a real tensor of the input's shape and dtype, clipped to ``clip``.
    """
    if images.shape != partners.shape:
        raise ValueError(f"images {tuple(images.shape)} and partners {tuple(partners.shape)} differ in shape")
    return mix_amplitude(images, window_amplitude(partners, window_ratio), lam, window_ratio, clip)


def window_amplitude(images: torch.Tensor, window_ratio: float = 0.1, half_width: int | None = None) -> torch.Tensor:
    """|FFT| of (B, C, H, W) images inside the centred low-frequency window, (B, C, 2b + 1, 2b + 1), float32."""
    height, width = images.shape[-2:]
    r0, r1, c0, c1 = window_bounds(height, width, window_ratio, half_width)
    return torch.fft.fftshift(torch.fft.fft2(images.float()), dim=(-2, -1)).abs()[..., r0:r1, c0:c1]


def mix_amplitude(
    images: torch.Tensor,
    partner_amplitude: torch.Tensor,
    lam: torch.Tensor | float,
    window_ratio: float = 0.1,
    clip: tuple[float, float] | None = (-1.0, 1.0),
    half_width: int | None = None,
) -> torch.Tensor:
    """RAM's transform with the partner given by its amplitude alone: ``lam * A + (1 - lam) * A_partner``
    inside the window, the image's own phase kept. :func:`amplitude_mixup` is this with a partner image;
    test-time adaptation (``core/inference/adapt/``) runs it towards amplitudes made from the stored source spectra.

    partner_amplitude: the centred window, (B or 1, C, 2b + 1, 2b + 1) (or broadcastable), in the
    unnormalised FFT's units at the images' size. Differentiable in both the images and the partner.
    """
    dtype = images.dtype
    height, width = images.shape[-2:]
    # FFTs in float32: bf16/fp16 FFTs are not supported on every backend, and the amplitude needs the range.
    spectrum = torch.fft.fftshift(torch.fft.fft2(images.float()), dim=(-2, -1))
    amplitude, phase = spectrum.abs(), spectrum.angle()

    lam_t = torch.as_tensor(lam, dtype=torch.float32, device=images.device).reshape(-1, 1, 1, 1)
    r0, r1, c0, c1 = window_bounds(height, width, window_ratio, half_width)
    window = lam_t * amplitude[..., r0:r1, c0:c1] + (1 - lam_t) * partner_amplitude
    # Padded back to the full spectrum and selected (rather than written into a copy in place), so the
    # learned prompt's graph stays differentiable; the values are exactly those of an in-place write.
    inside = torch.zeros(height, width, dtype=torch.bool, device=images.device)
    inside[r0:r1, c0:c1] = True
    mixed = torch.where(inside, F.pad(window, (c0, width - c1, r0, height - r1)), amplitude)

    rebuilt = torch.polar(mixed, phase)
    out = torch.fft.ifft2(torch.fft.ifftshift(rebuilt, dim=(-2, -1))).real
    if clip is not None:
        out = out.clamp(*clip)
    return out.to(dtype)


def log_amplitude_spectrum(image: np.ndarray) -> np.ndarray:
    """Centred log(1 + |FFT|) of a (C, H, W) or (H, W) image, averaged over channels, for display."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    amp = np.abs(np.fft.fftshift(np.fft.fft2(arr), axes=(-2, -1)))
    return np.log1p(amp).mean(axis=0).astype(np.float32)
