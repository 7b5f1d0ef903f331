"""``report.csv``: one row per case of a folder, for ``ramseg predict --input DIR`` and the worklist dock.

A row holds the case's clinical measures (``core/evaluation/measures.py``: every structure's size and share, and
every registered task measure such as the optic disc's cup-to-disc ratio), its mean uncertainty, its
style disagreement when measured (``core/review/priority.py``), the fit score against the model's source domains
(``Predictor.check_fit``) and ``review_priority``: 1 is the case to look at first, by the ranking
``config.ReviewConfig.priority``. Columns are the union over the rows, in a fixed order: a measure one
case lacks (a volume's mL beside a photograph) is an empty cell.

A row may also carry the case's ``descriptor`` (``priority.descriptor``: the encoder's pooled bottleneck,
what the set-level ``representative`` order ranks by). A vector of hundreds of numbers is no column for
a spreadsheet, so it goes to a sidecar beside the report (``ReviewConfig.descriptors_name``, one array per
case keyed by its file name), written atomically with it, and the worklist keeps its own there too.
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...files import atomic_write
from ..config import ReviewConfig
from ..labels import LabelScheme
from ..evaluation.measures import measure_case
from .priority import mean_uncertainty, review_order

REVIEW = ReviewConfig()
# measures_reliable leads the measures: False when the scan does not fit the model (its measures are
# still given, the user decides), or when it was refused
LEAD = ("case", "file", "review_priority", "measures_reliable")
TRAIL = ("mean_uncertainty", "disagreement", "fit_score", "fits", "fit_note")
SIDECAR = ("descriptor",)  # row fields kept beside the report, never as its columns

Row = dict[str, Any]


def case_row(name: str, prediction: Any, scheme: LabelScheme, fit: Any = None, *, file: str = "",
             spacing: Sequence[float] | None = None, disagreement: float | None = None,
             descriptor: np.ndarray | None = None, measures: Mapping[str, Any] | None = None) -> Row:
    """One case's row (without its priority, which depends on the other cases); ``measures``: the
    case's ``measure_case``, when already taken."""
    row: Row = {"case": name, "file": file}
    row.update(measure_case(prediction.labels, scheme, spacing) if measures is None else measures)
    row["measures_reliable"] = None if fit is None else bool(fit.fits)
    row["mean_uncertainty"] = mean_uncertainty(prediction)
    row["disagreement"] = disagreement
    row["fit_score"] = None if fit is None else fit.score
    row["fits"] = None if fit is None else bool(fit.fits)
    row["fit_note"] = "" if fit is None else fit.differs
    if descriptor is not None:
        row["descriptor"] = np.asarray(descriptor, dtype=np.float64)
    return row


def mark_refused(row: Row, reason: str) -> Row:
    """A row whose case the model refused (an optic disc photograph without a visible disc): it does not
    fit, and the reason leads its ``fit_note``."""
    row["fits"] = row["measures_reliable"] = False
    row["fit_note"] = "; ".join(filter(None, [reason, row.get("fit_note", "")]))
    return row


def with_priority(rows: Sequence[Row], method: str = REVIEW.priority, seed: int = REVIEW.seed) -> list[Row]:
    """The rows with ``review_priority`` set (1 first), in that order."""
    by_name = {row["case"]: row for row in rows}
    if len(by_name) != len(rows):
        raise ValueError("case names in a report must be unique")
    order = review_order(by_name, method, seed)
    return [{**by_name[name], "review_priority": i} for i, name in enumerate(order, start=1)]


def columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """LEAD, then the measures in the order first seen, then TRAIL."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(k for k in row if k not in LEAD and k not in TRAIL and k not in SIDECAR))
    return [*LEAD, *seen, *TRAIL]


# a cell starting with one of these is run as a formula by spreadsheets (a scan named "=HYPERLINK(...).png");
# OWASP's advice: prefix such a text cell with a quote. Numbers are written by us and never prefixed.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    if isinstance(value, np.floating):  # a float32 measure is written as a float64 one (and as a server sends it)
        value = float(value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_report(path: str | Path, rows: Sequence[Row], method: str = REVIEW.priority,
                 seed: int = REVIEW.seed) -> Path:
    """Rank ``rows`` and write them, in review order, to ``path`` (atomically); the rows' descriptors go to
    the sidecar beside it (:func:`descriptors_path`), and a sidecar left by an earlier report without them
    is removed, so the two always describe the same cases."""
    ranked = with_priority(rows, method, seed)
    names = columns(ranked)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=names, extrasaction="ignore")
            writer.writeheader()
            for row in ranked:
                writer.writerow({k: _cell(row.get(k)) for k in names})

    path = Path(path)
    found = {row_key(row): row["descriptor"] for row in ranked if row.get("descriptor") is not None}
    if found:
        write_descriptors(descriptors_path(path), found)
    else:
        descriptors_path(path).unlink(missing_ok=True)
    atomic_write(path, write)
    return path


def row_key(row: Mapping[str, Any]) -> str:
    """The name a row's descriptor is kept under: its file (unique in a folder), else its case."""
    return str(row.get("file") or row["case"])


def descriptors_path(report: str | Path) -> Path:
    """The descriptor sidecar of a report: ``ReviewConfig.descriptors_name`` in the same folder."""
    return Path(report).with_name(REVIEW.descriptors_name)


def write_descriptors(path: str | Path, descriptors: Mapping[str, Any]) -> Path:
    """``descriptors`` (name -> vector) to an ``.npz`` (atomically): ``names`` and one array per case
    (``d0``, ``d1``, ... in that order), so vectors of different lengths can sit side by side."""
    names = list(descriptors)
    # float32: the encoder's own precision (review.descriptor pools in float32), so nothing is lost
    arrays = {f"d{i}": np.asarray(descriptors[n], dtype=np.float32).ravel() for i, n in enumerate(names)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, names=np.array(names, dtype=str), **arrays)

    path = Path(path)
    atomic_write(path, write)
    return path


def read_descriptors(path: str | Path) -> dict[str, np.ndarray]:
    """A sidecar's descriptors, name -> vector (float64); empty when there is no sidecar. A damaged one
    raises ValueError (the caller says which file)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [str(n) for n in data["names"]]
            return {n: data[f"d{i}"].astype(np.float64) for i, n in enumerate(names)}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read the descriptors ({exc})") from None


def read_report(path: str | Path) -> list[dict[str, str]]:
    """The rows of a written report, as text (for tests and scripts)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
