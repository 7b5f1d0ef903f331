"""One case, segmented the same way everywhere: ``ramseg predict``, the Segment dock and the Worklist.

``segment_case(predictor, image, options)`` picks the case's task (``core/tasks``: plain 2D, the optic
disc's two stages, 2.5D volumes), lets it refuse the image or predict it, checks the fit against the
model's sources, measures the prediction and, when asked, takes the review score. The entry points
are loops around it: they read the case, write or show the result, and say what happened; none of
them decides anything about a case by itself, so a dock and its ``ramseg`` command cannot disagree.

A refusal (the task's pre-check, or any ``RamsegInputError`` the prediction raised: a photograph
without a visible disc, an image the network cannot take) is a result, not an exception: a folder goes
on past it and lists the case with the reason, and a single image's entry point raises it as one line.
A file that cannot be read is listed the same way (``unreadable_row``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RamsegInputError
from .report import Row, case_row, mark_refused
from .priority import descriptor, disagreement
from ..tasks import CaseOptions, Task, empty_prediction, task_for

__all__ = ["CaseOptions", "CaseResult", "read_case", "review_region", "review_score", "segment_case",
           "unreadable_row"]


@dataclass
class CaseResult:
    """One case's outcome: the prediction, or the refusal and its reason; the fit, measures and the
    review score taken (``disagreement`` or ``descriptor``)."""

    task: Task
    prediction: Any  # core.inference.predictor.Prediction; None when refused
    refusal: str = ""  # why the case was refused, one line ('' when it was segmented)
    fit: Any = None  # core.shift.domain_fit.FitResult
    measures: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)  # what the task's path adds (the disc's ROI)
    disagreement: float | None = None
    descriptor: np.ndarray | None = None
    # the report row as made where the case was segmented (a ramseg server's answer, whose prediction
    # comes without the maps the row's uncertainty is measured on); None: made here from the prediction
    report_row: Row | None = None
    # (model key, refine_head.ScanFeatures): the head refinement's network pass, kept so that only a
    # scan's first Refine pays it (refine_head.cached_scan_features); None until then
    refine_features: tuple[str | None, Any] | None = None

    @property
    def refused(self) -> bool:
        return self.prediction is None

    @property
    def reliable(self) -> bool:
        """Whether the measures may be trusted: the case was segmented and fits the model's sources."""
        return not self.refused and (self.fit is None or bool(self.fit.fits))

    def row(self, case: str, file: str, scheme: Any, channel_names: Any, shape: tuple[int, ...],
            spacing: Any = None) -> Row:
        """The case's ``report.csv`` row. A refused case gets an empty mask's row (``shape``: the
        case's spatial shape), the highest uncertainty and the reason in ``fit_note``."""
        if self.report_row is not None:
            return {**self.report_row, "case": case, "file": file}
        if not self.refused:
            return case_row(case, self.prediction, scheme, self.fit, file=file, spacing=spacing,
                            disagreement=self.disagreement, descriptor=self.descriptor, measures=self.measures)
        empty = empty_prediction(channel_names, shape)
        return mark_refused(case_row(case, empty, scheme, self.fit, file=file, spacing=spacing), self.refusal)


def segment_case(predictor: Any, image: Any, options: CaseOptions = CaseOptions(),
                 segmenter: Any = None) -> CaseResult:
    """Segment one case (``image``: an ``io.ImageData``, or anything with ``array``, ``is_volume`` and
    ``spacing``). ``segmenter`` predicts (an ``AdaptedPredictor`` around ``predictor``); ``predictor``
    itself checks the fit and takes the review score, as the model the user chose."""
    task = task_for(predictor.labels, image.is_volume)
    segmenter = predictor if segmenter is None else segmenter
    try:
        task.check(image)
        prediction, extras = task.predict(segmenter, image, options)
    except RamsegInputError as exc:
        fit = predictor.check_fit(image.array, is_volume=image.is_volume)
        return CaseResult(task, None, exc.problem, fit)
    fit = predictor.check_fit(image.array, is_volume=image.is_volume)
    result = CaseResult(task, prediction, "", fit, task.measures(prediction.labels, predictor.labels, image.spacing),
                        extras)
    if options.review is not None:
        score = review_score(predictor, image, options.review, extras, task)
        setattr(result, options.review, score)
    return result


def review_region(predictor: Any, image: Any, extras: dict | None = None) -> np.ndarray:
    """What the review scores look at (the task's: the disc's ROI, else the image); ``extras``: what the
    case's prediction added, None when it is not at hand (segmented in an earlier session)."""
    return task_for(predictor.labels, image.is_volume).review_region(predictor, image, extras)


def review_score(predictor: Any, image: Any, need: str, extras: dict | None = None, task: Task | None = None) -> Any:
    """``need`` (``"disagreement"`` or ``"descriptor"``, ``priority.NEEDS``' values) of one case."""
    task = task or task_for(predictor.labels, image.is_volume)
    region = task.review_region(predictor, image, extras)
    measure = {"disagreement": disagreement, "descriptor": descriptor}[need]
    return measure(predictor, region, image.is_volume, image.spacing)


UNREADABLE = "cannot read this file: "  # how a folder's listing says why a file has no mask


def read_case(path: str | Path) -> tuple[Any, str]:
    """(the image, '') or (None, why it cannot be read): one bad file does not stop a folder."""
    from ...io import read_image

    try:
        return read_image(path), ""
    except (RamsegInputError, OSError) as exc:
        return None, f"{UNREADABLE}{getattr(exc, 'problem', None) or exc}"


def unreadable_row(case: str, file: str, reason: str) -> Row:
    """``report.csv``'s row of a file that could not be read: no measures, the highest uncertainty
    (first for review), the reason in ``fit_note``."""
    row: Row = {"case": case, "file": file, "mean_uncertainty": 1.0, "disagreement": None, "fit_score": None,
                "fits": None, "fit_note": ""}
    return mark_refused(row, reason)

