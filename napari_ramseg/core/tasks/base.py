"""What every task does unless it says otherwise: one 2D image in, one prediction out.

A task is what a model does with one case (``core/review/pipeline.py`` runs it; the registry in
``__init__.py`` picks it). It owns five things, each a method here with the plain behaviour:

- ``check``: refuse an image the task cannot take, before any network pass (a ``RamsegInputError``);
- ``predict``: the prediction path, and what the path adds to the case (``extras``: plain JSON);
- ``measures``: the clinical measures of a prediction;
- ``training_samples`` / ``score_heldout``: how a clinician's correction becomes training samples, and
  how a held-out one is scored (``core/finetune/data.py``);
- ``review_region``: the part of the image the review scores (style disagreement, descriptor) look at.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..labels import LabelScheme
from ..data.dataset import Sample
from ..data.preprocess import to_model_channels
from ..evaluation.evaluate import score_case
from ..evaluation.measures import measure_case
from ..inference.predictor import Prediction


@dataclass(frozen=True)
class CaseOptions:
    """How one case is segmented: the same for ``ramseg predict``, the Segment dock and the Worklist.

    ``review``: the review score to measure beside the prediction (``priority.NEEDS``' values:
    ``"disagreement"`` or ``"descriptor"``; None: none). ``progress`` and ``cancelled`` reach a volume's
    slice loop."""

    postprocess: bool = False
    review: str | None = None
    progress: Callable[[int, int], None] | None = None
    cancelled: Callable[[], bool] | None = None


class Task:
    """The plain 2D task; subclasses override what differs."""

    name = "2d"

    def claims(self, labels: LabelScheme, is_volume: bool) -> bool:
        """Whether this task segments a case of a model with ``labels`` (a volume or a 2D image)."""
        return not is_volume

    def check(self, image: Any) -> None:
        """Refuse (``RamsegInputError``, one line) an image this task cannot take; nothing by default."""

    def predict(self, segmenter: Any, image: Any, options: CaseOptions) -> tuple[Prediction, dict]:
        return segmenter.predict_image(image.array, postprocess=options.postprocess), {}

    def measures(self, labels: np.ndarray, scheme: LabelScheme, spacing: Sequence[float] | None) -> dict:
        return measure_case(labels, scheme, spacing)

    def review_region(self, predictor: Any, image: Any, extras: dict | None) -> np.ndarray:
        """What the review scores look at; ``extras``: ``predict``'s, None when they were not kept."""
        return np.asarray(image.array)

    def training_samples(self, case: Any, labels: LabelScheme, in_channels: int, domain: str,
                         rng: np.random.Generator) -> list[Sample]:
        """A corrected 2D case as one training sample, with its "final" mask (uint8, checked by the caller)."""
        return [Sample(to_model_channels(case.image, in_channels), np.asarray(case.final, np.uint8), domain,
                       case.case_id)]

    def score_heldout(self, predictor: Any, case: Any, labels: LabelScheme, in_channels: int) -> float:
        """A held-out correction's Dice, its samples predicted as they are."""
        samples = self.training_samples(case, labels, in_channels, "heldout", np.random.default_rng(0))
        return score_case(predictor, samples, labels)

    def samples_note(self, samples_by_case: dict[str, list]) -> str:
        """What a fine-tune round says about its training samples ('' when they are the cases as they are)."""
        return ""

    def settings_line(self, segmenter: Any) -> str:
        """The task's own settings, for ``ramseg predict --verbose`` ('' when it has none)."""
        return ""

    def summary_line(self, result: Any) -> str:
        """One line on a case's result for ``ramseg predict`` on one scan ('' when there is nothing to add)."""
        return ""


def empty_prediction(channel_names: Sequence[str], shape: tuple[int, ...]) -> Prediction:
    """What a refused case keeps in a folder: an empty mask to draw in, and the highest uncertainty
    there is (normalised entropy 1), so the case the model could not do comes first for review."""
    return Prediction(np.zeros(shape, np.uint8), None, np.ones(shape, np.float32), list(channel_names))
