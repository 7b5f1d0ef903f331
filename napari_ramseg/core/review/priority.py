"""Which case should a clinician look at first: review priority, measured (``bench/finetune/gain.py``).

Three orders, each a score per case (highest first):

- ``uncertainty``: the mean predictive entropy of the prediction (``predictor.entropy_map``, in [0, 1]).
  Free: every prediction carries it.
- ``disagreement``: how much the prediction changes when only the scan's *style* changes. The scan is
  seen as it is and through RAM's own transform (``ram.mix_amplitude``) with the low-frequency
  amplitude of each source domain as partner, taken from the spectra the model stored in ``model.json``
  (``source_profile``, ``core/shift/domain_fit.py``); the score is the per-pixel variance of the probabilities
  over those views, averaged over the image. A scan whose segmentation depends on its style is one the
  model has not learnt to see past its camera. It needs no other image: the partner styles travel
  with the model.
- ``representative``: cases that stand for the rest of the folder, spread over it, leaning towards
  the uncertain ones. Each case is described by what the network's encoder makes of it (the bottleneck
  features averaged over the image, the descriptor of Yang et al.'s "suggestive annotation", MICCAI 2017);
  the order is the greedy solution of the weighted facility-location problem that paper uses: every next
  case is the one that most raises ``sum_x w_x max_s sim(x, s)`` over all cases ``x`` (``s`` the cases
  already chosen; ``sim = exp(-(d / m)^2)``, ``d`` the Euclidean distance of the descriptors and ``m``
  their median over all pairs, so two cases at the median distance are e^-1 alike; ``w_x`` the mean
  uncertainty to ``ReviewConfig.uncertainty_power``). The first case is the densest (the most typical);
  an outlier is worth at most its own weight however far it lies, and a near-duplicate of a chosen case
  almost nothing, so neither comes early. Every prefix of the order is the greedy choice of that many
  cases (within 1 - 1/e of the best, the function being submodular). Why: with a handful of corrections,
  uncertainty alone
  picks the hardest, most atypical scans, which teach little about the rest (the cold-start finding of
  Hacohen et al., "Active learning on a budget", ICML 2022; information density, Settles & Craven 2008;
  core sets, Sener & Savarese, ICLR 2018). The fine-tune freezes the encoder by default, so this is the
  space the corrections teach the decoder in.
- ``random``: the comparison any ranking has to beat.

The views, their number and the weighting come from ``config.ReviewConfig``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..config import REVIEW_PRIORITIES, ReviewConfig
from ..inference.adapt.style import source_amplitude
from ..inference.predictor import pad_to_stride
from ..method.ram import mix_amplitude, window_half_width
from ..data.geometry import resize_image, working_shape

REVIEW = ReviewConfig()
RANKINGS = REVIEW_PRIORITIES
# what a report row must carry beyond its prediction for a ranking: "disagreement" costs extra network
# passes, "descriptor" (representative) an encoder pass; the others are free with every prediction
NEEDS = {"disagreement": "disagreement", "representative": "descriptor"}
# set-level rankings: a case's place depends on every other case, so they are ranked once the folder is done
SET_RANKINGS = ("representative",)


def mean_uncertainty(prediction: Any) -> float:
    """Mean normalised predictive entropy of a :class:`~napari_ramseg.core.inference.predictor.Prediction`."""
    return float(np.mean(prediction.entropy))


# ------------------------------------------------------------------------------- style views


def style_views(x: torch.Tensor, profile: Any, lambdas: Sequence[float] = REVIEW.lambdas,
                spreads: Sequence[float] = REVIEW.spreads) -> list[torch.Tensor]:
    """Amplitude-mixed views of one (3, H, W) normalised image: for every source domain, spread and
    lambda, RAM's transform (``ram.mix_amplitude``) with that domain's stored mean log-amplitude,
    shifted by ``spread`` of its standard deviations, as the partner (``adapt.style.source_amplitude``
    brings it to the image's size), inside the stored window."""
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


# ------------------------------------------------------------------------------ descriptors


@torch.no_grad()
def descriptor_prepared(predictor: Any, x: torch.Tensor, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The encoder's bottleneck features of a (3, H, W) prepared input, averaged over the image: (C,).

    ``shape``: the size the network sees it at (default: a 2D image's working scale). In float32 on the
    predictor's device, padded to the network's stride as predictions are."""
    shape = tuple(shape or working_shape(*x.shape[-2:], predictor.preprocess))
    x = pad_to_stride(resize_image(x.float(), shape)[None], predictor.model.stride)
    bottleneck = predictor.model.encode(x.to(predictor.device))[-1]
    return bottleneck.float().mean(dim=(-2, -1))[0].cpu().double().numpy()


def descriptor(predictor: Any, image: np.ndarray, is_volume: bool | None = None,
               spacing: Sequence[float] | None = None, config: ReviewConfig = REVIEW) -> np.ndarray:
    """:func:`descriptor_prepared` of a raw 2D image, or the mean over ``config.max_slices`` evenly spaced
    slices of a (Z, Y, X) volume."""
    image = np.asarray(image)
    if is_volume is None:
        is_volume = image.ndim == 3 and image.shape[-1] not in (3, 4)
    if not is_volume:
        return descriptor_prepared(predictor, predictor.prepare(image))
    depth = image.shape[0]
    picked = sorted({int(round(i)) for i in np.linspace(0, depth - 1, min(depth, config.max_slices))})
    found = []
    for j in picked:
        x = predictor.prepare(image, j)
        found.append(descriptor_prepared(predictor, x, predictor.input_shape(*x.shape[-2:], volume=True,
                                                                             spacing=spacing)))
    return np.mean(found, axis=0)


# ---------------------------------------------------------------------------------- ordering


def representative_order(descriptors: Mapping[str, Sequence[float] | None],
                         uncertainty: Mapping[str, float | None] | None = None,
                         power: float = REVIEW.uncertainty_power) -> list[str]:
    """Case names by greedy weighted facility location over their descriptors (module docstring).
    ``uncertainty``: each case's weight before ``power`` (missing: the mean). Cases without a descriptor
    come last, by name; ties go to the name first in sort order, so the order does not depend on the
    order the cases are given in."""
    names = sorted(n for n, f in descriptors.items() if f is not None and np.all(np.isfinite(f)))
    rest = sorted(set(descriptors) - set(names))
    if not names:
        return rest
    feats = [np.asarray(descriptors[n], dtype=np.float64).ravel() for n in names]
    if len({f.size for f in feats}) > 1:
        raise ValueError("descriptors of different lengths (from different models) cannot be compared")
    feats = np.stack(feats)
    # squared distances through the Gram matrix: (N, N) memory, not (N, N, C), for a folder of many scans
    squared = (feats ** 2).sum(1)
    dist = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2.0 * feats @ feats.T, 0.0))
    np.fill_diagonal(dist, 0.0)
    pairs = dist[np.triu_indices(len(names), 1)]
    scale = float(np.median(pairs)) if pairs.size and np.median(pairs) > 0 else 1.0
    sim = np.exp(-((dist / scale) ** 2))  # [candidate, case], 1 on the diagonal
    weights = np.ones(len(names))
    if uncertainty is not None and power:
        u = np.array([np.nan if uncertainty.get(n) is None else uncertainty[n] for n in names], dtype=np.float64)
        if np.isfinite(u).any() and np.nanmean(u) > 0:
            u = np.where(np.isfinite(u), u, np.nanmean(u))
            weights = np.maximum(u / u.mean(), 1e-6) ** power
    covered = np.zeros(len(names))  # each case's similarity to its closest chosen case
    order: list[int] = []
    for _ in range(len(names)):
        gain = (np.maximum(sim - covered[None, :], 0.0) * weights[None, :]).sum(1)
        gain[order] = -np.inf
        best = int(np.argmax(gain))  # the lowest index among equals: the first name
        order.append(best)
        covered = np.maximum(covered, sim[best])
    return [names[i] for i in order] + rest


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
    """Case names in review order. ``rows``: name -> a report row (``mean_uncertainty``, ``disagreement``,
    and for ``representative`` the case's ``descriptor``)."""
    if method == "random":
        return random_order(list(rows), seed)
    if method == "representative":
        if not any(row.get("descriptor") is not None for row in rows.values()):
            raise ValueError("the representative order needs each case's descriptor (review.descriptor)")
        return representative_order({n: row.get("descriptor") for n, row in rows.items()},
                                    {n: row.get("mean_uncertainty") for n, row in rows.items()})
    column = {"uncertainty": "mean_uncertainty", "disagreement": "disagreement"}.get(method)
    if column is None:
        raise ValueError(f"review priority must be one of {', '.join(RANKINGS)}, not {method!r}")
    return rank_by({name: row.get(column) for name, row in rows.items()})
