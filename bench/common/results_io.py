"""Writing benchmark results: every JSON record, markdown table and plot the bench scripts write goes
through here, atomically (``napari_ramseg.files.atomic_write``: a stopped run never leaves half a
file for ``--report-only`` to choke on) and JSON-safe (nan and inf become null)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from napari_ramseg.core.evaluation.metrics import json_safe
from napari_ramseg.files import atomic_write


def write_with(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then renamed into place."""
    atomic_write(path, write)


def write_json(path: Path, data: Any) -> None:
    write_with(path, lambda t: t.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n", encoding="utf-8"))


def write_text(path: Path, text: str) -> None:
    write_with(path, lambda t: t.write_text(text, encoding="utf-8"))


def write_figure(path: Path, fig: Any, dpi: int = 110) -> None:
    """A matplotlib figure as PNG."""
    write_with(path, lambda t: fig.savefig(t, dpi=dpi, format="png"))
