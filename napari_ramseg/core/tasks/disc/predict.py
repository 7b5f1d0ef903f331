"""The two-stage prediction of the optic disc and cup, one entry point for any fundus image.

``DiscPredictor.predict`` decides what it was given (``locate.locate``):

- a disc-centred crop (Drishti-GS, the DoFE ROIs): segmented as it is, like the model's training ROIs
  (and re-centred like a photograph's ROI when ``DiscConfig.refine_crops`` asks for it);
- a whole photograph: stage one's candidates, best first, are each cropped to a disc-centred ROI
  (``roi.Roi``) and segmented; among those on which the model finds a plausible disc (its size in the
  ROI and its mean probability, ``DiscConfig``) the first or the most confident wins
  (``DiscConfig.pick``); the ROI is then re-centred and re-scaled on the predicted disc, at the scale
  the model was trained on (``DiscConfig.roi_ratio`` x its diameter, kept within
  ``DiscConfig.max_rescale`` of stage one's estimate), segmented again (``DiscConfig.refine`` times),
  and the result is pasted back into the photograph's geometry.

The settings are the model package's (model.json's ``"disc"`` block, those its benchmark rows were
measured with, chosen on source domains by bench/recipes/optic_disc_settings.py) over ``DiscConfig``'s
defaults; a ``DiscConfig`` given by the caller replaces both.

An image that is not a colour fundus image (not red-dominant inside its field of view,
``fundus.check_fundus``: an MRI slice, a grey or noise image) is refused before either stage runs.
A crop whose predicted disc is implausibly small is taken for a photograph after all (a dim scanned
slide can fool the corner test). A photograph on which no candidate convinces the model raises
``RamsegInputError`` with that message, never an empty mask.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ....errors import RamsegInputError
from ...config import DiscConfig
from ...labels import LabelScheme
from ...inference.predictor import Prediction, Predictor
from ...inference.postprocess import keep_largest_component
from .fundus import check_fundus
from .locate import Candidate, locate
from .roi import Roi, crop, disc_diameter, edge_fade, paste


# of a ROI's side: the band over which pasted maps fade out at its edges (the disc, 1 / DiscConfig.roi_ratio
# of the side, leaves about an eighth of it free on each side)
FADE_BAND = 1 / 16


def is_disc_labels(labels: LabelScheme) -> bool:
    """Nested disc/cup labels (the bundled ``optic-disc`` model's, or those of one trained on DoFE-like data)."""
    return labels.kind == "nested" and tuple(labels.names[:2]) == ("disc", "cup")


@dataclass
class DiscPrediction:
    """A prediction in the input's geometry, and how it was reached."""

    prediction: Prediction  # labels, probabilities, entropy at the input's full size
    kind: str  # "photograph" or "crop"
    roi: Roi | None  # the final ROI in the input's pixels (None for a crop)
    confidence: float  # mean disc probability inside the predicted disc
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)

    @property
    def labels(self) -> np.ndarray:
        return self.prediction.labels

    def summary(self) -> dict:
        out: dict = {"kind": self.kind, "disc_confidence": round(self.confidence, 3)}
        if self.roi is not None:
            out["roi"] = self.roi.to_dict()
        return out


def predict_2d(predictor: Predictor, image: np.ndarray, postprocess: bool = True) -> tuple[Prediction, dict]:
    """The two stages on a colour fundus image with the package's settings: the prediction and its
    summary (``DiscPrediction.summary``: crop or photograph, confidence, ROI). ``postprocess`` is kept for
    callers; the two stages always keep one disc and one cup, which the measures need."""
    found = DiscPredictor(predictor).predict(image, postprocess=True)
    return found.prediction, found.summary()


def segmented_region(image: np.ndarray, summary: dict) -> np.ndarray:
    """The part of an image the two stages segmented (``summary``: ``predict_2d``'s): a photograph's final
    ROI, padded as the model saw it; the image itself otherwise. The review scores (style disagreement,
    the representative descriptor) look at this, not at a whole photograph the disc model never sees."""
    roi = summary.get("roi")
    return np.asarray(image) if not roi else crop(np.asarray(image), Roi(**roi))


def package_settings(predictor: Predictor) -> dict:
    """The two-stage settings a model package carries (validated when its model.json was loaded), {} for
    none (older packages, or a stand-in predictor without metadata)."""
    return dict(getattr(getattr(predictor, "metadata", None), "disc", None) or {})


class DiscPredictor:
    """Wraps a disc/cup :class:`Predictor`; every result is in the geometry of the image given.

    ``config``: the two-stage settings; by default the model package's over ``DiscConfig``'s defaults."""

    def __init__(self, predictor: Predictor, config: DiscConfig | None = None):
        if not is_disc_labels(predictor.labels):
            raise RamsegInputError(f"not an optic disc and cup model (labels: {', '.join(predictor.labels.names)})")
        self.predictor = predictor
        carried = package_settings(predictor)
        self.settings_source = "given" if config is not None else "model" if carried else "defaults"
        self.config = config if config is not None else dataclasses.replace(DiscConfig(), **carried)

    def settings_line(self) -> str:
        """One line: where the settings in use come from and how they differ from DiscConfig's defaults."""
        default = DiscConfig()
        changed = [f"{f.name} {getattr(self.config, f.name)}" for f in dataclasses.fields(DiscConfig)
                   if getattr(self.config, f.name) != getattr(default, f.name)]
        if self.settings_source == "defaults":
            return "optic disc settings: DiscConfig's defaults (the model package carries none)"
        where = "the model package's" if self.settings_source == "model" else "as given"
        differ = f"{', '.join(changed)}, the rest" if changed else "all"
        return f"optic disc settings: {where}: {differ} as DiscConfig's defaults"

    def predict(self, image: np.ndarray, postprocess: bool = True) -> DiscPrediction:
        """``image``: (H, W, 3) fundus photograph or disc-centred crop. ``postprocess`` keeps one disc
        and one cup (largest components, holes filled), which is what the measures assume."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise RamsegInputError(f"the optic disc model takes a colour fundus image, not shape {image.shape}")
        cfg = self.config
        low, high = np.percentile(image[..., :3], [1, 99])
        if high - low < 1e-3 * max(float(high), 1.0) or high - low < 5 and image.dtype == np.uint8:
            raise RamsegInputError("no optic disc found: the image is blank (no contrast)")
        check_fundus(image, cfg)  # once, here: a grey or non-retinal image gets no disc and no vCDR
        located = locate(image, cfg)
        if not located.photograph:
            pred = self.predictor.predict_image(image, postprocess=postprocess or cfg.refine_crops > 0)
            if _disc_fraction(pred) >= cfg.min_disc_fraction:
                if cfg.refine_crops > 0:  # the crop as the first ROI, then re-centred like a photograph's
                    whole = Roi(0, 0, max(image.shape[:2]))
                    roi, pred = self.refine(image, whole, _pad_square(pred, whole), cfg.refine_crops, postprocess,
                                            bounded=False)  # a crop's side says nothing of its disc's size
                    pred = _paste_prediction(pred, roi, image.shape[:2])
                return DiscPrediction(pred, "crop", None, _confidence(pred), located.candidates)
            # too small a disc for a crop: a photograph whose corners are not dark; look for it
            located = locate(image, _as_photograph(cfg))
        # cfg.pick "first": stage one ranks, the model vetoes (a model trained on disc-centred ROIs is
        # confident about a disc-like blob anywhere, so its confidence may not rank well); "confident":
        # the model ranks the plausible candidates. Which is better is chosen on source photographs.
        best: tuple[float, Roi, Prediction] | None = None
        seen = 0.0
        for cand in located.candidates[:cfg.candidates]:
            score, roi, pred = self.check(image, cand)
            seen = max(seen, score)
            if score >= cfg.min_confidence and (best is None or score > best[0]):
                best = (score, roi, pred)
                if cfg.pick == "first":
                    break
        if best is None:
            raise RamsegInputError(f"no optic disc found in this photograph (best candidate: disc confidence "
                                   f"{seen:.2f} < {cfg.min_confidence}); "
                                   "is it a fundus photograph with the disc in view?")
        score, roi, pred = best
        roi, pred = self.refine(image, roi, pred, cfg.refine, postprocess)
        full = _paste_prediction(pred, roi, image.shape[:2])
        return DiscPrediction(full, "photograph", roi, _confidence(pred) if cfg.refine else score, located.candidates)

    def check(self, image: np.ndarray, cand: Candidate) -> tuple[float, Roi, Prediction]:
        """Segment a candidate's ROI: (its disc confidence, 0 for an implausible disc size; the ROI; the
        ROI's prediction)."""
        cfg = self.config
        roi = Roi.around((cand.y, cand.x), cand.diameter, cfg.roi_ratio)
        pred = self.predictor.predict_image(crop(image, roi), postprocess=True)
        plausible = cfg.min_disc_fraction <= _disc_fraction(pred) <= cfg.max_disc_fraction
        return (_confidence(pred) if plausible else 0.0), roi, pred

    def refine(self, image: np.ndarray, roi: Roi, pred: Prediction, times: int,
               postprocess: bool = True, bounded: bool = True) -> tuple[Roi, Prediction]:
        """Re-centre and re-scale ``roi`` on ``pred``'s disc (``roi_ratio`` x its diameter) and segment
        again, ``times`` times, as DoFE-style pipelines do: the model then sees the disc at the centre
        and scale it was trained on, whatever stage one's error was. A prediction that lost the disc
        keeps the ROI it had. ``bounded``: ``roi`` is stage one's estimate, and the diameter stays
        within ``max_rescale`` of its own (``roi.side / roi_ratio``)."""
        cfg = self.config
        first = roi.side / cfg.roi_ratio
        factor = max(cfg.max_rescale, 1 / cfg.max_rescale) if bounded and cfg.max_rescale > 0 else None  # 0.8: 1.25
        bounds = None if factor is None else (first / factor, first * factor)
        for step in range(times):
            if not (pred.labels >= 1).any():
                break
            new = _refined(roi, pred, cfg.roi_ratio, bounds)
            out = self.predictor.predict_image(crop(image, new), postprocess=postprocess or step < times - 1)
            if not (out.labels >= 1).any():
                break
            roi, pred = new, out
        return roi, pred


def _as_photograph(cfg: DiscConfig) -> DiscConfig:
    return dataclasses.replace(cfg, dark_corners=0)


def _disc_fraction(pred: Prediction) -> float:
    return float((pred.labels >= 1).mean())


def _confidence(pred: Prediction) -> float:
    """Mean disc probability inside the predicted disc (0 without one)."""
    disc = pred.labels >= 1
    return float(pred.probabilities[0][disc].mean()) if disc.any() else 0.0


def _refined(roi: Roi, pred: Prediction, ratio: float, bounds: tuple[float, float] | None = None) -> Roi:
    """The ROI centred on the predicted disc (its largest component) with side ``ratio`` x its diameter,
    the diameter clipped to ``bounds`` (image pixels) when given."""
    disc = keep_largest_component(pred.labels >= 1)
    cy, cx = ndimage.center_of_mass(disc)
    diameter = disc_diameter(disc)
    scale = roi.side / disc.shape[0]  # the prediction is at the crop's own size: 1 here
    centre = (roi.top + (cy + 0.5) * scale - 0.5, roi.left + (cx + 0.5) * scale - 0.5)
    diameter = diameter * scale
    if bounds is not None:
        diameter = min(max(diameter, bounds[0]), bounds[1])
    return Roi.around(centre, diameter, ratio)


def _pad_square(pred: Prediction, roi: Roi) -> Prediction:
    """A crop's prediction in the square ``roi`` at (0, 0) that holds it (zero padding below and right);
    maps a prediction goes without (probabilities or entropy None) stay None."""
    h, w = pred.labels.shape
    if (h, w) == (roi.side, roi.side):
        return pred

    def pad(a):
        return None if a is None else np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, roi.side - h), (0, roi.side - w)])

    return Prediction(labels=pad(pred.labels), probabilities=pad(pred.probabilities), entropy=pad(pred.entropy),
                      channel_names=list(pred.channel_names))


def _paste_prediction(pred: Prediction, roi: Roi, shape: tuple[int, int]) -> Prediction:
    """``pred`` (in ``roi``'s square) pasted into an image of ``shape``; None maps stay None. The
    probability and uncertainty maps fade out towards the ROI's edges where the predicted structures do
    not reach (``roi.edge_fade``, over ``FADE_BAND`` of its side): outside the ROI the model said nothing,
    and a hard step there would draw the ROI as a square in those layers."""
    labels = paste(pred.labels, roi, shape)
    fade = np.where(labels >= 1, np.float32(1), edge_fade(roi, shape, FADE_BAND * roi.side))
    probs = None if pred.probabilities is None else np.stack([paste(p, roi, shape) * fade for p in pred.probabilities])
    entropy = None if pred.entropy is None else paste(pred.entropy, roi, shape) * fade
    return Prediction(labels=labels, probabilities=probs, entropy=entropy, channel_names=list(pred.channel_names))
