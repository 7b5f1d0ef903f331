"""A worklist: every scan of a folder segmented once, ranked for review, and what the clinician did with each.

Layout, inside the scans' folder unless another root is given (``ReviewConfig.worklist_dir``)::

    <scans>/ramseg-worklist/
      worklist.json           the state: model, ranking, and per case its status and report row
      predictions/<file>.tif  each case's prediction as the model made it (the "original")
      report.csv              the same rows as ``ramseg predict`` writes for the folder

A case is ``untouched`` until opened, ``reviewed`` once looked at (or saved unchanged) and
``corrected`` once a changed mask was saved into the corrections store (``core/corrections.py``; the
case id is kept). ``worklist.json`` is rewritten atomically after every change, so closing napari (or
a crash) loses at most the case being segmented; segmenting again skips the cases already done by
the same model. A scan segmented by another model is done again and keeps its status.
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
from .checkpoint import atomic_write_json
from .config import ReviewConfig
from .report import case_row, with_priority, write_report
from .review import disagreement

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

    def __init__(self, scans: str | Path, root: str | Path | None = None, priority: str = REVIEW.priority):
        self.scans = Path(scans).expanduser()
        self.root = Path(root).expanduser() if root is not None else self.scans / REVIEW.worklist_dir
        self.priority = priority
        self.cases: dict[str, WorkCase] = {}
        self._load()
        files = scan_files(self.scans)
        if not files:
            raise RamsegInputError("no readable images (PNG, JPEG, TIFF, NIfTI) in this folder", self.scans)
        # new scans join as untouched; scans no longer in the folder leave the list
        self.cases = {p.name: self.cases.get(p.name) or WorkCase(p.name) for p in files}

    @property
    def state_path(self) -> Path:
        return self.root / STATE_NAME

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
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RamsegInputError(f"cannot read the worklist state ({exc}); move it away to start afresh",
                                   self.state_path) from None
        for case in self.cases.values():
            if case.status not in STATUSES:
                case.status = "untouched"

    def save(self) -> None:
        data = {"version": STATE_VERSION, "scans": str(self.scans.resolve()), "priority": self.priority,
                "cases": {name: asdict(case) for name, case in self.cases.items()}}
        atomic_write_json(self.state_path, data)

    # -- segmenting ------------------------------------------------------------------------------
    def pending(self, model: str) -> list[str]:
        """Cases without a prediction by ``model`` (or whose prediction file is gone)."""
        return [name for name, c in self.cases.items()
                if c.row is None or c.model != model or c.prediction is None
                or not (self.root / c.prediction).exists()]

    def iter_segment(self, predictor: Any, model: str, cancelled: Callable[[], bool] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, int, str]]:
        """Segment every pending case with ``predictor``; yields (done, total, file) after each, the
        state already saved. ``model`` names the model in the state (its path)."""
        from ..io import read_image, write_labels

        todo = self.pending(model)
        for i, name in enumerate(todo, start=1):
            if cancelled is not None and cancelled():
                return
            path = self.scans / name
            image = read_image(path)
            with naming(path):
                prediction = predictor.predict(image.array, is_volume=image.is_volume, spacing=image.spacing)
                fit = predictor.check_fit(image.array, is_volume=image.is_volume)
                score = (disagreement(predictor, image.array, image.is_volume, image.spacing)
                         if self.priority == "disagreement" else None)
            target = Path("predictions") / (name + (".nii.gz" if image.is_volume and image.affine is not None
                                                    else ".tif"))
            write_labels(self.root / target, prediction.labels, like=image, overwrite=True)
            case = self.cases[name]
            case.row = case_row(Path(name).stem, prediction, predictor.labels, fit, file=name,
                                spacing=image.spacing, disagreement=score)
            case.prediction, case.model, case.updated = str(target), model, _now()
            self.save()
            if progress is not None:
                progress(i, len(todo))
            yield i, len(todo), name
        self.write_report()

    # -- reading ---------------------------------------------------------------------------------
    def order(self) -> list[str]:
        """Files in review order: the segmented ones ranked by ``priority``, then the rest by name."""
        done = {name: c.row for name, c in self.cases.items() if c.row is not None}
        ranked = [row["file"] for row in with_priority(list(done.values()), self.priority)] if done else []
        return ranked + sorted(set(self.cases) - set(ranked))

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
        rows = [c.row for c in self.cases.values() if c.row is not None]
        return write_report(self.root / REVIEW.report_name, rows, self.priority) if rows else None
