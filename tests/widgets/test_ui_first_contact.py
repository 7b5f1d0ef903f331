"""What a new user found on first contact with the docks (issue 29, findings 5, 7, 16 and 19)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

PLUGIN = "napari-ramseg"


def _clipped(widget) -> list[str]:
    """The visible controls of a dock that the user cannot see in full: squeezed below the height
    they need, or lying below the dock's bottom edge with no scroll bar to reach them."""
    from qtpy.QtCore import QPoint
    from qtpy.QtWidgets import QAbstractScrollArea, QLabel, QWidget

    dock = widget.parent()
    bottom = dock.mapToGlobal(QPoint(0, dock.height())).y()
    cut = []
    for child in widget.findChildren(QWidget):
        if not child.isVisibleTo(dock) or child.findChildren(QWidget) and not isinstance(child, QLabel):
            continue  # containers: their leaves are checked
        need = (child.heightForWidth(child.width()) if isinstance(child, QLabel) and child.wordWrap()
                else child.minimumSizeHint().height())
        name = f"{type(child).__name__} {getattr(child, 'text', lambda: '')()[:30]!r}"
        if child.height() + 1 < need:
            cut.append(f"{name}: {child.height()} px of {need}")
            continue
        child_bottom = child.mapToGlobal(QPoint(0, child.height())).y()
        if child_bottom <= bottom + 1:
            continue
        scroller, parent = None, child.parentWidget()
        while parent is not None and parent is not dock:
            if isinstance(parent, QAbstractScrollArea) and parent is not child:
                scroller = parent
                break
            parent = parent.parentWidget()
        if scroller is None or scroller.verticalScrollBar().maximum() == 0:
            cut.append(f"{name}: below the dock's edge, no scroll bar")
    return cut


def test_two_docks_stacked_scroll_instead_of_clipping(make_napari_viewer, qtbot):
    """Finding 7: two docks one above the other in a 1000 px high window: nothing is cut."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    _, restoration = viewer.window.add_plugin_dock_widget(PLUGIN, "Restoration preview", tabify=False)
    _, mixup = viewer.window.add_plugin_dock_widget(PLUGIN, "Amplitude mixup preview", tabify=False)
    mixup.source_combo.setCurrentText("folder of images")  # the folder row and the λ help text
    qtbot.wait(200)
    assert restoration.parent().geometry().bottom() <= mixup.parent().geometry().top()  # stacked, not tabbed
    for widget in (restoration, mixup):
        assert _clipped(widget) == [], type(widget).__name__
    # scrolled to its end, the last control (the status line) is in view
    from qtpy.QtCore import QPoint

    area = mixup.scroll_area
    area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())
    qtbot.wait(50)
    assert mixup.status.mapTo(area.viewport(), QPoint(0, mixup.status.height())).y() <= area.viewport().height()
