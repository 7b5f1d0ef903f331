"""Segment dock: the fit check's warning (a notification and a line in the dock) and the volume spacing it passes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_ramseg.plugin.widgets.segment import layer_spacing

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(sync_segment_widget):
    return sync_segment_widget


@pytest.fixture
def warnings():
    from napari.utils.notifications import NotificationSeverity, notification_manager

    start = len(notification_manager.records)
    return lambda: [str(n.message) for n in notification_manager.records[start:]
                    if n.severity == NotificationSeverity.WARNING]


def test_a_scan_unlike_the_sources_warns_in_the_dock_and_is_still_segmented(widget, warnings):
    rng = np.random.default_rng(0)
    volume = (500 + 800 * (rng.random((8, 32, 32)) > 0.7)).astype(np.float32)
    layer = widget.viewer.add_image(volume, name="mri", scale=(3.0, 0.7, 0.7))
    widget.image_combo.set_layer(layer)
    widget.segment()
    assert widget.viewer.layers["mri segmentation"].data.shape == volume.shape
    assert not widget.fit_label.isHidden() and "'mri': grey 3D volume" in widget.fit_label.text()
    assert "colour 2D images (siteA, siteB)" in widget.fit_label.text()
    assert any("does not look like the model's training data" in m for m in warnings())


def test_an_image_of_a_source_domain_is_silent(widget, warnings, synthetic_data):
    widget.fit_label.setText("stale")
    widget.fit_label.setVisible(True)
    image = np.array(Image.open(synthetic_data / "siteB" / "images" / "case1.png"))
    widget.image_combo.set_layer(widget.viewer.add_image(image, name="photo"))
    widget.segment()
    assert widget.fit_label.isHidden() and widget.fit_label.text() == ""
    assert warnings() == []


def test_a_volume_layer_passes_its_spacing_when_a_reader_set_one(make_napari_viewer):
    viewer = make_napari_viewer()
    assert layer_spacing(viewer.add_image(np.zeros((4, 8, 8)), scale=(3.0, 0.5, 0.5))) == (3.0, 0.5, 0.5)
    assert layer_spacing(viewer.add_image(np.zeros((4, 8, 8)))) is None  # no spacing known
    assert layer_spacing(viewer.add_image(np.zeros((4, 8, 8)), metadata={"nifti_header": {}})) == (1.0, 1.0, 1.0)
    assert layer_spacing(viewer.add_image(np.zeros((8, 8)), scale=(0.5, 0.5))) is None
