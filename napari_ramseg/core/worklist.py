"""A worklist: every scan of a folder segmented once, ranked for review, and what the clinician did with each.

Layout, inside the scans' folder unless another root is given (``ReviewConfig.worklist_dir``)::

    <scans>/ramseg-worklist/
      worklist.json           the state: model, ranking, and per case its status and report row
      predictions/<file>.tif  each case's prediction as the model made it (the "original")
      descriptors.npz         each case's encoder descriptor (``review.descriptor``), for the
                              ``representative`` order; the report's sidecar (``core/report.py``)
      report.csv              the same rows as ``ramseg predict`` writes for the folder

A case is ``untouched`` until opened, ``reviewed`` once looked at (or saved unchanged) and
``corrected`` once a changed mask was saved into the corrections store (``core/corrections.py``; the
case id is kept). ``worklist.json`` is rewritten atomically after every change, so closing napari (or
a crash) loses at most the case being segmented; segmenting again skips the cases already done by
the same model. A scan segmented by another model is done again and keeps its status.

The state is kept by file name, unique in a folder. A case's name in the report (its ``case`` column)
is made by ``io.case_names``: the stem, or the whole file name where scans share a stem (``a.png`` beside
``a.tif``). It is made afresh from the folder whenever the worklist is opened, never read from the
state, so a state written when every case was its stem loads, and a scan joining under a taken stem
renames its namesake's case without touching its status.

What a ranking needs beyond the prediction (``review.NEEDS``: the style disagreement, several network
passes; the descriptor of ``representative``, an encoder pass, about as long as the prediction itself
with the bundled vessel model on this CPU) is measured only while that ranking is chosen: switching to it
makes the cases without it pending, and segmenting again measures just that, keeping the predictions.
Once measured it is kept, so switching back and forth costs nothing. The ranking is kept in the state.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RamsegInputError, naming
from ..io import case_names
from .checkpoint import atomic_write_json
from .config import REVIEW_PRIORITIES, ReviewConfig
from .report import case_row, mark_refused, read_descriptors, with_priority, write_descriptors, write_report
from .review import NEEDS, SET_RANKINGS, descriptor, disagreement

REVIEW = ReviewConfig()
STATUSES = ("untouched", "reviewed", "corrected")
STATE_NAME = "worklist.json"
STATE_VERSION = 1


@dataclass
class WorkCase:
    """One scan of the worklist: ``file`` is its name in the scans' folder (the key)."""

    file: str
    status: str = "untouched"
    row: dict[str, Any] | None = None  # its report row (measures, uncertainty, fit) once segmented
    prediction: str | None = None  # the prediction's file, relative to the worklist root
    model: str | None = None  # the model that made it
    case_id: str | None = None  # the saved correction, once corrected
    updated: str = field(default_factory=lambda: _now())
    measured: list[str] = field(default_factory=list)  # scores beyond the prediction taken for it ("disagreement")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def scan_files(folder: Path) -> list[Path]:
    """The readable images and volumes directly in ``folder``, by name."""
    from ..io import is_supported

    if not folder.is_dir():
        raise RamsegInputError("not a folder", folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_supported(p))


class Worklist:
    """The worklist of one folder of scans; its state is read from and written to ``root``."""

    def __init__(self, scans: str | Path, root: str | Path | None = None, priority: str | None = None):
        """``priority``: the ranking (``config.REVIEW_PRIORITIES``); None: the one the state was left with,
        else ``ReviewConfig.priority``."""
        self.scans = Path(scans).expanduser()
        self.root = Path(root).expanduser() if root is not None else self.scans / REVIEW.worklist_dir
        self.priority = REVIEW.priority
        self.model: str | None = None  # the model the folder was last segmented with
        self.cases: dict[str, WorkCase] = {}
        self.descriptors: dict[str, np.ndarray] = {}
        self._order_cache: tuple[Any, list[str]] | None = None
        self._rows_version = 0  # bumped whenever a row, a descriptor or the ranking changes
        self._segmenting = False
        self._ranked: list[str] = []  # the last set-level order, kept while a segmentation runs
        self._load()
        if priority is not None:
            self._check_priority(priority)
            self.priority = priority
        files = scan_files(self.scans)
        if not files:
            raise RamsegInputError("no readable images (PNG, JPEG, TIFF, NIfTI) in this folder", self.scans)
        # new scans join as untouched; scans no longer in the folder leave the list
        self.cases = {p.name: self.cases.get(p.name) or WorkCase(p.name) for p in files}
        self._case_names = case_names(self.cases)
        self.descriptors = {n: f for n, f in self.descriptors.items() if n in self.cases}

    def case_name(self, name: str) -> str:
        """The case name of the file ``name`` (``io.case_names``): unique in the folder, its stem where
        no other scan shares it."""
        return self._case_names[name]

    @property
    def state_path(self) -> Path:
        return self.root / STATE_NAME

    @property
    def descriptors_path(self) -> Path:
        return self.root / REVIEW.descriptors_name

    @staticmethod
    def _check_priority(priority: str) -> None:
        if priority not in REVIEW_PRIORITIES:
            raise ValueError(f"review priority must be one of {', '.join(REVIEW_PRIORITIES)}, not {priority!r}")

    def set_priority(self, priority: str) -> None:
        """Rank by ``priority`` from now on (kept in the state once there is one); the report is re-ranked
        when every segmented case has what the ranking needs, else once the missing scores are measured."""
        self._check_priority(priority)
        if priority == self.priority:
            return
        self.priority = priority
        self._rows_version += 1
        if self.state_path.exists():  # a folder only looked at gets no state until it is segmented
            self.save()
        if not self.unmeasured():
            self.write_report()

    # -- state -----------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.state_path.exists():
            return
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            self.cases = {name: WorkCase(**{k: v for k, v in raw.items() if k in WorkCase.__dataclass_fields__})
                          for name, raw in data["cases"].items()}
            self.model = data.get("model")
            if data.get("priority") in REVIEW_PRIORITIES:
                self.priority = data["priority"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RamsegInputError(f"cannot read the worklist state ({exc}); move it away to start afresh",
                                   self.state_path) from None
        for case in self.cases.values():
            if case.status not in STATUSES:
                case.status = "untouched"
            measured_before = case.row is not None and case.row.get("disagreement") is not None
            if measured_before and "disagreement" not in case.measured:
                case.measured.append("disagreement")  # a state written before ``measured`` was kept
        try:
            self.descriptors = read_descriptors(self.descriptors_path)
        except ValueError as exc:
            raise RamsegInputError(f"{exc}; move it away and segment again", self.descriptors_path) from None

    def save(self) -> None:
        data = {"version": STATE_VERSION, "scans": str(self.scans.resolve()), "priority": self.priority,
                "model": self.model, "cases": {name: asdict(case) for name, case in self.cases.items()}}
        atomic_write_json(self.state_path, data)

    # -- segmenting ------------------------------------------------------------------------------
    def _predicted(self, name: str, model: str) -> bool:
        """Whether ``name`` has a prediction by ``model`` whose file is still there."""
        c = self.cases[name]
        return (c.row is not None and c.model == model and c.prediction is not None
                and (self.root / c.prediction).exists())

    def _missing(self, name: str) -> list[str]:
        """What the ranking needs that a segmented case lacks: ``[]`` or ``[review.NEEDS[priority]]``."""
        need = self.needs
        if need is None:
            return []
        have = name in self.descriptors if need == "descriptor" else need in self.cases[name].measured
        return [] if have else [need]

    def pending(self, model: str) -> list[str]:
        """Cases without a prediction by ``model`` (or whose prediction file is gone), or without what the
        ranking needs (segmenting them again measures only that)."""
        return [name for name in self.cases if not self._predicted(name, model) or self._missing(name)]

    @property
    def needs(self) -> str | None:
        """What the ranking needs beyond a prediction: ``"disagreement"``, ``"descriptor"`` or None."""
        return NEEDS.get(self.priority)

    def unmeasured(self) -> list[str]:
        """Segmented cases that lack what the ranking needs (they are ranked after the others)."""
        return [n for n, c in self.cases.items() if c.row is not None and self._missing(n)]

    def iter_segment(self, predictor: Any, model: str, cancelled: Callable[[], bool] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, int, str]]:
        """Segment every pending case with ``predictor``; yields (done, total, file) after each, the
        state already saved. ``model`` names the model in the state (its path)."""
        from ..io import read_image, write_labels

        todo = self.pending(model)
        if self.model != model:
            self.model = model
            self._rows_version += 1
        self._segmenting = True  # a set-level order waits for the folder (order())
        try:
            for i, name in enumerate(todo, start=1):
                if cancelled is not None and cancelled():
                    return
                path = self.scans / name
                image = read_image(path)
                case = self.cases[name]
                fresh = not self._predicted(name, model)
                with naming(path):
                    summary = None  # the disc path's: where the review scores look
                    if fresh:
                        prediction, refused, summary = predict_case(predictor, image)
                        fit = predictor.check_fit(image.array, is_volume=image.is_volume)
                        nifti = image.is_volume and image.affine is not None
                        target = Path("predictions") / (name + (".nii.gz" if nifti else ".tif"))
                        write_labels(self.root / target, prediction.labels, like=image, overwrite=True)
                        case.row = case_row(self.case_name(name), prediction, predictor.labels, fit, file=name,
                                            spacing=image.spacing)
                        if refused:  # an empty mask to draw in, and the reason in the table
                            mark_refused(case.row, refused)
                        case.prediction, case.model, case.measured = str(target), model, []
                        self.descriptors.pop(name, None)  # another model's, if any
                    missing = self._missing(name)
                    if missing:
                        region = _review_region(predictor, image, summary)
                    if "disagreement" in missing:
                        case.row["disagreement"] = disagreement(predictor, region, image.is_volume, image.spacing)
                        case.measured.append("disagreement")
                    if "descriptor" in missing:
                        self.descriptors[name] = descriptor(predictor, region, image.is_volume, image.spacing)
                        write_descriptors(self.descriptors_path, self.descriptors)  # before the state that counts on it
                case.updated = _now()
                self._rows_version += 1
                self.save()
                if progress is not None:
                    progress(i, len(todo))
                yield i, len(todo), name
            self.write_report()
        finally:
            self._segmenting = False
            self._rows_version += 1

    # -- reading ---------------------------------------------------------------------------------
    def _rows(self) -> list[dict[str, Any]]:
        """The segmented cases' report rows, each with its descriptor when it is the current model's (the
        representative order compares descriptors of one model only)."""
        rows = []
        for name, c in self.cases.items():
            if c.row is None:
                continue
            row = {**c.row, "case": self.case_name(name)}  # the folder's names now, not those of the state
            if name in self.descriptors and (self.model is None or c.model == self.model):
                row["descriptor"] = self.descriptors[name]
            rows.append(row)
        return rows

    def order(self) -> list[str]:
        """Files in review order: the segmented ones ranked by ``priority`` (those lacking what it needs
        after the others), then the rest by name. A set-level order (``review.SET_RANKINGS``: every
        case's place depends on all the others, and it costs O(N^2) per case ranked) is computed once
        the folder is done: while :meth:`iter_segment` runs, the last one is kept and the newly
        segmented cases follow it by name. Orders are computed once per change of the rows."""
        key = (self._rows_version, self.priority, tuple(self.cases))
        if self._order_cache is not None and self._order_cache[0] == key:
            return list(self._order_cache[1])
        segmented = sorted(n for n, c in self.cases.items() if c.row is not None)
        if self.priority in SET_RANKINGS and self._segmenting:
            kept = [n for n in self._ranked if self.cases.get(n) is not None and self.cases[n].row is not None]
            return kept + sorted(set(segmented) - set(kept)) + sorted(set(self.cases) - set(segmented))
        rows = self._rows()
        if self.needs == "descriptor" and not any("descriptor" in r for r in rows):
            ranked = segmented  # nothing to rank by yet: by name
        else:
            ranked = [row["file"] for row in with_priority(rows, self.priority)] if rows else []
        if self.priority in SET_RANKINGS:
            self._ranked = ranked
        self._order_cache = (key, ranked + sorted(set(self.cases) - set(ranked)))
        return list(self._order_cache[1])

    def next_case(self, after: str | None = None) -> str | None:
        """The first untouched, segmented case in review order (after ``after``, wrapping round)."""
        order = [n for n in self.order() if self.cases[n].row is not None]
        if after in order:
            i = order.index(after)
            order = order[i + 1:] + order[:i]
        return next((n for n in order if self.cases[n].status == "untouched"), None)

    def load_image(self, name: str):
        from ..io import read_image

        return read_image(self.scans / name)

    def load_prediction(self, name: str) -> np.ndarray:
        from ..io import read_mask

        case = self.cases[name]
        if case.prediction is None:
            raise RamsegInputError(f"{name} has not been segmented yet", self.scans / name)
        return read_mask(self.root / case.prediction)

    def mark(self, name: str, status: str, case_id: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        case = self.cases[name]
        case.status, case.updated = status, _now()
        if case_id is not None:
            case.case_id = case_id
        self.save()

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.cases.values() if c.status == s) for s in STATUSES}

    def write_report(self) -> Path | None:
        """``report.csv`` of the segmented cases, in review order, with the descriptor sidecar."""
        rows = self._rows()
        if not rows or (self.needs == "descriptor" and not any("descriptor" in r for r in rows)):
            return None
        return write_report(self.root / REVIEW.report_name, rows, self.priority)


def predict_case(predictor: Any, image: Any) -> tuple[Any, str, dict]:
    """(prediction, why the model found nothing or "", what the optic disc path adds: ``predict_2d``'s
    summary, {} otherwise): a 2D image goes through ``core.disc.predict_2d`` (an optic disc model takes
    its two stages, as in the dock and ``ramseg predict``). A photograph in which no disc is found gets an
    empty mask, so the case stays in the list for the clinician to draw, and the message; one such
    photograph does not stop the folder. Its uncertainty is the highest there is (normalised entropy 1):
    the model could not do it, so it comes first for review."""
    if image.is_volume:
        return predictor.predict(image.array, is_volume=True, spacing=image.spacing), "", {}
    from .disc import is_disc_model, predict_2d
    from .disc.predict import no_disc_prediction

    try:
        prediction, summary = predict_2d(predictor, image.array, postprocess=False)
        return prediction, "", summary
    except RamsegInputError as exc:
        if not is_disc_model(predictor):
            raise
        return no_disc_prediction(predictor, image.array.shape), exc.problem, {}


def _review_region(predictor: Any, image: Any, summary: dict | None) -> np.ndarray:
    """What the review scores look at: an optic disc model's ROI of a photograph (``segmented_region``;
    found again when the case was segmented in an earlier session), else the image."""
    from .disc import is_disc_model, segmented_region

    if image.is_volume or not is_disc_model(predictor):
        return image.array
    if summary is None:
        summary = predict_case(predictor, image)[2]
    return segmented_region(image.array, summary)
