"""Reading back a JSON file napari-ramseg wrote (or that a user handed it), in one line when it is bad.

Every file read back (``model.json``: ``core/models/checkpoint.py``; ``resume.json``: ``core/training/resume.py``; a
correction's ``provenance.json`` and ``split.json``: ``core/finetune/corrections.py``) is parsed by
:func:`read_json` and checked against a schema (a :class:`Schema`, pydantic, strict: no "5" for 5, no
``true`` for 1, no NaN or Infinity for a number) by :func:`validate`, in the one function that reads
that file. Any problem becomes a :class:`~napari_ramseg.errors.RamsegInputError` naming the file and
the first field at fault, never a traceback from deep inside the code that would use the value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RamsegInputError, one_line

__all__ = ["Schema", "read_json", "validate", "check", "describe", "Finite", "Count", "MAX_JSON_BYTES"]

MAX_JSON_BYTES = 64 << 20  # metrics.json with a long history is ~1 MB; nothing we write comes near this

Finite = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=10**9)]

S = TypeVar("S", bound="Schema")


class Schema(BaseModel):
    """A file's schema: strict types, finite numbers; keys it does not name are kept as they are."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, frozen=True)


def read_json(path: str | Path, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """The parsed content of a JSON file; RamsegInputError naming ``path`` when it cannot be read,
    is larger than ``limit`` bytes, is not JSON, or nests too deeply for the parser."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except FileNotFoundError:
        raise RamsegInputError(f"{what} not found", path) from None
    except OSError as exc:
        raise RamsegInputError(f"unreadable {what} ({one_line(exc, 160, typed=False)})", path) from None
    if len(raw) > limit:
        raise RamsegInputError(f"{what} is implausibly large (over {limit >> 20} MiB)", path)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RamsegInputError(f"unreadable {what} ({one_line(exc, 160, typed=False)})", path) from None
    except RecursionError:
        raise RamsegInputError(f"unreadable {what} (nested too deeply)", path) from None


def describe(exc: ValidationError) -> str:
    """A pydantic error as one short phrase: the first field at fault and what is wrong with it."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "the file"
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list)) else f", not {one_line(repr(value), 40, typed=False)}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg'][0].lower()}{first['msg'][1:]}{shown}{more}"


def check(schema: type[S], data: Any) -> S:
    """``data`` checked against ``schema``; a plain ValueError (:func:`describe`) for a reader that
    words its own RamsegInputError around several checks."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ValueError(describe(exc)) from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def validate(schema: type[S], data: Any, what: str, path: str | Path | None = None) -> S:
    """``data`` checked against ``schema``; RamsegInputError "invalid <what> (<field>: <problem>)"."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise RamsegInputError(f"invalid {what} ({describe(exc)})", path) from None
    except RecursionError:
        raise RamsegInputError(f"invalid {what} (nested too deeply)", path) from None
