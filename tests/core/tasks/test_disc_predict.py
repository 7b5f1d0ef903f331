"""The two-stage entry point with a stand-in segmenter (no network): photographs, crops, no disc."""

import numpy as np
import pytest

from napari_ramseg.core.labels import OPTIC_DISC_CUP, VESSELS
from napari_ramseg.core.tasks.disc import DiscPredictor
from napari_ramseg.core.inference.predictor import Prediction
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


def test_refinement_recentres_an_off_centre_roi_on_the_predicted_disc():
    from napari_ramseg.core.tasks.disc.roi import Roi, crop

    image = _photograph(disc=(150, 420), radius=40)
    disc = DiscPredictor(BrightSegmenter())
    start = Roi(150 - 60 - 30, 420 - 60 + 25, 120)  # stage one 30 px too high, 25 px too far right
    pred = disc.predictor.predict_image(crop(image, start), postprocess=True)
    roi, refined = disc.refine(image, start, pred, 1)
    cy, cx = roi.center
    assert abs(cy - 150) < 6 and abs(cx - 420) < 6
    assert refined.labels.shape == (roi.side, roi.side)
    # zero passes leave the ROI alone
    assert disc.refine(image, start, pred, 0)[0] == start


def test_refinement_keeps_the_roi_when_the_prediction_has_no_disc():
    from napari_ramseg.core.tasks.disc.roi import Roi, crop

    image = _photograph(disc=(150, 420), radius=40)
    disc = DiscPredictor(BrightSegmenter())
    away = Roi(200, 60, 120)  # fundus only: the stand-in finds nothing there
    pred = disc.predictor.predict_image(crop(image, away), postprocess=True)
    assert not (pred.labels >= 1).any()
    assert disc.refine(image, away, pred, 2)[0] == away


def test_a_crop_can_be_refined_and_comes_back_in_its_own_geometry():
    from napari_ramseg.core.config import DiscConfig

    seg = BrightSegmenter()
    crop = _photograph(disc=(200, 300), radius=40)[110:330, 200:420]  # the disc off the crop's centre
    found = DiscPredictor(seg, DiscConfig(refine_crops=1)).predict(crop)
    assert found.kind == "crop" and found.labels.shape == crop.shape[:2]
    assert len(seg.calls) == 2 and seg.calls[1][0] < crop.shape[0]  # a second, tighter ROI around the disc
    assert _inside(found.labels, 90, 100)


class FillingSegmenter(BrightSegmenter):
    """The failure seen on an unseen camera: a model trained on discs that fill their ROI finds a disc
    filling 0.9 of any ROI, so every re-centring pass makes the ROI larger."""

    def predict_image(self, image, postprocess=False):
        self.calls.append(image.shape)
        h, w = image.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (0.45 * min(h, w)) ** 2
        probs = np.stack([np.where(disc, 0.95, 0.05), np.full((h, w), 0.05)]).astype(np.float32)
        return Prediction(disc.astype(np.uint8), probs, np.zeros((h, w), np.float32), ["disc", "cup"])


def test_max_rescale_keeps_the_refined_roi_near_the_first_estimate():
    from napari_ramseg.core.config import DiscConfig
    from napari_ramseg.core.tasks.disc.roi import Roi, crop

    image = _photograph(disc=(150, 420), radius=40)
    start = Roi.around((150, 420), 80, DiscConfig().roi_ratio)
    sides = {}
    for bound in (0.0, 1.25, 0.8, 1.0):
        disc = DiscPredictor(FillingSegmenter(), DiscConfig(max_rescale=bound))
        pred = disc.predictor.predict_image(crop(image, start), postprocess=True)
        sides[bound] = disc.refine(image, start, pred, 3)[0].side
    assert sides[0.0] > 1.6 * start.side  # unbounded: the runaway, about 0.9 x 1.34 more each pass
    assert sides[1.25] == sides[0.8] <= round(1.25 * start.side) + 1  # a factor either way
    assert abs(sides[1.0] - start.side) <= 1  # 1: re-centred only, at stage one's scale
    disc = DiscPredictor(FillingSegmenter(), DiscConfig(max_rescale=1.0))  # a crop's first ROI is no estimate
    pred = disc.predictor.predict_image(crop(image, start), postprocess=True)
    assert disc.refine(image, start, pred, 3, bounded=False)[0].side == sides[0.0]


def test_check_gives_no_confidence_to_an_implausible_disc_size():
    from napari_ramseg.core.config import DiscConfig
    from napari_ramseg.core.tasks.disc.locate import Candidate

    image = _photograph(disc=(150, 420), radius=40)
    good = Candidate(150, 420, 80, 1.0)
    assert DiscPredictor(BrightSegmenter()).check(image, good)[0] > 0.9
    assert DiscPredictor(BrightSegmenter(), DiscConfig(max_disc_fraction=0.05)).check(image, good)[0] == 0.0


@pytest.mark.parametrize("pick, expected", [("first", (150, 420)), ("confident", (250, 200))])
def test_pick_first_plausible_or_most_confident_candidate(monkeypatch, pick, expected):
    from napari_ramseg.core.config import DiscConfig
    from napari_ramseg.core.tasks.disc import predict as predict_module
    from napari_ramseg.core.tasks.disc.locate import Candidate, Located

    class Sure(BrightSegmenter):  # a disc in every ROI; more confident on the second one it sees
        def predict_image(self, image, postprocess=False):
            self.calls.append(image.shape)
            disc = np.zeros(image.shape[:2], bool)
            h, w = disc.shape
            disc[h // 4:3 * h // 4, w // 4:3 * w // 4] = True
            p = 0.7 if len(self.calls) == 1 else 0.95
            probs = np.stack([np.where(disc, p, 0.05), np.zeros(disc.shape)]).astype(np.float32)
            return Prediction(disc.astype(np.uint8), probs, np.zeros(disc.shape, np.float32), ["disc", "cup"])

    cands = (Candidate(150, 420, 80, 9.0), Candidate(250, 200, 80, 5.0))
    monkeypatch.setattr(predict_module, "locate", lambda image, cfg: Located(True, cands, 580.0))
    found = DiscPredictor(Sure(), DiscConfig(pick=pick, refine=0)).predict(_photograph())
    cy, cx = found.roi.center
    assert abs(cy - expected[0]) < 2 and abs(cx - expected[1]) < 2


def test_the_review_scores_look_at_the_roi_the_two_stages_segmented():
    """Style disagreement and the representative descriptor of a photograph are the disc model's on the
    ROI it segmented, not on a whole photograph it never sees; a crop is looked at as it is."""
    from helpers import BrightDiscModel
    from napari_ramseg.core.tasks.disc import predict_2d, segmented_region
    from napari_ramseg.core.review.pipeline import review_region as _review_region
    from napari_ramseg.io import ImageData

    image = _photograph(disc=(150, 420), radius=40)
    prediction, summary = predict_2d(BrightDiscModel(), image)
    region = segmented_region(image, summary)
    side = summary["roi"]["side"]
    assert region.shape == (side, side, 3) and side < 200
    top, left = summary["roi"]["top"], summary["roi"]["left"]
    assert np.array_equal(region, image[top:top + side, left:left + side])
    assert segmented_region(image, {}).shape == image.shape  # a crop, or any other model: the image
    found_again = _review_region(BrightDiscModel(), ImageData(image), None)  # segmented in an earlier session
    assert np.array_equal(found_again, region)
