"""``<root>/dataset.json``: the labels and splits a dataset states, on top of any layout.

::

    {
      "labels": {"names": ["disc", "cup"], "kind": "nested"},
      "splits": {"train": ["<domain>/<case>", ...], "val": [...], "test": [...]}
    }

``labels.kind`` is ``"nested"`` (default) or ``"exclusive"`` (see ``config.LabelScheme``); a bare
list of names is read as nested. ``splits`` is optional; its keys are ``train``, ``val`` and ``test``,
its entries ``"<domain>/<case stem>"``. Cases not listed stay unassigned (``split=None``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from napari_ramseg.core.labels import LabelScheme
from napari_ramseg.errors import RamsegInputError, one_line

from .base import Case

__all__ = ["SPLITS", "read_dataset_json", "apply_splits"]

SPLITS: tuple[str, ...] = ("train", "val", "test")


def read_dataset_json(root: Path) -> dict | None:
    """``{"path", "labels"?: LabelScheme, "splits"?: {"<domain>/<case>": split}}``; None without the file."""
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RamsegInputError(f"not valid JSON: {one_line(exc, 200, typed=False)}", path) from None
    if not isinstance(spec, dict):
        raise RamsegInputError("must hold a JSON object", path)
    out: dict = {"path": path}
    if "labels" in spec:
        lab = spec["labels"]
        try:
            if isinstance(lab, list):
                lab = {"names": lab}
            names = lab["names"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("labels.names must be a list of strings")
            out["labels"] = LabelScheme(tuple(names), lab.get("kind", "nested"))
        except (KeyError, TypeError, ValueError) as exc:
            raise RamsegInputError(
                f'bad "labels" ({exc}); expected {{"names": ["disc", "cup"], "kind": "nested" | "exclusive"}}', path
            ) from None
    if "splits" in spec:
        splits = spec["splits"]
        if not isinstance(splits, dict) or any(k not in SPLITS for k in splits):
            raise RamsegInputError(f'"splits" must be an object with keys among {list(SPLITS)}', path)
        assigned: dict[str, str] = {}
        for key, entries in splits.items():
            if not isinstance(entries, list):
                raise RamsegInputError(f'splits.{key} must be a list of "<domain>/<case>"', path)
            for entry in entries:
                if not isinstance(entry, str) or entry.count("/") != 1:
                    raise RamsegInputError(f'split entry {entry!r} must read "<domain>/<case>"', path)
                if entry in assigned and assigned[entry] != key:
                    raise RamsegInputError(f"case {entry!r} is in two splits ({assigned[entry]}, {key})", path)
                assigned[entry] = key
        out["splits"] = assigned
    return out


def apply_splits(cases: list[Case], assigned: dict[str, str], domains: Iterable[str], path: Path) -> None:
    """Set ``case.split`` from dataset.json; an entry of a chosen domain that names no case is an error."""
    by_key = {c.key: c for c in cases}
    selected = set(domains)
    for entry, split in assigned.items():
        domain = entry.split("/", 1)[0]
        if domain not in selected:
            continue
        case = by_key.get(entry)
        if case is None:
            raise RamsegInputError(f"split {split!r} names case {entry!r}, which does not exist", path)
        case.split = split
