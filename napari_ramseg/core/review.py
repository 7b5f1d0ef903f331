"""Which case should a clinician look at first: review priority, measured (``bench/finetune_gain.py``).

Three orders, each a score per case (highest first):

- ``uncertainty``: the mean predictive entropy of the prediction (``infer.entropy_map``, in [0, 1]).
  Free: every prediction carries it.
- ``disagreement``: how much the prediction changes when only the scan's *style* changes. The scan is
  seen as it is and through RAM's own transform (``ram.amplitude_mixup``) with the low-frequency
  amplitude of each source domain as partner, taken from the spectra the model stored in ``model.json``
  (``source_profile``, ``core/domain_fit.py``); the score is the per-pixel variance of the probabilities
  over those views, averaged over the image. A scan whose segmentation depends on its style is one the
  model has not learnt to see past its camera. It needs no other image: the partner styles travel
  with the model.
- ``random``: the comparison any ranking has to beat.

The views and their number come from ``config.ReviewConfig``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .config import REVIEW_PRIORITIES, ReviewConfig
from .ram import amplitude_mixup, window_bounds
from .sampling import resize_image

REVIEW = ReviewConfig()
RANKINGS = REVIEW_PRIORITIES


def mean_uncertainty(prediction: Any) -> float:
    """Mean normalised predictive entropy of a :class:`~napari_ramseg.core.infer.Prediction`."""
    return float(np.mean(prediction.entropy))


# ------------------------------------------------------------------------------- style views


def partner_amplitude(profile: Any, domain: str, height: int, width: int, spread: float = 0.0) -> np.ndarray:
    """A source domain's stored low-frequency amplitude, (3, G, G), scaled to an image of ``height`` x
    ``width`` pixels: the profile holds ``log1p|FFT|`` of images resized to ``side`` x ``side``, whose
    bin (u, v) is the same number of cycles per image as at any other size, and whose amplitude grows
    with the pixel count. ``spread`` shifts the log-amplitude by that many of the domain's standard
    deviations."""
    d = profile.domains[domain]
    log_amp = np.asarray(d.spectrum_mean, np.float64) + spread * np.asarray(d.spectrum_std, np.float64)
    return (np.expm1(np.maximum(log_amp, 0.0)) * (height * width) / float(profile.side) ** 2).astype(np.float32)


def style_views(x: torch.Tensor, profile: Any, lambdas: Sequence[float] = REVIEW.lambdas,
                spreads: Sequence[float] = REVIEW.spreads) -> list[torch.Tensor]:
    """Amplitude-mixed views of one (3, H, W) normalised image: for every source domain, spread and
    lambda, ``amplitude_mixup(x, partner, lam)`` with a partner image that has the stored amplitude
    inside the stored window (and ``x``'s own outside it, so only the window is mixed)."""
    height, width = x.shape[-2:]
    x = x.float()
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    amplitude, phase = spectrum.abs(), spectrum.angle()
    # the stored window (e.g. 33 x 33 bins at side 160), centred on zero frequency as ram.window_bounds
    grid = next(iter(profile.domains.values())).spectrum_mean.shape[-1]
    half = min(grid // 2, (min(height, width) - 1) // 2)
    ratio = (half + 0.5) / min(height, width)  # RAM's window rule, giving exactly that half-width
    r0, r1, c0, c1 = window_bounds(height, width, ratio)
    crop = slice(grid // 2 - half, grid // 2 + half + 1)
    views = []
    for domain in profile.domains:
        for spread in spreads:
            partner_amp = amplitude.clone()
            stored = partner_amplitude(profile, domain, height, width, spread)[:, crop, crop]
            partner_amp[:, r0:r1, c0:c1] = torch.from_numpy(stored)
            # x's phase with the partner's amplitude: conjugate-symmetric, so the image is real
            partner = torch.fft.ifft2(torch.fft.ifftshift(torch.polar(partner_amp, phase), dim=(-2, -1))).real
            for lam in lambdas:
                views.append(amplitude_mixup(x[None], partner[None], float(lam), ratio)[0])
    return views


def disagreement_prepared(predictor: Any, x: torch.Tensor, shape: tuple[int, int] | None = None,
                          config: ReviewConfig = REVIEW) -> float | None:
    """Variance of the probabilities over ``x`` and its style views, averaged over pixels and channels.

    ``x``: a (3, H, W) input as :meth:`Predictor.prepare` makes it; ``shape`` the size the network sees it
    at (default: a 2D image's working scale). None when the model stores no source spectra."""
    from .sampling import working_shape

    profile = getattr(predictor.metadata, "source_profile", None)
    if profile is None:
        return None
    shape = tuple(shape or working_shape(*x.shape[-2:], predictor.preprocess))
    x = resize_image(x.float(), shape)
    views = [x, *style_views(x, profile, config.lambdas, config.spreads)]
    probs = torch.stack([predictor.predict_prepared(v, shape) for v in views])
    return float(probs.var(dim=0, unbiased=False).mean())


def disagreement(predictor: Any, image: np.ndarray, is_volume: bool | None = None,
                 spacing: Sequence[float] | None = None, config: ReviewConfig = REVIEW) -> float | None:
    """:func:`disagreement_prepared` of a raw 2D image, or the mean over ``config.max_slices`` evenly spaced
    slices of a (Z, Y, X) volume (each with its 2.5D neighbours, as the volume is segmented)."""
    image = np.asarray(image)
    if is_volume is None:
        is_volume = image.ndim == 3 and image.shape[-1] not in (3, 4)
    if not is_volume:
        return disagreement_prepared(predictor, predictor.prepare(image), None, config)
    depth = image.shape[0]
    picked = sorted({int(round(i)) for i in np.linspace(0, depth - 1, min(depth, config.max_slices))})
    scores = []
    for j in picked:
        x = predictor.prepare(image, j)
        shape = predictor.input_shape(*x.shape[-2:], volume=True, spacing=spacing)
        score = disagreement_prepared(predictor, x, shape, config)
        if score is None:
            return None
        scores.append(score)
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------- ordering


def rank_by(scores: Mapping[str, float | None]) -> list[str]:
    """Case names, highest score first; cases without a score last; ties by name."""
    def key(name: str) -> tuple[int, float, str]:
        value = scores[name]
        missing = value is None or not np.isfinite(value)
        return (1 if missing else 0, 0.0 if missing else -float(value), name)

    return sorted(scores, key=key)


def random_order(names: Sequence[str], seed: int = REVIEW.seed) -> list[str]:
    """The names in a random order fixed by ``seed`` (independent of the order they are given in)."""
    names = sorted(names)
    return [names[i] for i in np.random.default_rng(seed).permutation(len(names))]


def review_order(rows: Mapping[str, Mapping[str, Any]], method: str = REVIEW.priority,
                 seed: int = REVIEW.seed) -> list[str]:
    """Case names in review order. ``rows``: name -> a report row (``mean_uncertainty``, ``disagreement``)."""
    if method == "random":
        return random_order(list(rows), seed)
    column = {"uncertainty": "mean_uncertainty", "disagreement": "disagreement"}.get(method)
    if column is None:
        raise ValueError(f"review priority must be one of {', '.join(RANKINGS)}, not {method!r}")
    return rank_by({name: row.get(column) for name, row in rows.items()})
