"""A worklist: every scan of a folder segmented once, ranked for review, and what the clinician did with each.

Layout, inside the scans' folder unless another root is given (``ReviewConfig.worklist_dir``)::

    <scans>/ramseg-worklist/
      worklist.json           the state: model, ranking, and per case its status and report row
      predictions/<file>.tif  each case's prediction as the model made it (the "original")
      descriptors.npz         each case's encoder descriptor (``priority.descriptor``), for the
                              ``representative`` order; the report's sidecar (``core/review/report.py``)
      report.csv              the same rows as ``ramseg predict`` writes for the folder

A case is ``untouched`` until the user moves on from it, ``reviewed`` once looked at (Next, or saved unchanged) and
``corrected`` once a changed mask was saved into the corrections store (``core/finetune/corrections.py``; the
case id is kept). ``worklist.json`` is rewritten atomically after every change, so closing napari (or
a crash) loses at most the case being segmented; segmenting again skips the cases already done by
the same model. A scan segmented by another model is done again and keeps its status.

The state is kept by file name, unique in a folder. A case's name in the report (its ``case`` column)
is made by ``io.case_names``: the stem, or the whole file name where scans share a stem (``a.png`` beside
``a.tif``). It is made afresh from the folder whenever the worklist is opened, never read from the
state, so a state written when every case was its stem loads, and a scan joining under a taken stem
renames its namesake's case without touching its status.

What a ranking needs beyond the prediction (``priority.NEEDS``: the style disagreement, several network
passes; the descriptor of ``representative``, an encoder pass, about as long as the prediction itself
with the bundled vessel model on this CPU) is measured only while that ranking is chosen: switching to it
makes the cases without it pending, and segmenting again measures just that, keeping the predictions.
Once measured it is kept, so switching back and forth costs nothing. The ranking is kept in the state.

Each scan goes through ``core/review/pipeline.segment_case``, as in ``ramseg predict`` and the Segment dock, or
through its twin that a caller passes to :meth:`Worklist.iter_segment` (the Worklist dock's "server"
device: ``server/client.py``, which this module never imports, as the import contracts require). A
refused scan (the optic disc model on an MRI slice, a photograph without a visible disc) and a file that
cannot be read stay in the list with the reason, first for review; a refused one gets an empty mask to
draw in. A scan whose file was replaced since it was segmented (``worklist_state.scan_changed``) is
segmented again and starts untouched; until then it does not open with the old prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RamsegInputError, naming
from ...files import atomic_write_json
from ...io import case_names
from ...schema import read_json
from ..config import REVIEW_PRIORITIES, ReviewConfig
from .pipeline import CaseOptions, CaseResult, read_case, review_score, segment_case, unreadable_row
from .report import read_descriptors, with_priority, write_descriptors, write_report
from .priority import NEEDS, SET_RANKINGS
from ..tasks import empty_prediction
from .worklist_state import STATE_VERSION, STATUSES, WorkCase, _now, parse_state, scan_changed, scan_record

REVIEW = ReviewConfig()
SegmentCase = Callable[[Any, Any, CaseOptions], CaseResult]  # pipeline.segment_case's signature
ReviewScore = Callable[[Any, Any, str], Any]  # pipeline.review_score's (predictor, image, need)
STATE_NAME = "worklist.json"
__all__ = ["STATUSES", "Worklist", "WorkCase", "scan_files"]


def scan_files(folder: Path) -> list[Path]:
    """The readable images and volumes directly in ``folder``, by name."""
    from ...io import is_supported

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
        data = read_json(self.state_path, "worklist state")  # not JSON, too large, nested too deeply: one line
        try:
            self.cases, self.model, priority = parse_state(data)  # every field the worklist relies on
        except ValueError as exc:
            raise RamsegInputError(f"cannot read the worklist state ({exc}); move it away to start afresh",
                                   self.state_path) from None
        if priority in REVIEW_PRIORITIES:
            self.priority = priority
        for case in self.cases.values():
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
        """Whether ``name`` has a prediction by ``model`` whose file is still there, of the scan as it is now."""
        c = self.cases[name]
        return (c.row is not None and c.model == model and c.prediction is not None
                and (self.root / c.prediction).exists() and not self.stale(name))

    def stale(self, name: str) -> bool:
        """Whether the scan's file was replaced since it was segmented."""
        return scan_changed(self.scans / name, self.cases[name].scan)

    def _missing(self, name: str) -> list[str]:
        """What the ranking needs that a segmented case lacks: ``[]`` or ``[review.NEEDS[priority]]``."""
        need = self.needs
        if need is None or self.cases[name].refused:  # a refused scan has nothing to score
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
                     progress: Callable[[int, int], None] | None = None, segment: SegmentCase = segment_case,
                     score: ReviewScore = review_score) -> Iterator[tuple[int, int, str]]:
        """Segment every pending case with ``predictor``; yields (done, total, file) after each, the
        state already saved. ``model`` names the model in the state (its path). ``segment`` and ``score``:
        how one case is segmented and a review score taken (``pipeline.segment_case`` and ``review_score``
        by default; a server's twins take ``predictor`` as they do: its ``labels`` and ``channel_names``)."""
        todo = self.pending(model)
        if self.model != model:
            self.model = model
            self._rows_version += 1
        self._segmenting = True  # a set-level order waits for the folder (order())
        try:
            for i, name in enumerate(todo, start=1):
                if cancelled is not None and cancelled():
                    return
                with naming(self.scans / name):
                    if self._predicted(name, model):
                        self._measure_missing(predictor, name, score)
                    else:
                        self._segment_one(predictor, model, name, segment)
                self.cases[name].updated = _now()
                self._rows_version += 1
                self.save()
                if progress is not None:
                    progress(i, len(todo))
                yield i, len(todo), name
            self.write_report()
        finally:
            self._segmenting = False
            self._rows_version += 1

    def _segment_one(self, predictor: Any, model: str, name: str, segment: SegmentCase = segment_case) -> None:
        """Segment one scan (``segment``: ``pipeline.segment_case``) and keep its prediction, row and review
        score. A refused scan keeps an empty mask to draw in; a file that cannot be read, its reason only.
        The case is changed only once the result is in: a segmentation that fails or is stopped half-way
        (a server gone, Stop) leaves it as it was."""
        from ...io import write_labels

        path, case = self.scans / name, self.cases[name]
        record = scan_record(path)
        image, unreadable = read_case(path)
        result = None if image is None else segment(predictor, image, CaseOptions(review=self.needs))
        if self.stale(name):  # another image under this name: what was looked at was another scan
            case.status, case.case_id = "untouched", None
        self.descriptors.pop(name, None)  # another model's, if any
        case.model, case.measured, case.scan = model, [], record
        if result is None:
            case.row, case.prediction = unreadable_row(self.case_name(name), name, unreadable), None
            case.refused = unreadable
            return
        labels = result.prediction.labels if not result.refused else empty_prediction(
            predictor.channel_names, image.spatial_shape).labels
        nifti = image.is_volume and image.affine is not None
        target = Path("predictions") / (name + (".nii.gz" if nifti else ".tif"))
        write_labels(self.root / target, labels, like=image, overwrite=True)
        case.row = result.row(self.case_name(name), name, predictor.labels, predictor.channel_names,
                              image.spatial_shape, image.spacing)
        case.row.pop("descriptor", None)  # kept in the sidecar, not in the state
        case.prediction, case.refused = str(target), result.refusal
        if self.needs is not None and not result.refused:
            self._keep_score(name, self.needs, getattr(result, self.needs))

    def _measure_missing(self, predictor: Any, name: str, score: ReviewScore = review_score) -> None:
        """What the ranking needs for a case segmented before (its prediction is kept)."""
        need = self.needs
        if need is None or not self._missing(name):
            return
        image = self.load_image(name)
        self._keep_score(name, need, score(predictor, image, need))

    def _keep_score(self, name: str, need: str, score: Any) -> None:
        if need == "descriptor":
            self.descriptors[name] = score
            write_descriptors(self.descriptors_path, self.descriptors)  # before the state that counts on it
        else:
            self.cases[name].row[need] = score
            self.cases[name].measured.append(need)

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
        after the others), then the rest by name. A set-level order (``priority.SET_RANKINGS``: every
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
        order = [n for n in self.order() if self.cases[n].prediction is not None]
        if after in order:
            i = order.index(after)
            order = order[i + 1:] + order[:i]
        return next((n for n in order if self.cases[n].status == "untouched"), None)

    def load_image(self, name: str):
        from ...io import read_image

        return read_image(self.scans / name)

    def load_prediction(self, name: str) -> np.ndarray:
        from ...io import read_mask

        case = self.cases[name]
        if case.prediction is None:
            why = case.refused or "it has not been segmented yet"
            raise RamsegInputError(f"no prediction to open: {why}", self.scans / name)
        if self.stale(name):
            raise RamsegInputError("the file was replaced since it was segmented: segment the folder again",
                                   self.scans / name)
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

