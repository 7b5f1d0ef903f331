"""Handing a trained model to the docked Segment widget (used by the Train and fine-tune docks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def find_model_consumers(viewer: Any) -> list[Any]:
    """Docked widgets that take a model through ``set_model(path)`` (the Segment widget), if any."""
    window = getattr(viewer, "window", None)
    if window is None:
        return []
    widgets: list[Any] = []
    try:
        widgets = list(window.dock_widgets.values())  # napari >= 0.6.2: the inner widgets
    except Exception:
        docks = getattr(window, "_wrapped_dock_widgets", None) or {}
        for dock in list(docks.values()):
            try:
                widgets.append(dock.widget())
            except Exception:
                continue
    out = []
    for widget in widgets:
        for candidate in (widget, getattr(widget, "native", None)):
            if candidate is not None and callable(getattr(candidate, "set_model", None)):
                out.append(candidate)
                break
    return out


def offer_model(viewer: Any, path: str | Path) -> int:
    """Give the model to every docked Segment widget; returns how many took it (failures are reported)."""
    from napari.utils.notifications import show_warning

    taken = 0
    for widget in find_model_consumers(viewer):
        try:
            widget.set_model(str(path))
            taken += 1
        except Exception as exc:  # another engineer's widget: never let it break this one
            show_warning(f"the Segment widget could not load {path}: {exc}")
    return taken
