"""``worklist.json``: a worklist's state, validated in one place as it is read back, and the record of
what each scan's file held when it was segmented.

The state is a file the user (or another program) may have edited or damaged. Everything the worklist
later relies on is checked here, once, against ``StateSchema`` (as every file read back is, with
``napari_ramseg/schema.py``), and a bad entry is one line naming the field: a case or its report row
that is not an object, a row without its ``file``, a prediction path that leaves the worklist's
folder, a scan record of the wrong shape.

A scan replaced by another file under the same name must not open beside the old prediction (and have
that prediction saved as the correction's "original"): each case records its scan's size, modification
time and SHA-256 when segmented (``scan_record``); ``scan_changed`` compares the size and time first and
hashes the file only when they differ, so an unchanged folder costs one ``stat`` per scan.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import Field

from ...files import file_sha256
from ...schema import Schema, check

STATUSES = ("untouched", "reviewed", "corrected")
STATE_VERSION = 1


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class WorkCase:
    """One scan of the worklist: ``file`` is its name in the scans' folder (the key)."""

    file: str
    status: str = "untouched"
    row: dict[str, Any] | None = None  # its report row (measures, uncertainty, fit) once segmented
    prediction: str | None = None  # the prediction's file, relative to the worklist root
    model: str | None = None  # the model that made it
    case_id: str | None = None  # the saved correction, once corrected
    updated: str = field(default_factory=_now)
    measured: list[str] = field(default_factory=list)  # scores beyond the prediction taken for it ("disagreement")
    scan: dict[str, Any] | None = None  # what the scan's file held when segmented (``scan_record``)
    refused: str = ""  # why the model refused the scan ('' when it segmented it)


class RowSchema(Schema):
    """A case's report row: its measures are free-form (``core/review/report.py``), its ``file`` is relied on."""

    file: str


class ScanSchema(Schema):
    size: Annotated[int, Field(ge=0)]
    mtime_ns: int
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class WorkCaseSchema(Schema):
    file: str
    status: str = "untouched"
    row: RowSchema | None = None
    prediction: str | None = None
    model: str | None = None
    case_id: str | None = None
    updated: str = ""
    measured: list[str] = []
    scan: ScanSchema | None = None
    refused: str = ""


class StateSchema(Schema):
    version: Literal[1]
    cases: dict[str, WorkCaseSchema]
    model: str | None = None
    priority: str | None = None


def parse_state(data: Any) -> tuple[dict[str, WorkCase], str | None, str | None]:
    """(cases by file name, model, priority) of a loaded ``worklist.json``, checked against
    ``StateSchema`` (``napari_ramseg/schema.py``) and for what a schema cannot say (a case's ``file`` is
    its key, its prediction lies inside the worklist's folder); ValueError in one line naming the field."""
    state = check(StateSchema, data)
    cases = {}
    for name, entry in state.cases.items():
        if entry.file != name:
            raise ValueError(f"cases.{name}.file: {entry.file!r} is not the case's own name")
        if entry.prediction is not None and not _inside(entry.prediction):
            raise ValueError(f"cases.{name}.prediction: {entry.prediction!r} lies outside the worklist's folder")
        raw = data["cases"][name]  # the row as written: its measures are kept, not re-typed
        case = WorkCase(**{k: raw[k] for k in raw if k in _FIELDS})
        if case.status not in STATUSES:  # an unknown mark counts as not looked at, as before
            case.status = "untouched"
        cases[name] = case
    return cases, state.model, state.priority


_FIELDS = {f.name for f in fields(WorkCase)}


def _inside(relative: str) -> bool:
    path = PurePosixPath(relative.replace("\\", "/"))
    return bool(relative) and not path.is_absolute() and ".." not in path.parts and ":" not in relative


def scan_record(path: Path) -> dict[str, Any]:
    """What ``path`` holds now: its size, modification time (ns) and SHA-256."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(path)}


def scan_changed(path: Path, record: dict[str, Any] | None) -> bool:
    """Whether ``path`` holds another file than when ``record`` was taken (False without a record: a
    state written before scans were recorded is trusted, not segmented again)."""
    if record is None:
        return False
    try:
        stat = path.stat()
    except OSError:
        return True
    if stat.st_size == record["size"] and stat.st_mtime_ns == record["mtime_ns"]:
        return False
    return stat.st_size != record["size"] or file_sha256(path) != record["sha256"]
