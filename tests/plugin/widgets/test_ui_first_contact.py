"""What a new user found on first contact with the docks (issue 29, findings 5, 7, 16 and 19)."""

from __future__ import annotations

from pathlib import Path

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

    from qtpy.QtWidgets import QScrollArea

    area = mixup.findChild(QScrollArea)
    area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())
    qtbot.wait(50)
    assert mixup.status.mapTo(area.viewport(), QPoint(0, mixup.status.height())).y() <= area.viewport().height()


def _finished(widget, run, dice):
    widget._finished({"run_dir": str(run), "stopped": False, "iterations_done": 3, "validation": {"dice": dice}})


def test_the_train_dock_cautions_before_offering_a_model_that_found_nothing(make_napari_viewer, tiny_model,
                                                                            notifications):
    """Finding 16: a model whose source-validation Dice is 0.000 is offered with a caution, not as a success."""
    from fakes import FakeSegment

    from napari_ramseg.plugin.widgets.train import TrainWidget

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


def _nifti(path):
    import nibabel as nib

    volume = np.arange(4 * 8 * 8, dtype=np.int16).reshape(8, 8, 4)
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.7, 3.0, 1.0])), str(path))
    return path


def test_file_open_takes_our_reader_for_every_pattern_without_asking(make_napari_viewer, tmp_path, monkeypatch):
    """Finding 5: once napari-ramseg's reader has been taken, File > Open never asks again, for any
    pattern napari.yaml declares; a reader the user chose for a pattern is kept."""
    import napari._qt.qt_viewer as qt_viewer_module
    from napari.plugins.utils import get_preferred_reader
    from napari.settings import get_settings

    import yaml

    import napari_ramseg
    from napari_ramseg.plugin import layer_meta

    viewer = make_napari_viewer()  # fresh napari settings
    get_settings().plugins.extension2reader = {"*.dicom": "napari"}  # the user's own choice
    asked = []

    def reader_dialog(paths, qt_viewer, stack, *args, **kwargs):  # the user picks napari-ramseg, no "remember"
        asked.append(paths)
        qt_viewer.viewer.open(paths, stack=stack, plugin=PLUGIN)

    monkeypatch.setattr(qt_viewer_module, "handle_gui_reading", reader_dialog)
    case = _nifti(tmp_path / "Case00.nii.gz")
    qt_viewer = viewer.window._qt_viewer
    qt_viewer._qt_open([str(case)], stack=False)  # File > Open, the first time: napari asks
    qt_viewer._qt_open([str(case)], stack=False)  # the second time: it must not
    assert len(asked) <= 1
    assert len(viewer.layers) == 2 and all(layer_meta.AFFINE in layer.metadata for layer in viewer.layers)
    manifest = yaml.safe_load((Path(napari_ramseg.__file__).parent / "napari.yaml").read_text())
    patterns = [pattern for reader in manifest["contributions"]["readers"] for pattern in reader["filename_patterns"]]
    assert {"*.nii", "*.nii.gz", "*.dcm", "*.dicom"} <= set(patterns)
    for pattern in patterns:
        expected = "napari" if pattern == "*.dicom" else PLUGIN
        assert get_preferred_reader(str(tmp_path / pattern.replace("*", "scan"))) == expected, pattern
    [layer] = viewer.open(str(case), plugin=None)  # a script that follows the preference
    assert layer.metadata[layer_meta.AFFINE] is not None


def test_a_dock_opened_means_file_open_never_asks(make_napari_viewer, tmp_path, monkeypatch):
    import napari._qt.qt_viewer as qt_viewer_module

    viewer = make_napari_viewer()
    viewer.window.add_plugin_dock_widget(PLUGIN, "Amplitude mixup preview")
    monkeypatch.setattr(qt_viewer_module, "handle_gui_reading",
                        lambda *a, **k: pytest.fail("napari asked which reader to use"))
    viewer.window._qt_viewer._qt_open([str(_nifti(tmp_path / "scan.nii"))], stack=False)
    assert viewer.layers[-1].name == "scan" and viewer.layers[-1].data.shape == (4, 8, 8)
