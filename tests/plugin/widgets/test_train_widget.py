"""The Train widget drives a real child-process training run: progress, live curves, Stop, Continue, hand-over;
it offers ramseg train's options with the config's defaults, and a child that dies says why."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from qtpy.QtCore import Qt

from fakes import FakeSegment
from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.config import TrainConfig
from napari_ramseg.core.training.job import TrainRequest
from napari_ramseg.core.training.process import TrainProcess
from napari_ramseg.plugin.widgets.train import TrainWidget, find_model_consumers

pytestmark = pytest.mark.gui


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


def test_train_widget_shows_progress_stops_and_continues(make_napari_viewer, qtbot, synthetic_data, tmp_path):
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
        widget.stop()  # as Ctrl-C stops ramseg train: after the step, with a resume state (SIGTERM to the child)
        assert not widget.stop_button.isEnabled() and "Stopping after the current step" in widget.status.text()
        qtbot.waitUntil(lambda: process.finished, timeout=60_000)
        assert not process.is_alive() and time.monotonic() - started < 20.0 and not process.killed
    finally:
        if process.is_alive():
            process.stop(timeout=1)
    run = tmp_path / "run"
    stopped_at = json.loads((run / "resume.json").read_text())["iteration"]
    assert stopped_at >= 2 and process.result["iterations_done"] == stopped_at
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    assert widget.status.text().startswith(f"Stopped after {stopped_at} iterations; model in {run}")
    assert f"resume state is at iteration {stopped_at}: press “Continue”" in widget.status.text()
    assert not widget.timer.isActive() and widget.use_button.isEnabled() and widget.continue_button.isEnabled()

    resumed = widget.resume()  # Continue: ramseg train --resume, from the same dock
    try:
        qtbot.waitUntil(lambda: len(widget.plot.series["loss"]) >= 1, timeout=180_000)
        assert widget.plot.series["loss"][0][0] == stopped_at + 1  # where it stopped, not from the start
        widget.stop()
        qtbot.waitUntil(lambda: resumed.finished, timeout=60_000)
    finally:
        if resumed.is_alive():
            resumed.stop(timeout=1)
    meta = json.loads((run / "model.json").read_text())
    assert meta["command"] == "napari Train widget" and meta["resumed_with"] == ["napari Train widget"]


def test_train_widget_finishes_and_offers_the_model(make_napari_viewer, qtbot, synthetic_data, tmp_path):
    viewer, widget = _widget(make_napari_viewer, synthetic_data, tmp_path / "run", 2)
    widget.labels_edit.setText("blob")  # --labels, --label-kind, --long-side, as ramseg train offers them
    widget.label_kind_combo.setCurrentText("exclusive")
    widget.long_side_spin.setValue(48)
    segment = FakeSegment()
    viewer.window.add_dock_widget(segment, name="Segment")
    assert find_model_consumers(viewer) == [segment]
    widget.start()
    qtbot.waitUntil(lambda: widget.process.finished, timeout=180_000)
    assert widget.process.error is None, widget.process.traceback
    assert widget.last_run == tmp_path / "run" and widget.use_button.isEnabled()
    assert len(widget.plot.series["val Dice"]) >= 1 and widget.progress.value() == 2
    _, meta = load_model(widget.last_run)
    assert meta.config.labels.names == ("blob",) and meta.config.labels.kind == "exclusive"
    assert meta.config.preprocess.long_side == 48 and meta.config.preprocess.size == 32
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


def test_train_widget_defaults_are_the_configs(make_napari_viewer, tmp_path):
    """What the dock sends without a change is what ``ramseg train`` does by default (core/config.py)."""
    widget = TrainWidget(make_napari_viewer())
    widget.data_edit.setText(str(tmp_path))
    widget.out_edit.setText(str(tmp_path / "run"))
    request = widget.build_request()
    default = TrainRequest(data=tmp_path, iterations=TrainConfig().iterations)
    skip = {"data", "out", "command", "extra", "domains", "resume_every_s"}
    assert {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name not in skip} == \
        {f.name: getattr(default, f.name) for f in dataclasses.fields(default) if f.name not in skip}
    assert request.resume_every_s == TrainConfig().resume_every_s and request.long_side is None
    assert request.labels is None and request.command == "napari Train widget"
    widget.labels_edit.setText(" disc, cup ")
    widget.long_side_spin.setValue(540)
    request = widget.build_request()
    assert request.labels == ["disc", "cup"] and request.label_kind == "nested" and request.long_side == 540


def test_a_dead_child_shows_its_last_error_lines(make_napari_viewer, qtbot, synthetic_data, tmp_path, monkeypatch):
    import napari.utils.notifications as notifications

    crash = "import sys; sys.stderr.write('Traceback (most recent call last):\\nMemoryError: the child ran out\\n'); sys.exit(3)"
    monkeypatch.setattr(TrainProcess, "command", lambda self: [sys.executable, "-c", crash])
    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    viewer, widget = _widget(make_napari_viewer, synthetic_data, tmp_path / "run", 2)
    widget.start()
    qtbot.waitUntil(lambda: widget.process.finished, timeout=60_000)
    text = widget.status.text()
    assert text.startswith("Training failed: the training process ended unexpectedly (exit code 3): "
                           "MemoryError: the child ran out")
    assert "Traceback (most recent call last):" in text
    assert shown == ["Training failed: the training process ended unexpectedly (exit code 3): "
                     "MemoryError: the child ran out"]
    assert widget.start_button.isEnabled() and not widget.continue_button.isEnabled()


def test_a_script_without_a_main_guard_trains_from_the_dock(tmp_path, synthetic_data):
    """The child never imports the user's ``__main__``: one viewer, no second run of the script."""
    script = tmp_path / "my_script.py"
    script.write_text(textwrap.dedent(f"""
        import json, time
        import napari
        from qtpy.QtWidgets import QApplication
        from napari_ramseg.plugin.widgets.train import TrainWidget
        print("script body ran", flush=True)
        viewer = napari.Viewer(show=False)
        widget = TrainWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Train")
        widget.data_edit.setText({str(synthetic_data)!r})
        widget.refresh_domains()
        widget.iterations_spin.setValue(2)
        widget.size_spin.setValue(32)
        widget.width_spin.setValue(4)
        widget.device_combo.setCurrentText("cpu")
        widget.out_edit.setText({str(tmp_path / "run")!r})
        process = widget.start()
        deadline = time.monotonic() + 240
        while not process.finished and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.05)
        print(json.dumps({{"error": process.error, "exit": process.exitcode, "status": widget.status.text()}}))
        viewer.close()
    """))
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=400, cwd=tmp_path,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("script body ran") == 1
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["error"] is None and report["exit"] == 0, report
    assert report["status"].startswith("Finished after 2 iterations")
    load_model(tmp_path / "run")
