"""Strokes in the Correct dock: draw, Refine (a background job), Undo; the dock agrees with ``ramseg refine``
and a saved correction keeps its strokes."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import make_synthetic_domains
from napari_ramseg.plugin import layer_meta
from napari_ramseg.cli import main
from napari_ramseg.core.finetune.corrections import CorrectionStore
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.review.refine import BACKGROUND_STROKE
from napari_ramseg.io import read_image, read_mask, write_labels
from napari_ramseg.plugin.widgets.finetune import CorrectFinetuneWidget

pytestmark = pytest.mark.gui


@pytest.fixture()
def dock(make_napari_viewer, tmp_path, tiny_model):
    """The Correct dock with a scan and its prediction (as the Segment dock leaves them)."""
    site = make_synthetic_domains(tmp_path / "site", domains=("siteC",), cases=1, size=40, seed=7) / "siteC"
    viewer = make_napari_viewer()
    image_path = site / "images" / "case0.png"
    image = read_image(image_path).array
    prediction = Predictor.from_path(tiny_model, device="cpu").predict_image(image).labels  # as the dock predicts
    viewer.add_image(image, name="scan", rgb=True)
    viewer.add_labels(prediction.copy(), name="scan prediction",
                      metadata={layer_meta.MODEL: str(tiny_model), layer_meta.CLASS_NAMES: {"1": "blob"}})
    widget = CorrectFinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Correct and fine-tune")
    widget.project_edit.setText(str(tmp_path / "project"))
    widget.device_combo.setCurrentText("cpu")
    widget.image_combo.setCurrentText("scan")
    widget.labels_combo.setCurrentText("scan prediction")
    widget.image_path, widget.prediction = image_path, prediction
    return widget


def _paint(layer, rows, cols, value):
    """A stroke through napari's painting path (what the brush does)."""
    layer.selected_label = value
    layer.data_setitem((np.asarray(rows), np.asarray(cols)), value)


def test_draw_refine_undo_and_the_cli_agrees(dock, qtbot, tmp_path, tiny_model):
    panel, viewer = dock.strokes, dock.viewer
    assert [panel.meaning.itemText(i) for i in range(panel.meaning.count())] == [
        "this is blob", "this is not blob (background)"]
    layer = panel.draw()
    assert layer.name == "scan prediction strokes" and viewer.layers.selection.active is layer
    assert layer.mode == "paint" and layer.selected_label == 1
    assert "scan prediction strokes" not in [dock.labels_combo.itemText(i) for i in range(dock.labels_combo.count())]
    panel.meaning.setCurrentIndex(1)
    assert layer.selected_label == BACKGROUND_STROKE

    _paint(layer, [10] * 15, range(5, 20), 1)
    _paint(layer, [30] * 15, range(20, 35), BACKGROUND_STROKE)
    labels = viewer.layers["scan prediction"]
    before = np.array(labels.data)
    worker = panel.refine()
    assert worker is not None
    qtbot.waitUntil(lambda: not dock.runner.busy, timeout=120_000)
    refined = np.array(labels.data)
    assert (refined[10, 5:20] == 1).all() and (refined[30, 20:35] == 0).all(), dock.status.text()
    assert panel.undo_button.isEnabled() and "Refined" in dock.status.text()
    np.testing.assert_array_equal(labels.metadata[layer_meta.ORIGINAL], dock.prediction)

    # the same strokes through ramseg refine give the same mask
    write_labels(tmp_path / "strokes.png", np.asarray(layer.data))
    assert main(["refine", "--model", str(tiny_model), "--input", str(dock.image_path), "--strokes",
                 str(tmp_path / "strokes.png"), "--output", str(tmp_path / "cli.png"), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(read_mask(tmp_path / "cli.png"), refined)

    # a second stroke refines again from the same start; Undo steps back one refinement at a time
    _paint(layer, [20] * 10, range(25, 35), 1)
    panel.refine()
    qtbot.waitUntil(lambda: not dock.runner.busy, timeout=120_000)
    assert (labels.data[20, 25:35] == 1).all()
    assert panel.undo()
    np.testing.assert_array_equal(labels.data, refined)
    assert not np.asarray(layer.data)[20, 25:35].any()
    assert panel.undo()
    np.testing.assert_array_equal(labels.data, before)
    assert not np.asarray(layer.data).any() and not panel.undo_button.isEnabled()


def test_a_refined_correction_is_saved_with_its_strokes(dock, qtbot):
    panel = dock.strokes
    layer = panel.draw()
    _paint(layer, [10] * 15, range(5, 20), 1)
    panel.refine()
    qtbot.waitUntil(lambda: not dock.runner.busy, timeout=120_000)
    case_id = dock.save_correction()
    assert case_id is not None, dock.status.text()
    case = CorrectionStore(dock.project_edit.text()).load(case_id)
    np.testing.assert_array_equal(case.strokes, np.asarray(layer.data))
    np.testing.assert_array_equal(case.final, dock.viewer.layers["scan prediction"].data)
    np.testing.assert_array_equal(case.original, dock.prediction)


def test_undo_stays_with_its_prediction(dock, qtbot):
    panel, viewer = dock.strokes, dock.viewer
    _paint(panel.draw(), [10] * 15, range(5, 20), 1)
    panel.refine()
    qtbot.waitUntil(lambda: not dock.runner.busy, timeout=120_000)
    refined = np.array(viewer.layers["scan prediction"].data)
    other = viewer.add_labels(np.zeros_like(refined), name="another prediction")
    dock.labels_combo.setCurrentText(other.name)
    assert not panel.undo_button.isEnabled() and not panel.undo()
    np.testing.assert_array_equal(viewer.layers["scan prediction"].data, refined)
    assert not other.data.any()


def test_refine_without_strokes_says_what_to_do(dock):
    assert dock.strokes.refine() is None
    assert "Draw strokes first" in dock.status.text()
