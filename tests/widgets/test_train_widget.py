"""The Train widget drives a real child-process training run: progress, live curves, Stop, hand-over."""

from __future__ import annotations

import time

import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QWidget

from napari_ramseg.core.checkpoint import load_model
from napari_ramseg.widgets.train import TrainWidget, find_model_consumers

pytestmark = pytest.mark.gui


class FakeSegment(QWidget):
    """Stands in for the Segment widget: anything docked with set_model(path)."""

    def __init__(self):
        super().__init__()
        self.models: list[str] = []

    def set_model(self, path: str) -> None:
        self.models.append(path)


def _widget(make_napari_viewer, synthetic_data, out, iterations):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.data_edit.setText(str(synthetic_data))
    assert widget.refresh_domains() == ["siteA", "siteB"]
    widget.iterations_spin.setValue(iterations)
    widget.size_spin.setValue(32)
    widget.batch_spin.setValue(4)
    widget.width_spin.setValue(4)
    widget.device_combo.setCurrentText("cpu")
    widget.out_edit.setText(str(out))
    return viewer, widget


def test_train_widget_shows_progress_and_stops_at_once(make_napari_viewer, qtbot, synthetic_data, tmp_path):
    viewer, widget = _widget(make_napari_viewer, synthetic_data, tmp_path / "run", 10_000)
    widget.target_combo.setCurrentText("siteB")  # holding out a domain unchecks it as a source
    assert widget.checked_domains() == ["siteA"]
    request = widget.build_request()
    assert request.domains == ["siteA"] and request.target == "siteB" and request.base_width == 4
    widget.target_combo.setCurrentText("(none)")
    widget.domain_list.item(1).setCheckState(Qt.Checked)
    process = widget.start()
    try:
        assert not widget.start_button.isEnabled() and widget.stop_button.isEnabled()
        qtbot.waitUntil(lambda: len(widget.plot.series["loss"]) >= 2, timeout=180_000)
        assert widget.progress.maximum() == 10_000 and widget.progress.value() >= 2
        assert "Iteration" in widget.status.text()
        started = time.monotonic()
        widget.stop()
        assert not process.is_alive() and time.monotonic() - started < 5.0
    finally:
        if process.is_alive():
            process.stop()
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    assert widget.status.text().startswith("Stopped after")
    assert not widget.timer.isActive()


def test_train_widget_finishes_and_offers_the_model(make_napari_viewer, qtbot, synthetic_data, tmp_path):
    viewer, widget = _widget(make_napari_viewer, synthetic_data, tmp_path / "run", 2)
    segment = FakeSegment()
    viewer.window.add_dock_widget(segment, name="Segment")
    assert find_model_consumers(viewer) == [segment]
    widget.start()
    qtbot.waitUntil(lambda: widget.process.finished, timeout=180_000)
    assert widget.process.error is None, widget.process.traceback
    assert widget.last_run == tmp_path / "run" and widget.use_button.isEnabled()
    assert len(widget.plot.series["val Dice"]) >= 1 and widget.progress.value() == 2
    load_model(widget.last_run)
    widget.use_button.click()
    assert segment.models == [str(tmp_path / "run")]


def test_train_widget_reports_bad_folders(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    widget.data_edit.setText(str(tmp_path / "nowhere"))
    assert widget.refresh_domains() == []
    assert "dataset folder not found" in widget.status.text()
    widget.data_edit.setText("")
    assert widget.start() is None and "choose a data folder" in widget.status.text()
