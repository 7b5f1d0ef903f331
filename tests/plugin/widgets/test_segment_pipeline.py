"""The Segment dock through ``core/review/pipeline.segment_case`` (issue 29): measures marked unreliable when the
image does not fit the model (18), and a refused image refused in the dock as in ``ramseg predict`` (4)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(sync_segment_widget):
    return sync_segment_widget


def test_measures_of_an_image_unlike_the_sources_are_marked_unreliable(widget, synthetic_data):
    from PIL import Image

    source = np.array(Image.open(synthetic_data / "siteA" / "images" / "case0.png"))
    widget.image_combo.set_layer(widget.viewer.add_image(source.mean(axis=-1).astype(np.uint8), name="grey"))
    widget.segment()
    text = widget.measures_label.text()
    assert text.startswith("⚠ unreliable: the image does not fit") and "blob" in text
    widget.image_combo.set_layer(widget.viewer.add_image(source, name="source"))
    widget.segment()
    assert "unreliable" not in widget.measures_label.text() and "blob" in widget.measures_label.text()


def test_the_optic_disc_model_refuses_a_grey_slice_in_the_dock(widget, notifications):
    from helpers import synthetic_fundus
    from napari_ramseg.models import bundled_models, resolve_model

    if "optic-disc" not in bundled_models():
        pytest.skip("optic-disc model not installed")
    widget.set_model(resolve_model("optic-disc"))
    slice_like = synthetic_fundus(disc=(150, 420), radius=40)[..., :3].mean(-1).astype(np.uint8)  # grey
    widget.image_combo.set_layer(widget.viewer.add_image(slice_like, name="mri"))
    widget.segment()
    assert "mri segmentation" not in widget.viewer.layers and widget.runner.last_outcome == "failed"
    assert any("the optic disc model takes a colour fundus image" in m for m in notifications())
    assert widget.measures_label.isHidden()  # no vCDR for an image without an optic disc
