"""The per-scan loop: a scan (a 2D image, or a volume) adapts once, then every image or slice of it is
predicted with that adaptation. :class:`AdaptedPredictor` wraps a ``Predictor`` with the same
``predict*`` calls, so the CLI, ``core/evaluation/evaluate.py``, the Segment dock and the benchmark all run the
one path; :func:`adapt_and_predict` is the one-call entry point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ....errors import RamsegInputError
from ...config import ADAPT, AdaptConfig
from ...shift.domain_fit import Features, FitResult, batch_features, judge, _even
from ..predictor import Prediction, Predictor, entropy_map, labels_from_probabilities
from ...data.preprocess import volume_to_slices_25d
from ...data.geometry import resize_image
from .base import METHODS, Adaptation, Method


@dataclass
class AdaptReport:
    """What the last scan's adaptation did and cost, and how well the scan fits before and after."""

    method: str
    seconds: float  # adaptation and prediction together
    adapt_seconds: float  # the adaptation alone
    fit_before: FitResult | None  # None: the model records no source profile
    fit_after: FitResult | None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "seconds": round(self.seconds, 3), "adapt_seconds": round(self.adapt_seconds, 3),
                "fit_before": None if self.fit_before is None else self.fit_before.to_dict(),
                "fit_after": None if self.fit_after is None else self.fit_after.to_dict(), "info": self.info}


def make_method(name: str, config: AdaptConfig = ADAPT) -> Method:
    if name not in METHODS:
        raise RamsegInputError(f"unknown adaptation method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](config)


def package_config(predictor: Predictor, method: str) -> AdaptConfig:
    """AdaptConfig's defaults with the model package's settings for ``method`` laid over them
    (model.json's "adapt" block, chosen on the model's source domains; ``core/models/checkpoint.py``)."""
    return replace(ADAPT, **package_settings(predictor, method))


def package_settings(predictor: Predictor, method: str) -> dict[str, Any]:
    return dict((getattr(predictor.metadata, "adapt", None) or {}).get(method, {}))


def scan_features(predictor: Predictor, x: torch.Tensor, volume: bool) -> Features | None:
    """The fit check's features of working-scale inputs (N, 3, h, w), as ``domain_fit`` computes them."""
    profile = predictor.metadata.source_profile
    side, ratio = (profile.side, profile.window_ratio) if profile is not None else (160, 0.1)
    spectra, intensity, colour = batch_features(x, side, ratio)
    return Features(spectra.mean(0), intensity.mean(0), bool(colour.any()) and not volume, volume)


def _fit(predictor: Predictor, features: Features) -> FitResult | None:
    profile = predictor.metadata.source_profile
    return None if profile is None else judge(profile, features)


class AdaptedPredictor:
    """A ``Predictor`` that adapts to every scan it is given (``method``: a name in ``METHODS``).

    The wrapped predictor and its model are never changed; a method's memory across scans (the
    prompt's) lives in this object, so one AdaptedPredictor per site or session. Without a ``config``
    the method runs with the model package's settings over AdaptConfig's defaults (``package_config``);
    a ``config`` given is used as it is.
    """

    def __init__(self, predictor: Predictor, method: str | None = None, config: AdaptConfig | None = None):
        self.base = predictor
        name = method or (config or ADAPT).method
        self.from_package = {} if config is not None else package_settings(predictor, name)
        self.config = config if config is not None else package_config(predictor, name)
        self.method = make_method(name, self.config)
        self.last: AdaptReport | None = None
        self.fits = 0  # adaptations run (one per scan)

    # what callers read off a Predictor
    labels = property(lambda self: self.base.labels)
    threshold = property(lambda self: self.base.threshold)
    metadata = property(lambda self: self.base.metadata)
    device = property(lambda self: self.base.device)
    channel_names = property(lambda self: self.base.channel_names)
    domains = property(lambda self: self.base.domains)

    def settings(self) -> dict[str, Any]:
        """The AdaptConfig values this method runs with (those it reads)."""
        return {name: getattr(self.config, name) for name in self.method.settings}

    def settings_line(self) -> str:
        """The settings this method runs with, those from model.json marked so, for the CLI."""
        words = [f"{n} {v}" + (" (model.json)" if n in self.from_package else "") for n, v in self.settings().items()]
        return f"adaptation settings ({self.method.name}): " + (", ".join(words) or "none")

    def check_fit(self, image: np.ndarray, is_volume: bool | None = None) -> FitResult:
        return self.base.check_fit(image, is_volume)

    def _adapt(self, inputs: torch.Tensor, volume: bool) -> tuple[Adaptation, Features]:
        features = scan_features(self.base, inputs, volume)
        start = time.perf_counter()
        adaptation = self.method.adapt(self.base, inputs, features)
        self.fits += 1
        self._adapt_seconds = time.perf_counter() - start
        return adaptation, features

    def _report(self, adaptation: Adaptation, features: Features, adapted: torch.Tensor | None, volume: bool,
                started: float) -> None:
        before = _fit(self.base, features)
        after = before
        if adapted is not None and self.method.changes_input:
            after = _fit(self.base, scan_features(self.base, adapted, volume))
        self.last = AdaptReport(self.method.name, time.perf_counter() - started, self._adapt_seconds,
                                before, after, adaptation.info)

    @torch.no_grad()
    def _run(self, adaptation: Adaptation, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, h, w) working-scale input -> (its adapted input, (C, h, w) probabilities)."""
        adapted = adaptation.apply(x[None])[0]
        return adapted, adaptation.predictor.predict_prepared(adapted, tuple(adapted.shape[-2:]))

    # -- the Predictor's calls -------------------------------------------------------------------
    def predict_prepared(self, x: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
        """A prepared (3, H, W) image, adapted to and predicted: (C, H, W) probabilities."""
        started = time.perf_counter()
        height, width = x.shape[-2:]
        xw = resize_image(x.float(), shape or self.base.input_shape(height, width))
        with torch.enable_grad():
            adaptation, features = self._adapt(xw[None], volume=False)
        adapted, probs = self._run(adaptation, xw)
        if tuple(probs.shape[-2:]) != (height, width):
            probs = F.interpolate(probs[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        self._report(adaptation, features, adapted[None], False, started)
        return probs

    def predict_image(self, image: np.ndarray, postprocess: bool = False) -> Prediction:
        return self._finish(self.predict_prepared(self.base.prepare(image)), postprocess)

    def predict_volume(self, volume: np.ndarray, postprocess: bool = False,
                       progress: Callable[[int, int], None] | None = None,
                       cancelled: Callable[[], bool] | None = None,
                       spacing: tuple[float, ...] | None = None) -> Prediction:
        """A (Z, Y, X) volume: adapted once (on ``max_slices`` evenly spaced slices), then every
        slice predicted with that adaptation, as ``Predictor.predict_volume`` would."""
        started = time.perf_counter()
        if np.ndim(volume) != 3:
            raise RamsegInputError(f"expected a 3D volume (Z, Y, X), got shape {np.shape(volume)}")
        try:
            slices = torch.from_numpy(volume_to_slices_25d(volume))
        except ValueError as exc:
            raise RamsegInputError(str(exc)) from None
        depth, _, height, width = slices.shape
        shape = self.base.volume_shape(height, width, spacing)
        picked = resize_image(slices[_even(depth, self.config.max_slices)], shape)
        with torch.enable_grad():
            adaptation, features = self._adapt(picked, volume=True)
        out = torch.empty((self.base.labels.out_channels, depth, height, width), dtype=torch.float32)
        adapted_picked = adaptation.apply(picked) if self.method.changes_input else None
        for j in range(depth):
            if cancelled is not None and cancelled():
                raise InterruptedError("prediction cancelled")
            _, probs = self._run(adaptation, resize_image(slices[j], shape))
            if tuple(probs.shape[-2:]) != (height, width):
                probs = F.interpolate(probs[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            out[:, j] = probs
            if progress is not None:
                progress(j + 1, depth)
        self._report(adaptation, features, adapted_picked, True, started)
        return self._finish(out, postprocess)

    def predict(self, array: np.ndarray, postprocess: bool = False, is_volume: bool | None = None,
                **kwargs) -> Prediction:
        if is_volume is None:
            is_volume = array.ndim == 3 and array.shape[-1] not in (3, 4)
        if is_volume:
            return self.predict_volume(array, postprocess, **kwargs)
        return self.predict_image(array, postprocess)

    def _finish(self, probs: torch.Tensor, postprocess: bool) -> Prediction:
        labels = labels_from_probabilities(probs, self.base.labels, self.base.threshold)
        if postprocess:
            from ..postprocess import postprocess_labels

            labels = postprocess_labels(labels, self.base.labels)
        entropy = entropy_map(probs, self.base.labels).numpy()
        return Prediction(labels=labels, probabilities=probs.numpy(), entropy=entropy,
                          channel_names=self.base.channel_names)


def adapt_and_predict(predictor: Predictor | AdaptedPredictor, image: np.ndarray, method: str | None = None,
                      is_volume: bool | None = None, postprocess: bool = False, config: AdaptConfig | None = None,
                      **kwargs) -> tuple[Prediction, AdaptReport]:
    """Adapt to one scan and segment it: ``(prediction, report)``. Hand in an ``AdaptedPredictor`` to
    keep a method's memory across scans; a plain ``Predictor`` adapts from scratch, with ``config`` or
    else the model package's settings over AdaptConfig's defaults."""
    adapted = predictor if isinstance(predictor, AdaptedPredictor) else AdaptedPredictor(predictor, method, config)
    prediction = adapted.predict(np.asarray(image), postprocess=postprocess, is_volume=is_volume, **kwargs)
    return prediction, adapted.last
