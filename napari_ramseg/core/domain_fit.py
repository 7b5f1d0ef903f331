"""Does a scan look like the data a model was trained on? Source-domain profiles and the fit score.

``model.json``'s ``source_profile`` records per source domain: colour or grey; 2D images or slices of
volumes; intensity statistics after normalisation; and the mean and spread of the low-frequency
log-amplitude spectrum, RAM's own notion of style (the window of ``ram.window_bounds``, on images
resized to ``FitConfig.style_side``: ``SourceProfile.spectrum(domain)`` is (3, G, G), for reuse).

:func:`fit_score` scores a new image ``1 / (1 + D)``, D the RMS distance in source standard
deviations to the nearest source domain. Below the threshold set from the source-validation cases
alone (:func:`calibrate`), or for another kind of image, it says what differs in one sentence. An
older ``model.json`` gets only a kind check, where its data format implies one (SAML, DoFE).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..errors import RamsegInputError
from .config import FIT, PreprocessConfig
from .layouts import LAYOUTS
from .preprocess import to_model_channels, volume_to_slices_25d
from .ram import window_bounds
from .sampling import resize_image, working_shape

PROFILE_VERSION = 1
CHANNELS = 3  # the model's input channels (checkpoint.IN_CHANNELS)
INTENSITY_NAMES = ("mean", "std", "p05", "p25", "p50", "p75", "p95", "mean_c0", "mean_c1", "mean_c2")
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_MAX_SIDE, _MAX_RATIO = 512, 0.25  # limits on what an untrusted model.json may ask for


@dataclass
class Features:
    """What one image (or a whole volume, averaged over its slices) looks like."""

    spectrum: np.ndarray  # (3, G, G) log(1 + |FFT|) inside the low-frequency window
    intensity: np.ndarray  # (len(INTENSITY_NAMES),)
    colour: bool
    volume: bool


@dataclass(frozen=True)
class DomainProfile:
    count: int  # images; each slice of a volume counts as one
    colour: bool
    volume: bool
    spectrum_mean: np.ndarray  # (3, G, G)
    spectrum_std: np.ndarray
    intensity_mean: np.ndarray  # (len(INTENSITY_NAMES),)
    intensity_std: np.ndarray
    spacing: tuple[float, float] | None = None  # in-plane (y, x) voxel spacing at the working scale


@dataclass(frozen=True)
class SourceProfile:
    domains: dict[str, DomainProfile]
    side: int
    window_ratio: float
    threshold: float
    calibration: dict[str, Any] = field(default_factory=dict)
    description: str | None = None  # e.g. "colour fundus photographs"; else derived from the kinds

    @property
    def spacing(self) -> tuple[float, float] | None:
        """In-plane (y, x) spacing the network saw in training (the source volumes' medians, weighted by
        their slice counts); None when no source domain was made of volumes with a known spacing."""
        found = [d.spacing for d in self.domains.values() if d.spacing is not None]
        if not found:
            return None
        weights = [d.count for d in self.domains.values() if d.spacing is not None]
        return tuple(float(np.average([s[i] for s in found], weights=weights)) for i in range(2))

    def spectrum(self, domain: str) -> np.ndarray:
        """A source domain's mean low-frequency log-amplitude spectrum, (3, G, G) float32."""
        return self.domains[domain].spectrum_mean.astype(np.float32)

    def sources_text(self) -> str:
        kinds = dict.fromkeys(kind_words(d.colour, d.volume) + "s" for d in self.domains.values())
        return f"{self.description or ' and '.join(kinds)} ({', '.join(self.domains)})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PROFILE_VERSION, "side": self.side, "window_ratio": self.window_ratio,
            "threshold": round(self.threshold, 4), "calibration": self.calibration,
            "description": self.description, "intensity_names": list(INTENSITY_NAMES),
            "domains": {name: {
                "count": d.count, "colour": d.colour, "volume": d.volume,
                "spacing": None if d.spacing is None else [round(s, 6) for s in d.spacing],
                "intensity_mean": [round(float(v), 5) for v in d.intensity_mean],
                "intensity_std": [round(float(v), 5) for v in d.intensity_std],
                "spectrum_mean": _encode(d.spectrum_mean), "spectrum_std": _encode(d.spectrum_std),
            } for name, d in self.domains.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, domains: Sequence[str]) -> "SourceProfile":
        """Validate an untrusted ``source_profile``; ValueError says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("source_profile must be an object")
        if data.get("version") != PROFILE_VERSION:
            raise ValueError(f"source_profile version {data.get('version')!r} is not {PROFILE_VERSION}")
        side, ratio = data.get("side"), data.get("window_ratio")
        if isinstance(side, bool) or not isinstance(side, int) or not 16 <= side <= _MAX_SIDE:
            raise ValueError(f"source_profile.side must be a whole number in 16..{_MAX_SIDE}")
        ratio = _number(ratio, "source_profile.window_ratio", 1e-3, _MAX_RATIO)
        threshold = _number(data.get("threshold"), "source_profile.threshold", 0.0, 1.0)
        description = data.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > 200):
            raise ValueError("source_profile.description must be a short text")
        calibration = data.get("calibration") or {}
        if not isinstance(calibration, dict):
            raise ValueError("source_profile.calibration must be an object")
        raw = data.get("domains")
        if not isinstance(raw, dict) or list(raw) != list(domains):
            raise ValueError(f"source_profile.domains must describe the source domains {list(domains)}, in order")
        r0, r1, c0, c1 = window_bounds(side, side, ratio)
        grid = (CHANNELS, r1 - r0, c1 - c0)
        parsed = {name: _domain_from_dict(raw[name], name, grid) for name in domains}
        return cls(parsed, side, ratio, threshold, calibration, description)


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


def kind_words(colour: bool, volume: bool) -> str:
    return "grey 3D volume" if volume else ("colour 2D image" if colour else "grey 2D image")


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
    """Profile loaded training samples (``data.Sample``: image (3, H, W) in [-1, 1], domain, and for
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


# ------------------------------------------------------------------------------------ JSON helpers


def _encode(array: np.ndarray) -> dict[str, Any]:
    """A float array as little-endian float32 in base64: one line in model.json instead of thousands."""
    a = np.ascontiguousarray(array, dtype="<f4")
    return {"dtype": "float32", "shape": list(a.shape), "base64": base64.b64encode(a.tobytes()).decode("ascii")}


def _decode(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    if not isinstance(value, dict) or value.get("dtype") != "float32" or value.get("shape") != list(shape):
        raise ValueError(f"{name} must be a float32 array of shape {list(shape)}")
    text, size = value.get("base64"), int(np.prod(shape)) * 4
    if not isinstance(text, str) or len(text) != 4 * math.ceil(size / 3):
        raise ValueError(f"{name} holds the wrong amount of data")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError(f"{name} is not valid base64") from None
    array = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or Inf")
    return array


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a number in {lo}..{hi}, not {value!r}")
    return float(value)


def _domain_from_dict(raw: Any, name: str, grid: tuple[int, ...]) -> DomainProfile:
    where = f"source_profile.domains.{name}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object")
    count = raw.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{where}.count must be a positive whole number")
    if not isinstance(raw.get("colour"), bool) or not isinstance(raw.get("volume"), bool):
        raise ValueError(f"{where}.colour and .volume must be true or false")
    k = len(INTENSITY_NAMES)
    stats = []
    for key in ("intensity_mean", "intensity_std"):
        values = raw.get(key)
        if not isinstance(values, list) or len(values) != k:
            raise ValueError(f"{where}.{key} must list {k} numbers")
        stats.append(np.array([_number(v, f"{where}.{key}", -1e6, 1e6) for v in values]))
    spacing = raw.get("spacing")
    if spacing is not None:
        if not isinstance(spacing, list) or len(spacing) != 2:
            raise ValueError(f"{where}.spacing must be null or [y, x]")
        spacing = tuple(_number(v, f"{where}.spacing", 1e-6, 1e6) for v in spacing)
    return DomainProfile(count, raw["colour"], raw["volume"],
                         _decode(raw.get("spectrum_mean"), grid, f"{where}.spectrum_mean"),
                         np.abs(_decode(raw.get("spectrum_std"), grid, f"{where}.spectrum_std")),
                         stats[0], np.abs(stats[1]), spacing)
