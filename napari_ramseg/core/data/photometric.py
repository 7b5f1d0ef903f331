"""Photometric augmentation beside RAM: brightness, contrast, gamma, colour balance, blur and noise.

RAM changes a source image's low-frequency amplitude towards another *source* camera's; a new camera
also differs in gamma, sharpness and noise, which no source may show. These draws widen the styles a
model is trained on without any new data. Each image is changed with probability ``p`` (the recipe's
``photometric`` option; 0 switches it off and leaves the random stream untouched). The ranges are those
of common fundus and MRI augmentation pipelines (nnU-Net's and MONAI's defaults are of this size).

A draw is a plain tuple of numbers, made from the pool's generator before any pixel is touched, so that
every rank of a distributed run draws the same global batch (core/method/sampling.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

BRIGHTNESS = 0.1  # added, in the [-1, 1] image range
CONTRAST = (0.75, 1.25)  # gain about the image mean
GAMMA = (0.7, 1.5)  # drawn log-uniformly, applied in [0, 1]
COLOUR = (0.9, 1.1)  # a gain per channel: the camera's white balance
BLUR_P, BLUR_SIGMA = 0.2, (0.5, 1.5)  # Gaussian, in pixels of the working scale
NOISE_P, NOISE_STD = 0.2, (0.0, 0.04)


@dataclass(frozen=True)
class PhotometricDraw:
    brightness: float
    contrast: float
    gamma: float
    colour: tuple[float, ...]
    blur_sigma: float  # 0: none
    noise_std: float  # 0: none
    noise_seed: int


def draw_photometric(rng: np.random.Generator, p: float, channels: int) -> PhotometricDraw | None:
    """One image's photometric change, or None (with probability 1 - p; p = 0 draws nothing at all)."""
    if p <= 0.0 or rng.random() >= p:
        return None
    gamma = math.exp(rng.uniform(math.log(GAMMA[0]), math.log(GAMMA[1])))
    colour = tuple(float(g) for g in rng.uniform(*COLOUR, size=channels)) if channels == 3 else (1.0,) * channels
    blur = float(rng.uniform(*BLUR_SIGMA)) if rng.random() < BLUR_P else 0.0
    noise = float(rng.uniform(*NOISE_STD)) if rng.random() < NOISE_P else 0.0
    return PhotometricDraw(float(rng.uniform(-BRIGHTNESS, BRIGHTNESS)), float(rng.uniform(*CONTRAST)), gamma,
                           colour, blur, noise, int(rng.integers(0, 2**31 - 1)))


def apply_photometric(image: torch.Tensor, draw: PhotometricDraw | None) -> torch.Tensor:
    """(C, H, W) float image in [-1, 1] -> the changed image, clipped to [-1, 1]; None returns it as is."""
    if draw is None:
        return image
    x = (image + 1.0) / 2.0  # gamma acts on [0, 1]
    x = x.clamp(0.0, 1.0) ** draw.gamma
    x = x * torch.tensor(draw.colour, dtype=x.dtype)[:, None, None]
    mean = x.mean()
    x = (x - mean) * draw.contrast + mean + draw.brightness / 2.0
    if draw.blur_sigma > 0:
        x = _gaussian_blur(x, draw.blur_sigma)
    if draw.noise_std > 0:
        generator = torch.Generator().manual_seed(draw.noise_seed)
        x = x + torch.randn(x.shape, generator=generator, dtype=x.dtype) * (draw.noise_std / 2.0)
    return (x * 2.0 - 1.0).clamp(-1.0, 1.0)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    y = F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
    return y[0]
