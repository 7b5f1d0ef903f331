"""Segment dock: "adapt to this scan" adds the adapted mask beside the plain one, with the fit before and
after and the cost; a volume adapts once."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_ramseg.core.inference.adapt import METHODS

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(sync_segment_widget):
    return sync_segment_widget


def test_adapting_a_photograph_shows_both_masks_the_fit_and_the_cost(widget, synthetic_data):
    image = np.array(Image.open(synthetic_data / "siteB" / "images" / "case1.png"))
    tinted = (image * [0.5, 1, 1]).astype(np.uint8)  # another camera's tint
    widget.image_combo.set_layer(widget.viewer.add_image(tinted, name="photo"))
    widget.adapt_box.setChecked(True)
    widget.adapt_combo.setCurrentText("align")
    widget.segment()
    plain = widget.viewer.layers["photo segmentation"]
    adapted = widget.viewer.layers["photo segmentation (adapted: align)"]
    assert plain.data.shape == adapted.data.shape == image.shape[:2]
    assert widget.viewer.layers.selection.active is adapted
    text = widget.adapt_label.text()
    assert not widget.adapt_label.isHidden() and "'photo' adapted (align): fit " in text and "s (plain " in text
    before, after = (float(v) for v in text.split("fit ")[1].split(";")[0].split(" → "))
    assert after > before  # the scan's style moved towards the sources


def test_unticked_nothing_is_adapted(widget, synthetic_data):
    image = np.array(Image.open(synthetic_data / "siteA" / "images" / "case0.png"))
    widget.image_combo.set_layer(widget.viewer.add_image(image, name="photo"))
    widget.segment()
    assert [layer.name for layer in widget.viewer.layers if "adapted" in layer.name] == []
    assert widget.adapt_label.isHidden()


def test_a_volume_adapts_once(widget, monkeypatch):
    calls = []
    original = METHODS["adabn"].adapt
    monkeypatch.setattr(METHODS["adabn"], "adapt",
                        lambda self, p, x, f: calls.append(len(x)) or original(self, p, x, f))
    volume = np.random.default_rng(0).normal(500, 90, (5, 32, 32)).astype(np.float32)
    widget.image_combo.set_layer(widget.viewer.add_image(volume, name="mri"))
    widget.adapt_box.setChecked(True)
    widget.adapt_combo.setCurrentText("adabn")
    widget.segment()
    assert calls == [5]
    assert widget.viewer.layers["mri segmentation (adapted: adabn)"].data.shape == volume.shape


def test_an_optic_disc_model_adapts_on_its_two_stages_not_on_the_whole_photograph(widget, shared_data):
    from napari_ramseg.models import bundled_models, resolve_model

    if "optic-disc" not in bundled_models():
        pytest.skip("optic-disc model not installed")
    photo = np.array(Image.open(shared_data / "fundus" / "DRIONS-DB" / "images" / "image_001.jpg"))
    truth = np.array(Image.open(shared_data / "fundus" / "DRIONS-DB" / "labels" / "image_001.png")) >= 1
    widget.set_model(resolve_model("optic-disc"))
    widget.image_combo.set_layer(widget.viewer.add_image(photo, name="drions"))
    widget.adapt_box.setChecked(True)
    widget.adapt_combo.setCurrentText("align")
    widget.segment()
    adapted = widget.viewer.layers["drions segmentation (adapted: align)"].data >= 1
    assert adapted.shape == photo.shape[:2]
    assert 2 * (adapted & truth).sum() / (adapted.sum() + truth.sum()) > 0.8  # one disc, where the expert drew it
