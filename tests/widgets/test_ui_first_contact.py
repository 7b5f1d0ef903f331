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


def _finished(widget, run, dice):
    widget._finished({"run_dir": str(run), "stopped": False, "iterations_done": 3, "validation": {"dice": dice}})


def test_the_train_dock_cautions_before_offering_a_model_that_found_nothing(make_napari_viewer, tiny_model,
                                                                            notifications):
    """Finding 16: a model whose source-validation Dice is 0.000 is offered with a caution, not as a success."""
    from fakes import FakeSegment

    from napari_ramseg.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    segment = FakeSegment()
    viewer.window.add_dock_widget(segment, name="Segment")
    widget = TrainWidget(viewer)
    _finished(widget, tiny_model, 0.0)
    assert widget.use_button.isEnabled()
    text = widget.status.text()
    assert "Dice 0.000" in text and "Caution" in text and "found (almost) nothing" in text
    assert "Caution" in widget.use_button.toolTip() and widget.use_button.text() != "Use in Segment"
    widget.use_button.click()
    assert segment.models == [str(tiny_model)]  # still the user's choice, with the caution repeated
    assert any("Caution" in m for m in notifications())

    _finished(widget, tiny_model, 0.81)  # a model that learnt: no caution left over
    assert "Caution" not in widget.status.text() and widget.use_button.text() == "Use in Segment"
    assert "Caution" not in widget.use_button.toolTip()
