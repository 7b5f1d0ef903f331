"""The models a server offers, by name: the bundled ones and those in the models folder it was given.

A request names a model; it never names a path. ``Catalog.path(name)`` is the only way from a name to
a file, and it looks the name up among the entries found: the bundled models (``models.py``) and, in
the models folder, run folders (``model.json`` + ``model.safetensors``), ``.safetensors`` files with
their ``.json`` and BioImage.IO packages made by ``ramseg export`` (``.zip`` or a folder). The folder is
scanned again on each look-up, so a run folder copied in while the server runs is offered at once.
Loaded predictors are kept per (model, precision) while their weights file is unchanged; their network
passes go through ``batching.BatchedForward``, so cases that arrive together share a pass.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RamsegInputError
from .batching import BatchedForward
from .jobs import FINETUNED

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
KEPT_PREDICTORS = 4  # loaded models kept in memory, the least recently used dropped first


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    source: str  # "bundled" or "models folder"


def _folder_entries(folder: Path) -> list[Entry]:
    """The models in ``folder`` (not below it), each under its folder name or its file's stem."""
    from ..core.models.run_folder import METADATA_NAME
    from ..core.models.package import is_package

    entries = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir() and ((child / METADATA_NAME).is_file() or is_package(child)):
            entries.append(Entry(child.name, child, "models folder"))
        elif child.is_dir() and child.name.endswith(FINETUNED):  # versions fine-tuned on this server
            entries += [Entry(f"{child.name}.{v.name}", v, "fine-tuned on this server")
                        for v in sorted(child.glob("v[0-9][0-9][0-9]*")) if (v / METADATA_NAME).is_file()]
        elif child.is_file() and child.suffix.lower() in (".safetensors", ".zip"):
            entries.append(Entry(child.stem, child, "models folder"))
    return [e for e in entries if NAME.match(e.name)]


class Catalog:
    """Name -> model, for one server: bundled models first; a models-folder entry with a bundled
    model's name (or an alias) is not offered, so a name always means the same model."""

    def __init__(self, models_dir: str | Path | None = None, device: str = "auto", batch: int | None = None):
        """``batch``: the most cases one network pass takes (None: ``Predictor.batch_for``, the rows a
        pass takes at that size on this device; 1: no batching)."""
        self.models_dir = None if models_dir is None else Path(models_dir).expanduser().resolve()
        if self.models_dir is not None and not self.models_dir.is_dir():
            raise RamsegInputError("the models folder does not exist or is not a folder", self.models_dir)
        self.device, self.batch = device, batch
        self.device_lock = threading.Lock()  # one network pass at a time on the device, for every model
        self._predictors: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def entries(self) -> dict[str, Entry]:
        from ..models import ALIASES, bundled_model_path, bundled_models

        found = {name: Entry(name, bundled_model_path(name), "bundled") for name in bundled_models()}
        taken = set(found) | set(ALIASES)
        if self.models_dir is not None:
            for entry in _folder_entries(self.models_dir):
                if entry.name.lower() not in taken:
                    found[entry.name] = entry
                    taken.add(entry.name.lower())
        return found

    def entry(self, name: str) -> Entry:
        from ..models import canonical_name

        entries = self.entries()
        key = canonical_name(name) or name
        if key not in entries:
            raise LookupError(f"no model named {name[:80]!r} on this server; models: {', '.join(entries) or 'none'}. "
                              "A request names a model (GET /models lists them), never a path")
        return entries[key]

    def describe(self, entry: Entry) -> dict[str, Any]:
        """What ``GET /models`` says of one model: its label scheme, sources, card and kind; or, for a
        broken one, why it cannot be used."""
        from ..core.models.checkpoint import load_metadata

        out: dict[str, Any] = {"name": entry.name, "source": entry.source}
        try:
            meta = load_metadata(entry.path)
        except RamsegInputError as exc:
            return {**out, "usable": False, "problem": exc.problem}
        labels = meta.config.labels
        channels = list(labels.names) if labels.kind == "nested" else ["background", *labels.names]
        return {**out, "usable": True, "labels": labels.to_dict(), "channel_names": channels,
                "threshold": meta.config.threshold,
                "source_domains": list(meta.domains), "card": _card(entry.path), **self._lineage(meta)}

    def _lineage(self, meta: Any) -> dict[str, Any]:
        """A fine-tuned version's round and the models it descends from, by their names on this server
        (a model not offered here is ``"(not served)"``: the server's paths are not told)."""
        record = meta.extra.get("finetune")
        if not isinstance(record, dict):
            return {}
        names = {str(e.path.resolve()): e.name for e in self.entries().values()}
        lineage = [names.get(str(p), "(not served)") for p in record.get("lineage") or []]
        return {"round": record.get("round"), "lineage": lineage,
                "heldout_dice": {"before": record.get("before_dice"), "after": record.get("after_dice")}}

    def predictor(self, name: str, precision: str = "auto") -> tuple[Entry, Any]:
        """The loaded model (a ``core.inference.predictor.Predictor``), kept while its weights are unchanged."""
        from ..core.models.checkpoint import resolve_model_path
        from ..core.inference.predictor import Predictor

        entry = self.entry(name)
        weights, _ = resolve_model_path(entry.path)
        key = (entry.name, str(entry.path), precision, weights.stat().st_mtime_ns)
        with self._lock:
            if key in self._predictors:
                self._predictors.move_to_end(key)
                return entry, self._predictors[key]
        predictor = Predictor.from_path(entry.path, device=self.device, precision=precision)
        limit = predictor.batch_for if self.batch is None else (lambda height, width: self.batch)
        predictor.route_forward(lambda forward: BatchedForward(forward, limit, self.device_lock))
        with self._lock:
            self._predictors[key] = predictor
            while len(self._predictors) > KEPT_PREDICTORS:
                self._predictors.popitem(last=False)
        return entry, predictor


def _card(path: Path) -> str | None:
    """The model card's text (``MODEL.md`` in a model's folder), None when it has none."""
    from ..models import CARD_NAME

    card = (path if path.is_dir() else path.parent) / CARD_NAME
    if path.is_file() and path.parent.name != path.stem:  # a file among others: only its own card, if any
        card = path.with_name(f"{path.stem}.{CARD_NAME}")
    try:
        return card.read_text(encoding="utf-8") if card.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None
