"""Which case should a clinician look at first: review priority, measured (``bench/finetune_gain.py``).

Three orders, each a score per case (highest first):

- ``uncertainty``: the mean predictive entropy of the prediction (``infer.entropy_map``, in [0, 1]).
  Free: every prediction carries it.
- ``disagreement``: how much the prediction changes when only the scan's *style* changes. The scan is
  seen as it is and through RAM's own transform (``ram.mix_amplitude``) with the low-frequency
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
from .ram import mix_amplitude, window_half_width
from .sampling import resize_image

REVIEW = ReviewConfig()
RANKINGS = REVIEW_PRIORITIES


def mean_uncertainty(prediction: Any) -> float:
    """Mean normalised predictive entropy of a :class:`~napari_ramseg.core.infer.Prediction`."""
    return float(np.mean(prediction.entropy))


# ------------------------------------------------------------------------------- style views


def style_views(x: torch.Tensor, profile: Any, lambdas: Sequence[float] = REVIEW.lambdas,
                spreads: Sequence[float] = REVIEW.spreads) -> list[torch.Tensor]:
    """Amplitude-mixed views of one (3, H, W) normalised image: for every source domain, spread and
    lambda, RAM's transform (``ram.mix_amplitude``) with that domain's stored mean log-amplitude,
    shifted by ``spread`` of its standard deviations, as the partner (``adapt.style.source_amplitude``
    brings it to the image's size), inside the stored window."""
    from .adapt.style import source_amplitude

    height, width = x.shape[-2:]
    b = min(window_half_width(profile.side, profile.side, profile.window_ratio), (min(height, width) - 1) // 2)
    x = x.float()[None]
    views = []
    for d in profile.domains.values():
        for spread in spreads:
            log_spectrum = np.maximum(d.spectrum_mean + spread * d.spectrum_std, 0.0)  # a log1p is never negative
            partner = source_amplitude(profile, log_spectrum, b, height, width)
            views += [mix_amplitude(x, partner, float(lam), half_width=b)[0] for lam in lambdas]
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
