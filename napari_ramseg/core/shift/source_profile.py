"""What ``model.json``'s ``source_profile`` holds, and how it is written and read back (validated).

Per source domain: its image count; colour or grey; 2D images or slices of volumes; intensity
statistics after normalisation (``INTENSITY_NAMES``); the mean and spread of the low-frequency
log-amplitude spectrum (3, G, G), G set by ``side`` and ``window_ratio`` through ``ram.window_bounds``;
and, for volumes, the in-plane spacing at the working scale. Spectra are stored as base64 float32, one
line each. A ``model.json`` may come from anywhere, so :meth:`SourceProfile.from_dict` checks every
field and says in a ValueError which one is wrong. Computing profiles and scoring scans against them
is ``core/shift/domain_fit.py``'s.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..method.ram import window_bounds

PROFILE_VERSION = 1
CHANNELS = 3  # the model's input channels (checkpoint.IN_CHANNELS)
INTENSITY_NAMES = ("mean", "std", "p05", "p25", "p50", "p75", "p95", "mean_c0", "mean_c1", "mean_c2")
_MAX_SIDE, _MAX_RATIO = 512, 0.25  # limits on what an untrusted model.json may ask for


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


def kind_words(colour: bool, volume: bool) -> str:
    return "grey 3D volume" if volume else ("colour 2D image" if colour else "grey 2D image")


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
