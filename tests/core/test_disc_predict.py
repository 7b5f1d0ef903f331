"""The two-stage entry point with a stand-in segmenter (no network): photographs, crops, no disc."""

import numpy as np
import pytest

from napari_ramseg.core.config import OPTIC_DISC_CUP, VESSELS
from napari_ramseg.core.disc import DiscPredictor
from napari_ramseg.core.infer import Prediction
from napari_ramseg.errors import RamsegInputError

from helpers import synthetic_fundus as _photograph


class BrightSegmenter:
    """Stands in for a disc/cup Predictor: the disc is what is much brighter than the crop's median."""

    labels = OPTIC_DISC_CUP

    def __init__(self):
        self.calls = []

    def predict_image(self, image, postprocess=False):
        self.calls.append(image.shape)
        g = image[..., 1].astype(np.float32)
        disc = g > np.median(g) + 40
        cup = g > np.median(g) + 90
        labels = disc.astype(np.uint8) + (cup & disc)
        probs = np.stack([np.where(disc, 0.95, 0.05), np.where(cup, 0.9, 0.05)]).astype(np.float32)
        return Prediction(labels, probs, np.zeros(g.shape, np.float32), ["disc", "cup"])


def _inside(labels, y, x):
    return labels[int(y), int(x)] >= 1


def test_a_photograph_goes_through_both_stages_and_comes_back_full_size():
    image = _photograph(disc=(150, 420), radius=40)
    found = DiscPredictor(BrightSegmenter()).predict(image)
    assert found.kind == "photograph" and found.labels.shape == image.shape[:2]
    assert found.prediction.probabilities.shape == (2, *image.shape[:2])
    assert _inside(found.labels, 150, 420) and not found.labels[:, :300].any()  # only the disc, in place
    cy, cx = found.roi.center
    assert abs(cy - 150) < 6 and abs(cx - 420) < 6  # re-centred on the predicted disc


def test_a_crop_is_segmented_as_it_is():
    seg = BrightSegmenter()
    crop = _photograph(disc=(200, 300))[80:320, 180:420]
    found = DiscPredictor(seg).predict(crop)
    assert found.kind == "crop" and found.roi is None and seg.calls == [crop.shape]


def test_a_photograph_without_a_disc_is_refused_with_a_clear_message():
    image = _photograph(radius=0.1)  # no bright blob at all
    with pytest.raises(RamsegInputError, match="no optic disc found"):
        DiscPredictor(BrightSegmenter()).predict(image)


def test_only_disc_and_cup_models_and_colour_images():
    class Vessels(BrightSegmenter):
        labels = VESSELS

    with pytest.raises(RamsegInputError, match="not an optic disc"):
        DiscPredictor(Vessels())
    with pytest.raises(RamsegInputError, match="colour fundus image"):
        DiscPredictor(BrightSegmenter()).predict(np.zeros((50, 50), np.uint8))
