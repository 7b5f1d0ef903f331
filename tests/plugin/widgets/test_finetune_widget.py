"""The Correct and fine-tune widget: corrections land on disk at once; a fine-tune round yields a new model."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import FakeSegment
from helpers import make_synthetic_domains
from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.finetune.corrections import CorrectionStore
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.io import read_image, read_mask
from napari_ramseg.plugin.widgets.finetune import ORIGINAL_KEY, CorrectFinetuneWidget

pytestmark = pytest.mark.gui


@pytest.fixture()
def site(tmp_path):
    return make_synthetic_domains(tmp_path / "site", domains=("siteC",), cases=3, size=40, seed=11) / "siteC"


def _show_case(viewer, site, i, predictor, tiny_model):
    image = read_image(site / "images" / f"case{i}.png").array
    prediction = predictor.predict(image).labels
    viewer.add_image(image, name=f"scan{i}", rgb=True)
    layer = viewer.add_labels(prediction.copy(), name=f"scan{i} prediction", metadata={"ramseg_model": str(tiny_model)})
    return image, prediction, layer


def test_corrections_are_saved_then_a_finetune_loads_the_new_model(make_napari_viewer, qtbot, tmp_path, site, tiny_model):
    viewer = make_napari_viewer()
    segment = FakeSegment()
    viewer.window.add_dock_widget(segment, name="Segment")
    widget = CorrectFinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Correct and fine-tune")
    project = tmp_path / "project"
    widget.project_edit.setText(str(project))
    widget.device_combo.setCurrentText("cpu")
    widget.iterations_spin.setValue(2)
    predictor = Predictor.from_path(tiny_model, device="cpu")

    saved = []
    for i in range(3):
        image, prediction, layer = _show_case(viewer, site, i, predictor, tiny_model)
        widget.image_combo.setCurrentText(f"scan{i}")
        widget.labels_combo.setCurrentText(layer.name)
        assert widget.model_edit.text() == str(tiny_model)  # taken from the prediction's metadata
        widget.start_correcting()
        np.testing.assert_array_equal(layer.metadata[ORIGINAL_KEY], prediction)
        assert layer.mode == "paint" and viewer.layers.selection.active is layer
        truth = read_mask(site / "labels" / f"case{i}.png")
        for value in (0, 1):  # the clinician's fixes, through napari's painting path
            fix = np.nonzero((truth == value) & (prediction != value))
            if fix[0].size:
                layer.data_setitem(fix, value)
        np.testing.assert_array_equal(layer.data, truth)
        case_id = widget.save_correction()
        assert case_id is not None, widget.status.text()
        saved.append((case_id, image, prediction, truth))
        assert widget.case_list.count() == i + 1
    assert "[val]" in widget.case_list.item(2).text()

    worker = widget.start_finetune()
    assert worker is not None and not widget.finetune_button.isEnabled()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    result = widget.last_result
    assert result is not None and not result.stopped, widget.status.text()
    new_model = project / "models" / "v001"
    assert result.model_dir == new_model
    if result.worse:  # a tiny model after 2 steps may go either way: the dock must say which
        assert widget.model_edit.text() == str(tiny_model) and segment.models == []
        assert "worse" in widget.dice_label.text()
    else:
        assert widget.model_edit.text() == str(new_model) and segment.models == [str(new_model)]
    assert "before" in widget.dice_label.text() and "after" in widget.dice_label.text()
    assert widget.progress.value() == 2
    load_model(new_model)

    viewer.close()
    store = CorrectionStore(project)  # everything is on disk, independent of the viewer
    for case_id, image, prediction, truth in saved:
        case = store.load(case_id)
        np.testing.assert_array_equal(case.image, image)
        np.testing.assert_array_equal(case.original, prediction)
        np.testing.assert_array_equal(case.final, truth)


def test_stop_and_errors_are_plain(make_napari_viewer, qtbot, tmp_path, site, tiny_model):
    viewer = make_napari_viewer()
    widget = CorrectFinetuneWidget(viewer)
    widget.project_edit.setText(str(tmp_path / "project"))
    widget.device_combo.setCurrentText("cpu")
    assert widget.start_finetune() is None and "save at least one correction" in widget.status.text()
    assert widget.save_correction() is None and "choose an image layer" in widget.status.text()

    predictor = Predictor.from_path(tiny_model, device="cpu")
    image, prediction, layer = _show_case(viewer, site, 0, predictor, tiny_model)
    widget.image_combo.setCurrentText("scan0")
    widget.labels_combo.setCurrentText(layer.name)
    layer.data = np.full_like(prediction, 3)  # a label the model does not have
    widget.start_correcting()
    assert widget.save_correction() is None and "uses label 3" in widget.status.text()
    layer.data = prediction
    assert widget.save_correction() is not None

    widget.iterations_spin.setValue(10_000)
    widget.start_finetune()
    qtbot.waitUntil(lambda: widget.progress.value() >= 1, timeout=300_000)
    widget.stop_finetune()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget.last_result.stopped and "no new model" in widget.status.text()
    assert not (tmp_path / "project" / "models").exists() or not list((tmp_path / "project" / "models").iterdir())


def test_preview_layers_are_never_offered_as_correction_targets(make_napari_viewer, tiny_model):
    """The layer pickers are the shared ones: preview layers (restoration mask, mixup tiles) are left out."""
    from napari_ramseg.plugin import layer_meta

    viewer = make_napari_viewer()
    widget = CorrectFinetuneWidget(viewer)
    viewer.add_image(np.zeros((8, 8), np.uint8), name="scan")
    viewer.add_image(np.zeros((8, 8), np.uint8), name="mixup tile", metadata={layer_meta.PREVIEW: True})
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="scan segmentation", metadata={layer_meta.MODEL: str(tiny_model)})
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="predicted mask (restoration preview)",
                      metadata={layer_meta.PREVIEW: True})
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["scan"]
    assert [widget.labels_combo.itemText(i) for i in range(widget.labels_combo.count())] == ["scan segmentation"]
    assert widget.model_picker.model_path() == tiny_model  # chosen from the prediction's metadata


def test_a_worse_version_is_said_and_the_old_model_stays_selected(make_napari_viewer, tmp_path, tiny_model,
                                                                  notifications):
    from napari_ramseg.core.finetune.round import FinetuneResult

    viewer = make_napari_viewer()
    segment = FakeSegment()
    viewer.window.add_dock_widget(segment, name="Segment")
    widget = CorrectFinetuneWidget(viewer)
    widget.model_picker.set_model(tiny_model)
    worse = FinetuneResult(tmp_path / "models" / "v001", 0.80, 0.74, False, "v001", 1, ["a", "b"], ["c"])
    assert worse.worse
    widget._on_returned(worse)
    assert widget.model_edit.text() == str(tiny_model) and segment.models == []
    assert "worse" in widget.dice_label.text() and "0.800" in widget.dice_label.text()
    assert "not selected" in widget.status.text() and any("worse" in m for m in notifications())
    better = FinetuneResult(tmp_path / "models" / "v002", 0.74, 0.80, False, "v002", 2, ["a", "b"], ["c"])
    assert not better.worse
    widget._on_returned(better)
    assert widget.model_edit.text() == str(tmp_path / "models" / "v002") and segment.models == [str(better.model_dir)]
    assert "worse" not in widget.dice_label.text()
    unscored = FinetuneResult(tmp_path / "models" / "v003", None, None, False, "v003", 3, ["a"], [])
    assert not unscored.worse  # no held-out case yet: nothing to compare, the new version is taken
