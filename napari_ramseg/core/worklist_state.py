"""``worklist.json``: a worklist's state, validated in one place as it is read back, and the record of
what each scan's file held when it was segmented.

The state is a file the user (or another program) may have edited or damaged. Everything the worklist
later relies on is checked here, once, and a bad entry is one line naming the case and the field:
a case or its report row that is not an object, a row without its ``file``, a prediction path that
leaves the worklist's folder, a status not known, a scan record of the wrong shape.

A scan replaced by another file under the same name must not open beside the old prediction (and have
that prediction saved as the correction's "original"): each case records its scan's size, modification
time and SHA-256 when segmented (``scan_record``); ``scan_changed`` compares the size and time first and
hashes the file only when they differ, so an unchanged folder costs one ``stat`` per scan.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

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


def parse_state(data: Any) -> tuple[dict[str, WorkCase], str | None, str | None]:
    """(cases by file name, model, priority) of a loaded ``worklist.json``; ValueError, in one line
    naming the case and field, for anything the worklist could not rely on."""
    if not isinstance(data, dict):
        raise ValueError("the state is not an object")
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"version {data.get('version')!r}")
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, dict):
        raise ValueError("'cases' is not an object")
    cases = {name: _parse_case(name, raw) for name, raw in raw_cases.items()}
    model, priority = data.get("model"), data.get("priority")
    if model is not None and not isinstance(model, str):
        raise ValueError("'model' is not a string")
    return cases, model, priority if isinstance(priority, str) else None


def _parse_case(name: str, raw: Any) -> WorkCase:
    def bad(what: str) -> ValueError:
        return ValueError(f"case {name!r}: {what}")

    if not isinstance(raw, dict):
        raise bad("not an object")
    if raw.get("file") != name:
        raise bad("has no 'file'" if "file" not in raw else f"'file' is {raw['file']!r}, not its own name")
    known = {f.name for f in fields(WorkCase)}
    case = WorkCase(**{k: v for k, v in raw.items() if k in known})
    if case.row is not None:
        if not isinstance(case.row, dict):
            raise bad("its row is not an object")
        if not isinstance(case.row.get("file"), str):
            raise bad("its row has no 'file'")
    for key in ("prediction", "model", "case_id"):
        if getattr(case, key) is not None and not isinstance(getattr(case, key), str):
            raise bad(f"'{key}' is not a string")
    if case.prediction is not None and not _inside(case.prediction):
        raise bad(f"the prediction {case.prediction!r} lies outside the worklist's folder")
    if not isinstance(case.measured, list) or not all(isinstance(m, str) for m in case.measured):
        raise bad("'measured' is not a list of names")
    if case.scan is not None and not _valid_record(case.scan):
        raise bad("'scan' is not a record of size, mtime_ns and sha256")
    if not isinstance(case.refused, str) or not isinstance(case.updated, str):
        raise bad("'refused' or 'updated' is not a string")
    if case.status not in STATUSES:  # an unknown mark counts as not looked at, as before
        case.status = "untouched"
    return case


def _inside(relative: str) -> bool:
    path = PurePosixPath(relative.replace("\\", "/"))
    return bool(relative) and not path.is_absolute() and ".." not in path.parts and ":" not in relative


def _valid_record(record: Any) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("size"), int) and isinstance(record.get("mtime_ns"), int)
            and isinstance(record.get("sha256"), str) and len(record["sha256"]) == 64)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_record(path: Path) -> dict[str, Any]:
    """What ``path`` holds now: its size, modification time (ns) and SHA-256."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


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
    return stat.st_size != record["size"] or _sha256(path) != record["sha256"]
