"""Does a scan look like the data a model was trained on? Source-domain profiles and the fit score.

``model.json``'s ``source_profile`` (``core/shift/source_profile.py``: the record, written and read back)
holds per source domain: colour or grey; 2D images or slices of volumes; intensity statistics after
normalisation; and the mean and spread of the low-frequency log-amplitude spectrum, RAM's own notion
of style (the window of ``ram.window_bounds``, on images resized to ``FitConfig.style_side``:
``SourceProfile.spectrum(domain)`` is (3, G, G), for reuse). This module computes it from training
samples (:func:`profile_domains`) and scores scans against it.

:func:`fit_score` scores a new image ``1 / (1 + D)``, D the RMS distance in source standard
deviations to the nearest source domain. Below the threshold set from the source-validation cases
alone (:func:`calibrate`), or for another kind of image, it says what differs in one sentence. An
older ``model.json`` gets only a kind check, where its data format implies one (SAML, DoFE).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ...errors import RamsegInputError
from ..config import FIT, PreprocessConfig
from ..data.layouts import LAYOUTS
from ..data.preprocess import to_model_channels, volume_to_slices_25d
from ..method.ram import window_bounds
from ..data.geometry import resize_image, working_shape
from .source_profile import CHANNELS, DomainProfile, SourceProfile, kind_words

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class Features:
    """What one image (or a whole volume, averaged over its slices) looks like."""

    spectrum: np.ndarray  # (3, G, G) log(1 + |FFT|) inside the low-frequency window
    intensity: np.ndarray  # (len(source_profile.INTENSITY_NAMES),)
    colour: bool
    volume: bool


@dataclass(frozen=True)
class FitResult:
    """How well an image fits a model's source domains; ``differs`` is '' when it fits."""

    fits: bool
    score: float | None  # None: the model records no profile
    threshold: float | None
    kind: str  # "colour 2D image", "grey 2D image" or "grey 3D volume"
    differs: str = ""
    nearest_domain: str | None = None
    distance: float | None = None  # D, in source standard deviations
    check: str = "profile"  # "profile", "kind" (an older model.json: only the kind), "none"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# ------------------------------------------------------------------------------------ features


def batch_features(x: torch.Tensor, side: int, window_ratio: float, preprocess: PreprocessConfig | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3, H, W) normalised images -> spectra (N, 3, G, G), intensities (N, K), colour flags (N,).

    With ``preprocess`` the images go through the model's working scale, as training sees them (a
    no-op for training samples, loaded at that scale), where it is coarser than ``side``: elsewhere
    it changes the ``side`` x ``side`` image only by interpolation, at the cost of a large resize.
    """
    x = x.float()
    if preprocess is not None:
        shape = working_shape(*x.shape[-2:], preprocess)
        if min(shape) < side:
            x = resize_image(x, shape)
    x = resize_image(x, (side, side))
    amp = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)).abs()
    r0, r1, c0, c1 = window_bounds(side, side, window_ratio)
    spectra = torch.log1p(amp[..., r0:r1, c0:c1]).double().numpy()
    flat = x.flatten(1)
    intensity = torch.cat([flat.mean(1, keepdim=True), flat.std(1, keepdim=True), _quantiles(flat),
                           x.mean(dim=(-2, -1))], dim=1).double().numpy()
    spread = ((x[:, 0] - x[:, 1]).abs().mean(dim=(-2, -1)) + (x[:, 1] - x[:, 2]).abs().mean(dim=(-2, -1))) / 2
    return spectra, intensity, (spread > FIT.colour_tolerance).numpy()


def _quantiles(flat: torch.Tensor) -> torch.Tensor:
    """(N, n) -> (N, len(_QUANTILES)), torch.quantile's linear rule by partial sorting (a third of its time)."""
    a, n = flat.numpy(), flat.shape[1]
    pos = np.array(_QUANTILES) * (n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    part = np.partition(a, sorted(set(lo) | set(hi)), axis=1)
    return torch.from_numpy(part[:, lo] + (pos - lo) * (part[:, hi] - part[:, lo])).to(flat.dtype)


def _even(n: int, k: int) -> list[int]:
    """At most k indices spread evenly over 0..n-1."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, k))})


def image_features(image: np.ndarray, is_volume: bool, side: int = FIT.style_side,
                   window_ratio: float = 0.1, preprocess: PreprocessConfig | None = None) -> Features:
    """A raw 2D image ((H, W) or (H, W, C)) or volume ((Z, Y, X)), normalised as for prediction."""
    try:
        if is_volume:
            x = volume_to_slices_25d(image, _even(np.shape(image)[0], FIT.max_slices))
        else:
            # A photograph many times the style grid is first thinned by a whole stride (scores move
            # by < 0.001 on HRF's 3504x2336 photographs, and its normalisation costs a ninth)
            step = max(1, min(image.shape[:2]) // (4 * side))
            x = to_model_channels(image[::step, ::step], CHANNELS)[None]
    except ValueError as exc:
        raise RamsegInputError(str(exc)) from None
    spectra, intensity, colour = batch_features(torch.from_numpy(x), side, window_ratio, preprocess)
    return Features(spectra.mean(0), intensity.mean(0), bool(colour.any()) and not is_volume, is_volume)


def _sample_is_volume(sample: Any) -> bool:
    return getattr(sample, "slice_index", None) is not None


def case_features(samples: Sequence[Any], side: int, window_ratio: float,
                  preprocess: PreprocessConfig | None = None) -> Features:
    """One case from its loaded samples (a 2D image, or a volume's 2.5D slices), as :func:`image_features` sees it."""
    volume = _sample_is_volume(samples[0])
    picked = [samples[j] for j in _even(len(samples), FIT.max_slices)] if volume else samples[:1]
    x = torch.stack([torch.as_tensor(np.asarray(s.image, dtype=np.float32)) for s in picked])
    spectra, intensity, colour = batch_features(x, side, window_ratio, preprocess)
    return Features(spectra.mean(0), intensity.mean(0), bool(colour.any()) and not volume, volume)


# ------------------------------------------------------------------------------------- profiles


def profile_domains(samples: Iterable[Any], preprocess: PreprocessConfig | None = None,
                    window_ratio: float = 0.1, side: int = FIT.style_side,
                    description: str | None = None) -> SourceProfile:
    """Profile loaded training samples (``dataset.Sample``: image (3, H, W) in [-1, 1], domain, and for
    volume slices slice_index and spacing) per domain, in order of appearance. The threshold is the
    config default until :func:`calibrate` sets it from validation cases."""
    acc: dict[str, dict[str, Any]] = {}
    for s in samples:
        a = acc.setdefault(s.domain, {"n": 0, "colour": 0, "volume": 0, "spacing": [],
                                      "s1": 0.0, "s2": 0.0, "i1": 0.0, "i2": 0.0})
        image = torch.as_tensor(np.asarray(s.image, dtype=np.float32))
        spectra, intensity, colour = batch_features(image[None], side, window_ratio, preprocess)
        volume = _sample_is_volume(s)
        a["n"] += 1
        a["colour"] += int(colour[0] and not volume)
        a["volume"] += int(volume)
        a["s1"] = a["s1"] + spectra[0]
        a["s2"] = a["s2"] + spectra[0] ** 2
        a["i1"] = a["i1"] + intensity[0]
        a["i2"] = a["i2"] + intensity[0] ** 2
        spacing = getattr(s, "spacing", None)
        if volume and spacing is not None and len(spacing) >= 2:
            h, w = image.shape[-2:]
            wh, ww = working_shape(h, w, preprocess) if preprocess is not None else (h, w)
            a["spacing"].append((float(spacing[-2]) * h / wh, float(spacing[-1]) * w / ww))
    if not acc:
        raise ValueError("no samples to profile")
    domains = {}
    for name, a in acc.items():
        n = a["n"]
        spacing = tuple(float(np.median([s[i] for s in a["spacing"]])) for i in range(2)) if a["spacing"] else None
        domains[name] = DomainProfile(
            count=n, colour=a["colour"] * 2 > n, volume=a["volume"] * 2 > n,
            spectrum_mean=a["s1"] / n, spectrum_std=np.sqrt(np.maximum(a["s2"] / n - (a["s1"] / n) ** 2, 0.0)),
            intensity_mean=a["i1"] / n, intensity_std=np.sqrt(np.maximum(a["i2"] / n - (a["i1"] / n) ** 2, 0.0)),
            spacing=spacing)
    return SourceProfile(domains, side, window_ratio, FIT.default_threshold,
                         {"method": "default", "threshold": FIT.default_threshold}, description)


def group_cases(samples: Iterable[Any]) -> dict[tuple[str, str], list[Any]]:
    """Loaded samples -> {(domain, case name): samples in slice order}."""
    cases: dict[tuple[str, str], list[Any]] = {}
    for s in samples:
        cases.setdefault((s.domain, s.name), []).append(s)
    for group in cases.values():
        group.sort(key=lambda s: getattr(s, "slice_index", None) or 0)
    return cases


def calibrate(profile: SourceProfile, val_samples: Iterable[Any], preprocess: PreprocessConfig | None = None,
              margin: float = FIT.margin) -> SourceProfile:
    """Set the threshold to ``margin`` x the lowest score of the source-validation cases (only those:
    never a target domain). Without validation cases the config default stays."""
    cases = group_cases(val_samples)
    if not cases:
        return profile
    scores = [judge(profile, case_features(group, profile.side, profile.window_ratio, preprocess)).score
              for group in cases.values()]
    lowest = float(min(scores))
    threshold = margin * lowest
    calibration = {"method": "source_validation", "cases": len(scores), "lowest_score": round(lowest, 4),
                   "median_score": round(float(np.median(scores)), 4), "margin": margin,
                   "threshold": round(threshold, 4)}
    return replace(profile, threshold=threshold, calibration=calibration)


# -------------------------------------------------------------------------------------- scoring


def profile_sources(samples: Iterable[Any], val_samples: Iterable[Any], preprocess: PreprocessConfig | None = None,
                    window_ratio: float = 0.1, description: str | None = None) -> SourceProfile:
    """What a run's source domains look like (:func:`profile_domains` of its training samples), with the
    fit threshold from its source-validation cases only (:func:`calibrate`; never a target domain)."""
    profile = profile_domains(samples, preprocess, window_ratio, description=description)
    return calibrate(profile, val_samples, preprocess)


def distances(profile: SourceProfile, features: Features) -> dict[str, tuple[float, float, float]]:
    """Per source domain: (D, style part, intensity part), RMS z-scores against its own spread."""
    out = {}
    for name, d in profile.domains.items():
        z_s = (features.spectrum - d.spectrum_mean) / np.sqrt(d.spectrum_std ** 2 + FIT.spectrum_sd_floor ** 2)
        z_i = (features.intensity - d.intensity_mean) / np.sqrt(d.intensity_std ** 2 + FIT.intensity_sd_floor ** 2)
        style, intensity = float(np.sqrt(np.mean(z_s ** 2))), float(np.sqrt(np.mean(z_i ** 2)))
        out[name] = (math.sqrt((style ** 2 + intensity ** 2) / 2), style, intensity)
    return out


def judge(profile: SourceProfile, features: Features) -> FitResult:
    """Score features against a profile, and say what differs when they do not fit."""
    dist = distances(profile, features)
    nearest = min(dist, key=lambda k: dist[k][0])
    d, style, intensity = dist[nearest]
    score = 1.0 / (1.0 + d)
    kind = kind_words(features.colour, features.volume)
    kind_ok = (features.colour, features.volume) in {(p.colour, p.volume) for p in profile.domains.values()}
    fits = kind_ok and score >= profile.threshold
    differs = ""
    if not fits:
        numbers = f"fit {score:.2f}, threshold {profile.threshold:.2f}"
        if kind_ok:
            what = "low-frequency style (Fourier amplitude)" if style >= intensity else "intensity distribution"
            head = f"{kind} whose {what} is far from the model's sources ({numbers})"
        else:
            head = f"{kind} ({numbers})"
        differs = f"{head}; the model was trained on {profile.sources_text()}"
    return FitResult(fits, score, profile.threshold, kind, differs, nearest, d)


def _recorded_kinds(metadata: Any) -> set[tuple[bool, bool]] | None:
    """(colour, volume) kinds an older model.json implies through its data format; None if it does not."""
    data = (getattr(metadata, "extra", None) or {}).get("data")
    fmt = data.get("format") if isinstance(data, dict) else None
    kinds = LAYOUTS[fmt].image_kinds if isinstance(fmt, str) and fmt in LAYOUTS else None
    return None if kinds is None else set(kinds)


def fit_score(metadata: Any, image: np.ndarray, is_volume: bool | None = None) -> FitResult:
    """How well ``image`` (as read from a file or a layer) fits the model's source domains.

    ``is_volume=None`` guesses as ``Predictor.predict`` does: 3D with a last axis other than 3 or 4.
    RamsegInputError for an image that cannot be normalised (NaN, wrong shape).
    """
    image = np.asarray(image)
    if is_volume is None:
        is_volume = image.ndim == 3 and image.shape[-1] not in (3, 4)
    profile = getattr(metadata, "source_profile", None)
    if profile is not None:
        preprocess = metadata.config.preprocess
        return judge(profile, image_features(image, is_volume, profile.side, profile.window_ratio, preprocess))
    kinds = _recorded_kinds(metadata)
    features = image_features(image, is_volume)
    kind = kind_words(features.colour, features.volume)
    if kinds is None:
        return FitResult(True, None, None, kind, check="none")
    if (features.colour, features.volume) in kinds:
        return FitResult(True, None, None, kind, check="kind")
    sources = " and ".join(kind_words(c, v) + "s" for c, v in sorted(kinds))
    return FitResult(False, None, None, kind,
                     f"{kind}; the model was trained on {sources} ({', '.join(metadata.domains)}) "
                     "(its model.json has no source profile, so only the kind of image was checked)", check="kind")
