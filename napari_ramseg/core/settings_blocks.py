"""The settings blocks of model.json, checked: an optic disc model's two-stage settings ("disc") and the
source-chosen test-time adaptation settings ("adapt"), over DiscConfig's and AdaptConfig's defaults.

Read back by ``checkpoint.ModelMetadata.from_dict`` and written by ``checkpoint.write_block``; the
names are re-exported from ``core/models/checkpoint.py``, where callers have always found them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import ADAPT_METHODS, DISC_PICKS, AdaptConfig, DiscConfig

MAX_SIDE = 8192  # preprocess size / long_side, and any side a settings block names, in pixels


def _int_in(value: Any, lo: int, hi: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a whole number in {lo}..{hi}, not {value!r}")


# A guard on the optic disc's two-stage settings (model.json's "disc"): a hostile file must not
# ask for a million candidates or refinement passes, each a network pass. Bounds are inclusive.
DISC_LIMITS: dict[str, tuple[float, float]] = {
    "coarse_long_side": (16, MAX_SIDE), "dark_corners": (0, 4), "candidates": (1, 32), "refine": (0, 8),
    "refine_crops": (0, 8), "fov_threshold": (0.0, 1.0), "corner_fraction": (0.0, 0.5), "corner_dark": (0.0, 1.0),
    "disc_fov_ratio": (0.0, 1.0), "roi_ratio": (1.0, 8.0), "min_disc_fraction": (0.0, 1.0),
    "max_disc_fraction": (0.0, 1.0), "min_confidence": (0.0, 1.0), "max_rescale": (0.0, 8.0),
    "min_red_excess": (0.0, 2 / 3)}


def _check_settings(block: Any, section: str, kind: str, defaults: Any, limits: dict[str, tuple[float, float]],
                    choices: dict[str, tuple[str, ...]], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A block of a config dataclass's settings (``defaults``' field names, less ``skip``), checked
    (ValueError naming ``section.field``; an unknown name "is not ``kind``"): a word one of ``choices``,
    a number of the field's type within ``limits``; whole numbers given for a fraction become floats."""
    names = [f.name for f in dataclasses.fields(defaults) if f.name not in skip]
    out: dict[str, Any] = {}
    for name, value in block.items():
        if name not in names:
            raise ValueError(f"{section}.{name} is not {kind} (known: {', '.join(names)})")
        if name in choices:
            if value not in choices[name]:
                raise ValueError(f"{section}.{name} must be one of {', '.join(choices[name])}, not {value!r}")
        elif isinstance(getattr(defaults, name), int):
            _int_in(value, *limits[name], f"{section}.{name}")
        else:
            lo, hi = limits[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"{section}.{name} must be a number in {lo}..{hi}, not {value!r}")  # NaN fails too
            value = float(value)
        out[name] = value
    return out


def check_disc_settings(block: Any) -> dict[str, Any]:
    """The "disc" block, checked (ValueError): DiscConfig field names, each with a value of the field's
    type within DISC_LIMITS (or one of DISC_PICKS); whole numbers given for a fraction become floats."""
    if not isinstance(block, dict):
        raise ValueError("disc must be an object of two-stage settings (DiscConfig field names)")
    out = _check_settings(block, "disc", "a two-stage setting", DiscConfig(), DISC_LIMITS, {"pick": DISC_PICKS})
    merged = dataclasses.replace(DiscConfig(), **out)
    if merged.min_disc_fraction > merged.max_disc_fraction:
        raise ValueError(f"disc.min_disc_fraction {merged.min_disc_fraction} exceeds max_disc_fraction "
                         f"{merged.max_disc_fraction}")
    return out


# The same guard on the test-time adaptation settings (model.json's "adapt"): each step is a network
# pass with gradients, each kept prompt memory, so a hostile file must not ask for thousands.
ADAPT_LIMITS: dict[str, tuple[float, float]] = {
    "window": (0.0, 0.5), "strength": (0.0, 1.0), "prompt_steps": (1, 32), "prompt_lr": (0.0, 1.0),
    "memory_size": (1, 256), "memory_neighbours": (1, 256), "tent_steps": (1, 32), "tent_lr": (0.0, 1.0),
    "crop": (16, MAX_SIDE), "max_slices": (1, 256), "seed": (0, 2 ** 31 - 1)}
ADAPT_TOWARDS = ("nearest", "all")


def check_adapt_settings(block: Any) -> dict[str, dict[str, Any]]:
    """The "adapt" block, checked (ValueError): per method of ADAPT_METHODS, AdaptConfig field names
    (not ``method``: which method runs is the caller's) with values within ADAPT_LIMITS."""
    if not isinstance(block, dict) or not all(isinstance(v, dict) for v in block.values()):
        raise ValueError('adapt must be an object of settings per method ({"align": {"window": ...}})')
    out = {}
    for method, settings in block.items():
        if method not in ADAPT_METHODS:
            raise ValueError(f"adapt.{method} is not an adaptation method (known: {', '.join(ADAPT_METHODS)})")
        out[method] = _check_settings(settings, f"adapt.{method}", "an adaptation setting", AdaptConfig(),
                                      ADAPT_LIMITS, {"towards": ADAPT_TOWARDS}, skip=("method",))
    return out
