"""Segment widget driven in a real napari viewer with the tiny model: 2D grey, RGB, volumes, cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_ramseg.plugin.widgets import _common
from napari_ramseg.plugin.widgets._common import JobControl

pytestmark = pytest.mark.gui
WAIT_MS = 60_000


@pytest.fixture
def widget(segment_widget):
    return segment_widget


def _blob_image(shape=(40, 48), rgb=False):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (min(shape) / 4) ** 2)
    grey = (60 + 120 * blob + np.random.default_rng(0).normal(0, 10, shape)).clip(0, 255).astype(np.uint8)
    return np.stack([grey, grey // 2, grey // 3], axis=-1) if rgb else grey


def test_rgb_in_a_thread_keeps_geometry_and_adds_probabilities(widget, qtbot):
    viewer = widget.viewer
    image = viewer.add_image(_blob_image(rgb=True), name="photo", scale=(0.5, 2.0), translate=(3.0, -4.0))
    assert image.rgb
    widget.image_combo.set_layer(image)
    widget.probabilities_box.setChecked(True)
    widget.uncertainty_box.setChecked(True)
    worker = widget.segment(run_sync=False)
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=WAIT_MS)
    assert widget.runner.last_outcome == "done"

    labels = viewer.layers["photo segmentation"]
    prob = viewer.layers["photo probability: blob"]
    unc = viewer.layers["photo uncertainty"]
    for layer in (labels, prob, unc):
        assert layer.data.shape == (40, 48)
        np.testing.assert_allclose(layer.scale, (0.5, 2.0))
        np.testing.assert_allclose(layer.translate, (3.0, -4.0))
    assert set(np.unique(labels.data)) <= {0, 1}
    assert 0.0 <= prob.data.min() and prob.data.max() <= 1.0
    assert 0.0 <= unc.data.min() and unc.data.max() <= 1.0
    assert tuple(prob.contrast_limits) == (0.0, 1.0) and prob.colormap.name == "magma"
    assert list(labels.features["class"]) == ["background", "blob"]
    assert labels.metadata["class_names"] == {"1": "blob"}
    # the prediction as made is kept apart from the layer's data, which the user will paint over
    original = labels.metadata["ramseg_original"]
    np.testing.assert_array_equal(original, labels.data)
    assert not np.shares_memory(original, labels.data)
    # the chosen layer stays what was segmented, and outputs are not offered as new inputs twice
    assert widget.image_combo.current_layer() is image


def test_grey_2d_sync_env_and_resegment_in_place(widget, monkeypatch):
    monkeypatch.setenv(_common.SYNC_ENV, "1")
    viewer = widget.viewer
    image = viewer.add_image(_blob_image(), name="grey")
    widget.image_combo.set_layer(image)
    widget.segment()  # runs to the end before returning
    n_layers = len(viewer.layers)
    assert viewer.layers["grey segmentation"].data.shape == image.data.shape
    widget.segment()
    assert len(viewer.layers) == n_layers  # updated, not duplicated


def test_predictor_is_loaded_once_per_model_and_device(widget, monkeypatch):
    from napari_ramseg.core.inference.predictor import Predictor

    _common.clear_predictor_cache()
    loads = []
    original = Predictor.from_path.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Predictor, "from_path", classmethod(counting))
    image = widget.viewer.add_image(_blob_image(), name="grey")
    widget.image_combo.set_layer(image)
    for _ in range(3):
        widget.segment(run_sync=True)
    assert len(loads) == 1


def test_volume_2p5d_reports_progress(widget, qtbot):
    viewer = widget.viewer
    volume = np.stack([_blob_image((32, 32))] * 20).astype(np.float32)
    image = viewer.add_image(volume, name="vol", scale=(2.5, 1.0, 1.0))
    widget.image_combo.set_layer(image)
    widget.uncertainty_box.setChecked(True)
    seen = []
    widget.runner.progress.valueChanged.connect(seen.append)
    widget.segment(run_sync=False)
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=WAIT_MS)
    labels = viewer.layers["vol segmentation"]
    assert labels.data.shape == (20, 32, 32)
    np.testing.assert_allclose(labels.scale, (2.5, 1.0, 1.0))
    assert viewer.layers["vol uncertainty"].data.shape == (20, 32, 32)
    assert 20 in seen  # the last slice was reported


def test_stop_button_cancels_a_volume(widget, qtbot, monkeypatch):
    """Stop pressed while slices are running: no result layer, the job ends as cancelled."""
    reported = threading.Event()
    release = threading.Event()
    original_report = JobControl.report

    def report_then_wait(self, done, total, text=""):
        original_report(self, done, total, text)
        reported.set()
        release.wait(10)  # hold the worker until the test has pressed Stop

    monkeypatch.setattr(JobControl, "report", report_then_wait)
    viewer = widget.viewer
    image = viewer.add_image(np.random.default_rng(1).random((40, 24, 24), dtype=np.float32), name="vol")
    widget.image_combo.set_layer(image)
    widget.segment(run_sync=False)
    qtbot.waitUntil(reported.is_set, timeout=WAIT_MS)
    assert widget.runner.stop_button.isEnabled()
    widget.runner.stop_button.click()
    release.set()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=WAIT_MS)
    assert widget.runner.last_outcome == "cancelled"
    assert "vol segmentation" not in viewer.layers
    assert widget.segment_button.isEnabled()


def test_missing_bundled_model_is_a_plain_notification(widget, tmp_path, monkeypatch, notifications):
    import napari_ramseg.models

    monkeypatch.setattr(napari_ramseg.models, "bundled_model_path", lambda name="vessels": tmp_path / "nothing")
    widget.set_model(None)
    widget.viewer.add_image(_blob_image(), name="grey")
    assert widget.segment(run_sync=True) is None
    [message] = notifications()
    assert "bundled vessels model is not installed" in message


def test_unsafe_or_broken_model_fails_cleanly(widget, tmp_path, notifications):
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"not really")
    widget.set_model(pickle)
    widget.viewer.add_image(_blob_image(), name="grey")
    widget.segment(run_sync=True)
    assert widget.runner.last_outcome == "failed"
    assert any("pickle-based model files" in m for m in notifications())
    assert "grey segmentation" not in widget.viewer.layers
    assert widget.segment_button.isEnabled()


def test_4d_layer_is_refused(widget, notifications):
    widget.viewer.add_image(np.zeros((2, 3, 8, 8), np.float32), name="timeseries")
    assert widget.segment(run_sync=True) is None
    assert any("4D" in m for m in notifications())


def test_model_picker_names_the_bundled_model_and_says_what_a_model_is(widget, tiny_model):
    from napari_ramseg.models import DEFAULT_MODEL, bundled_model_path

    picker = widget.model_picker
    picker.set_model(bundled_model_path())  # as the demo does: a path that is the bundled model's folder
    assert picker.bundled_name() == DEFAULT_MODEL
    assert picker.source.currentText().startswith(f"{DEFAULT_MODEL} (bundled")
    assert picker.source.currentText() != picker.CUSTOM
    if (bundled_model_path() / "model.json").exists():
        assert "trained on" in picker.summary.text()
    picker.set_model(tiny_model)
    assert picker.bundled_name() is None and picker.model_path() == tiny_model
    assert picker.summary.text() == "blob · trained on siteA + siteB"


def test_zero_uncertainty_is_transparent_and_labels_stay_on_top(widget):
    viewer = widget.viewer
    image = viewer.add_image(_blob_image(rgb=True), name="photo")
    widget.image_combo.set_layer(image)
    widget.probabilities_box.setChecked(True)
    widget.uncertainty_box.setChecked(True)
    widget.segment(run_sync=True)
    unc = viewer.layers["photo uncertainty"]
    rgba = np.asarray(unc.colormap.map(np.array([0.0, 0.04, 0.1, 0.3, 1.0])))
    assert rgba[0, 3] == 0.0 and rgba[1, 3] == 0.0  # certain pixels add nothing: no purple canvas
    assert 0.0 < rgba[2, 3] < 0.5 and rgba[3, 3] > 0.99 and rgba[4, 3] == 1.0
    assert unc.blending == "translucent"
    names = [layer.name for layer in viewer.layers]
    assert names[0] == "photo" and names[-1] == "photo segmentation"  # labels above the maps
    assert viewer.layers.selection.active is viewer.layers["photo segmentation"]


def test_resegmenting_keeps_a_painted_labels_layer(widget, notifications):
    viewer = widget.viewer
    image = viewer.add_image(_blob_image(), name="grey")
    widget.image_combo.set_layer(image)
    widget.segment(run_sync=True)
    widget.segment(run_sync=True)  # unedited: updated in place
    assert [n for n in (lyr.name for lyr in viewer.layers) if "segmentation" in n] == ["grey segmentation"]
    painted = viewer.layers["grey segmentation"]
    painted.data[:5, :5] = 1 - painted.data[:5, :5]  # the user's brush
    painted.refresh()
    edits = painted.data.copy()
    widget.segment(run_sync=True)
    np.testing.assert_array_equal(viewer.layers["grey segmentation"].data, edits)  # kept
    assert "grey segmentation 2" in viewer.layers
    assert "holds your edits" in widget.runner.status.text()
    assert any("grey segmentation 2" in m for m in notifications())
    widget.segment(run_sync=True)  # the new, unedited one is the one updated from now on
    assert "grey segmentation 3" not in viewer.layers


def test_result_layers_are_added_one_per_event_loop_tick(qtbot):
    """JobRunner runs a generator on_result one step per tick, and stays busy until the last."""
    from qtpy.QtCore import QTimer

    runner = _common.JobRunner()
    qtbot.addWidget(runner)
    order = []

    def job(control):
        yield _common.Progress(0, 0, "working")
        return 3

    def show(n):
        for i in range(n):
            order.append(f"step {i}")
            QTimer.singleShot(0, lambda i=i: order.append(f"tick after {i}"))
            yield
        order.append("done")

    runner.start(job, on_result=show, run_sync=False)
    qtbot.waitUntil(lambda: "done" in order and not runner.busy, timeout=WAIT_MS)
    assert runner.last_outcome == "done"
    # the event loop ran between the steps (a step's zero-timer fired before the next step)
    assert order.index("tick after 0") < order.index("step 1")
    assert order.index("tick after 1") < order.index("step 2")
    # synchronous runs (scripts, the demo) show everything before start() returns
    order.clear()
    runner.start(job, on_result=show, run_sync=True)
    assert order[:4] == ["step 0", "step 1", "step 2", "done"] and not runner.busy


def test_the_status_gives_a_nested_disc_its_whole_area_cup_included(widget):
    """Label 1 of a disc/cup map is the rim; the disc a clinician means is rim and cup together."""
    from types import SimpleNamespace

    from napari_ramseg.core.labels import OPTIC_DISC_CUP
    from napari_ramseg.core.evaluation.measures import measure_case
    from napari_ramseg.plugin.widgets._segment_layers import show_result

    labels = np.zeros((20, 20), np.uint8)
    labels[5:15, 5:15] = 1  # disc: 100 px of 400
    labels[8:12, 8:12] = 2  # cup: 16 px, inside it
    image = widget.viewer.add_image(np.zeros((20, 20), np.uint8), name="photo")
    result = SimpleNamespace(labels=labels, class_names=["disc", "cup"], model="m", device="cpu",
                             measures=measure_case(labels, OPTIC_DISC_CUP))
    said: list[str] = []
    list(show_result(widget.viewer, image, result, False, False, said.append))
    assert said == ["done on cpu: disc 25.0%, cup 4.0%"]
