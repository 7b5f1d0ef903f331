"""Adaptation in RAM's own terms: the scan's low-frequency Fourier amplitude, its phase kept.

- ``align`` (training-free) runs RAM's transform (``ram.mix_amplitude``) towards the source amplitude
  that ``model.json`` records (``source_profile``: each source domain's mean low-frequency
  log-amplitude), ``strength`` of the way.
- ``prompt`` (VPTTA's idea, CVPR 2024) learns, per scan, a small additive prompt on the scan's
  low-frequency log-amplitude, the model frozen, so that the BatchNorm input statistics of the
  prompted scan match the source running statistics; warm-started from a memory of recent prompts.

The stored spectra are of images resized to ``profile.side`` x ``profile.side``: bin k is k cycles
per image at every size, and the unnormalised FFT of an image of h x w pixels is (h w) / side^2
times that of its resized copy, so one stored spectrum serves every working size.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from ....errors import RamsegInputError
from ...config import ADAPT, AdaptConfig
from ...shift.domain_fit import Features, distances
from ..predictor import Predictor
from ...method.ram import mix_amplitude, window_amplitude, window_half_width
from ...shift.source_profile import SourceProfile
from .base import Adaptation, Method, register


def profile_of(predictor: Predictor) -> SourceProfile:
    profile = predictor.metadata.source_profile
    if profile is None:
        raise RamsegInputError("this model's model.json records no source profile (its source amplitude "
                               "statistics), so it cannot be adapted in Fourier terms; retrain it, or "
                               "choose --adapt adabn or tent")
    return profile


def half_width(profile: SourceProfile, window: float) -> int:
    """Bins either side of zero frequency the adaptation touches: ``window`` x the profile's side, at
    least 1, at most the profile's own window (nothing is known beyond it)."""
    stored = window_half_width(profile.side, profile.side, profile.window_ratio)
    return int(min(stored, max(1, int(np.floor(profile.side * window)))))


def source_log_spectrum(profile: SourceProfile, features: Features, towards: str) -> tuple[np.ndarray, str]:
    """(3, G, G) mean log(1 + |FFT|) to adapt towards and the domain(s) it is: the nearest source
    domain to the scan (the fit check's distance), or all of them weighted by their image counts."""
    if towards == "nearest":
        dist = distances(profile, features)
        name = min(dist, key=lambda k: dist[k][0])
        return profile.spectrum(name), name
    if towards == "all":
        counts = np.array([d.count for d in profile.domains.values()], dtype=np.float64)
        stack = np.stack([d.spectrum_mean for d in profile.domains.values()])
        return np.tensordot(counts / counts.sum(), stack, axes=1).astype(np.float32), "+".join(profile.domains)
    raise ValueError(f"towards must be 'nearest' or 'all', not {towards!r}")


def source_amplitude(profile: SourceProfile, log_spectrum: np.ndarray, b: int, height: int, width: int) -> torch.Tensor:
    """The stored spectrum's central (2b + 1)^2 bins as an amplitude at an h x w image's scale,
    (1, 3, 2b + 1, 2b + 1), ready for ``ram.mix_amplitude``."""
    centre = log_spectrum.shape[-1] // 2
    window = log_spectrum[:, centre - b:centre + b + 1, centre - b:centre + b + 1]
    scale = height * width / float(profile.side * profile.side)
    return torch.from_numpy(np.expm1(window.astype(np.float32)) * scale)[None]


def _window_fits(b: int, height: int, width: int) -> bool:
    return 2 * b + 1 <= min(height, width)


@register
class StyleAlign(Method):
    name = "align"
    settings = ("window", "strength", "towards")
    summary = "training-free: move the scan's low-frequency amplitude towards the model's sources (RAM's transform)"
    changes_input = True
    training_free = True

    def adapt(self, predictor: Predictor, inputs: torch.Tensor, features: Features) -> Adaptation:
        profile = profile_of(predictor)
        b = half_width(profile, self.config.window)
        log_spectrum, towards = source_log_spectrum(profile, features, self.config.towards)
        strength = float(self.config.strength)
        info = {"towards": towards, "half_width_bins": b, "strength": strength}

        def transform(x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2:]
            if not _window_fits(b, h, w):
                return x
            target = source_amplitude(profile, log_spectrum, b, h, w).to(x.device)
            # RAM mixes lam * A + (1 - lam) * A_partner; here the partner is the source amplitude
            return mix_amplitude(x, target, 1.0 - strength, half_width=b)

        return Adaptation(predictor, transform, info)


def apply_prompt(x: torch.Tensor, prompt: torch.Tensor, b: int, clip: tuple[float, float] | None = (-1.0, 1.0)
                 ) -> torch.Tensor:
    """The scan with its low-frequency log-amplitude shifted by ``prompt`` ((1, C, 2b + 1, 2b + 1)),
    its phase kept: RAM's transform with the prompted amplitude as the partner (lambda 0)."""
    amplitude = window_amplitude(x, half_width=b)
    return mix_amplitude(x, amplitude * torch.exp(prompt), 0.0, clip=clip, half_width=b)


def bn_inputs(model: torch.nn.Module) -> list[torch.nn.BatchNorm2d]:
    """The segmentation path's BatchNorm layers (encoder and decoder; not DSIR's restoration decoder)."""
    return [m for part in (model.encoder, model.decoder) for m in part.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def crops(x: torch.Tensor, side: int, stride: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``side`` x ``side`` crop per image (the whole image, cut to the stride, when smaller)."""
    h, w = x.shape[-2:]
    ch, cw = min(side, h) // stride * stride or h, min(side, w) // stride * stride or w
    if (ch, cw) == (h, w):
        return x
    top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    return x[..., top:top + ch, left:left + cw]


class _StatsLoss:
    """VPTTA's objective: per segmentation-path BatchNorm, ||mean - running_mean|| + ||std - running_std||
    of its input over the batch, summed over the layers; collected by forward pre-hooks."""

    def __init__(self, model: torch.nn.Module):
        self.layers = bn_inputs(model)
        self.terms: list[torch.Tensor] = []
        self.handles = [m.register_forward_pre_hook(self._hook) for m in self.layers]

    def _hook(self, module: torch.nn.BatchNorm2d, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].float()
        mean = x.mean(dim=(0, 2, 3))
        std = (x.var(dim=(0, 2, 3), unbiased=False) + module.eps).sqrt()
        self.terms.append(torch.linalg.vector_norm(mean - module.running_mean)
                          + torch.linalg.vector_norm(std - (module.running_var + module.eps).sqrt()))

    def pop(self) -> torch.Tensor:
        total = torch.stack(self.terms).sum()
        self.terms = []
        return total

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@register
class LowFrequencyPrompt(Method):
    name = "prompt"
    settings = ("window", "prompt_steps", "prompt_lr", "memory_size", "memory_neighbours", "crop")
    summary = ("learned per scan: a low-frequency amplitude prompt fitted so the BatchNorm input statistics "
               "match the source ones (model frozen; warm-started from recent scans)")
    changes_input = True
    training_free = False

    def __init__(self, config: AdaptConfig = ADAPT):
        super().__init__(config)
        self.memory: deque[tuple[np.ndarray, torch.Tensor]] = deque(maxlen=max(1, self.config.memory_size))

    def warm_start(self, key: np.ndarray, shape: tuple[int, ...]) -> tuple[torch.Tensor, int]:
        """The mean of the prompts of the nearest recent scans in style (zeros with an empty memory)."""
        if not self.memory:
            return torch.zeros(shape), 0
        dist = np.array([np.linalg.norm(k - key) for k, _ in self.memory])
        nearest = np.argsort(dist)[: max(1, self.config.memory_neighbours)]
        prompts = [self.memory[i][1] for i in nearest if self.memory[i][1].shape == shape]
        if not prompts:
            return torch.zeros(shape), 0
        return torch.stack(prompts).mean(0), len(prompts)

    def adapt(self, predictor: Predictor, inputs: torch.Tensor, features: Features) -> Adaptation:
        profile = profile_of(predictor)
        b = half_width(profile, self.config.window)
        h, w = inputs.shape[-2:]
        key = features.spectrum.ravel().astype(np.float32)
        start, warm = self.warm_start(key, (1, inputs.shape[1], 2 * b + 1, 2 * b + 1))
        info = {"half_width_bins": b, "steps": self.config.prompt_steps, "warm_start_from": warm}
        if not _window_fits(b, h, w):
            return Adaptation(predictor, None, {**info, "skipped": "image smaller than the window"})
        model = predictor.model
        device = predictor.device
        prompt = start.clone().to(device).requires_grad_(True)
        optimiser = torch.optim.Adam([prompt], lr=self.config.prompt_lr)
        generator = torch.Generator().manual_seed(self.config.seed)
        x = inputs.to(device).float()
        loss_fn = _StatsLoss(model)
        was_training = model.training
        requires = [p.requires_grad for p in model.parameters()]
        losses = []
        try:
            model.eval()  # the source running statistics normalise; only the prompt learns
            for p in model.parameters():
                p.requires_grad_(False)
            for _ in range(max(0, self.config.prompt_steps)):
                optimiser.zero_grad(set_to_none=True)
                model(crops(apply_prompt(x, prompt, b), self.config.crop, model.stride, generator))
                loss = loss_fn.pop()
                loss.backward()
                optimiser.step()
                losses.append(round(float(loss.detach()), 5))
        finally:
            loss_fn.close()
            for p, r in zip(model.parameters(), requires):
                p.requires_grad_(r)
            model.train(was_training)
        learned = prompt.detach().cpu()
        self.memory.append((key, learned))
        info["loss"] = losses
        info["prompt_abs_mean"] = round(float(learned.abs().mean()), 5)
        return Adaptation(predictor, lambda t: apply_prompt(t, learned.to(t.device), b), info)
