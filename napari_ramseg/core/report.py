"""``report.csv``: one row per case of a folder, for ``ramseg predict --input DIR`` and the worklist dock.

A row holds the case's clinical measures (``core/measures.py``: every structure's size and share, and
every registered task measure such as the optic disc's cup-to-disc ratio), its mean uncertainty, its
style disagreement when measured (``core/review.py``), the fit score against the model's source domains
(``Predictor.check_fit``) and ``review_priority``: 1 is the case to look at first, by the ranking
``config.ReviewConfig.priority``. Columns are the union over the rows, in a fixed order: a measure one
case lacks (a volume's mL beside a photograph) is an empty cell.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_write
from .config import LabelScheme, ReviewConfig
from .measures import measure_case
from .review import mean_uncertainty, review_order

REVIEW = ReviewConfig()
LEAD = ("case", "file", "review_priority")
TRAIL = ("mean_uncertainty", "disagreement", "fit_score", "fits", "fit_note")

Row = dict[str, Any]


def case_row(name: str, prediction: Any, scheme: LabelScheme, fit: Any = None, *, file: str = "",
             spacing: Sequence[float] | None = None, disagreement: float | None = None) -> Row:
    """One case's row (without its priority, which depends on the other cases)."""
    row: Row = {"case": name, "file": file}
    row.update(measure_case(prediction.labels, scheme, spacing))
    row["mean_uncertainty"] = mean_uncertainty(prediction)
    row["disagreement"] = disagreement
    row["fit_score"] = None if fit is None else fit.score
    row["fits"] = None if fit is None else bool(fit.fits)
    row["fit_note"] = "" if fit is None else fit.differs
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
        seen.update(dict.fromkeys(k for k in row if k not in LEAD and k not in TRAIL))
    return [*LEAD, *seen, *TRAIL]


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_report(path: str | Path, rows: Sequence[Row], method: str = REVIEW.priority,
                 seed: int = REVIEW.seed) -> Path:
    """Rank ``rows`` and write them, in review order, to ``path`` (atomically)."""
    ranked = with_priority(rows, method, seed)
    names = columns(ranked)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=names, extrasaction="ignore")
            writer.writeheader()
            for row in ranked:
                writer.writerow({k: _cell(row.get(k)) for k in names})

    path = Path(path)
    atomic_write(path, write)
    return path


def read_report(path: str | Path) -> list[dict[str, str]]:
    """The rows of a written report, as text (for tests and scripts)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
