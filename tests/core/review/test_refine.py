"""core/review/refine.py: a stroke changes the mask where it was drawn and nothing far from it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_ramseg.core.config import RefineConfig
from napari_ramseg.core.labels import OPTIC_DISC_CUP, VESSELS, LabelScheme
from napari_ramseg.core.review.refine import BACKGROUND_STROKE, refine_labels
from napari_ramseg.errors import RamsegInputError

THRESHOLD = RefineConfig(method="threshold", reach=15)  # these tests were written for the threshold move
METHODS = [THRESHOLD, RefineConfig(method="random_walker", reach=15)]


def _faint_vessels(size: int = 96) -> np.ndarray:
    """Vessel probabilities: a clear vessel (row 20) the network finds, and two faint ones (rows 50 and
    80, probability 0.3) it misses."""
    prob = np.full((1, size, size), 0.02, np.float32)
    prob[0, 19:22, :] = 0.95
    prob[0, 49:52, :] = 0.3
    prob[0, 79:82, :] = 0.3
    return prob


@pytest.mark.parametrize("config", METHODS, ids=lambda c: c.method)
def test_positive_stroke_takes_the_faint_vessel_near_it_and_nothing_far(config):
    prob = _faint_vessels()
    start = (prob[0] > 0.5).astype(np.uint8)
    strokes = np.zeros(start.shape, np.uint8)
    strokes[50, 10:30] = 1  # a short stroke along the missed vessel at row 50
    out = refine_labels(prob, strokes, VESSELS, config=config)
    assert (out[strokes == 1] == 1).all()
    assert out[49:52, 10:30].all()  # the vessel's whole width under the stroke
    if config.method == "threshold":  # on along it, past the stroke's end, within reach
        assert out[49:52, 30:40].all()
    near = ndi.distance_transform_edt(strokes == 0) <= config.reach
    assert np.array_equal(out[~near], start[~near])  # nothing changed out of the stroke's reach
    assert not out[79:82].any()  # the other faint vessel stays missed
    assert out[19:22].all() and not out[:15].any()


@pytest.mark.parametrize("config", METHODS, ids=lambda c: c.method)
def test_negative_stroke_removes_a_false_vessel(config):
    prob = _faint_vessels()
    prob[0, 64:67, :] = 0.6  # a false vessel the network is unsure of
    start = (prob[0] > 0.5).astype(np.uint8)
    strokes = np.zeros(start.shape, np.uint8)
    strokes[65, 40:60] = BACKGROUND_STROKE
    out = refine_labels(prob, strokes, VESSELS, config=config)
    assert not out[64:67, 40:60].any()
    assert out[19:22].all()  # the true vessel, far away, is kept
    near = ndi.distance_transform_edt(strokes == 0) <= config.reach
    assert np.array_equal(out[~near], start[~near])


def test_negative_band_takes_a_false_branch_whole_and_a_crossing_vessel_keeps_all_but_the_band():
    """A "not vessel" stroke narrower than the false branch it is drawn along: without the band its edges stay
    as a rim on both sides; with it the branch goes whole, and a true vessel crossing the stroke loses only
    the band's width."""
    prob = np.full((1, 96, 96), 0.02, np.float32)
    prob[0, 45:52, 10:80] = 0.95  # a confident false branch, 7 px wide (above the threshold move's ceiling)
    prob[0, :, 70:73] = 0.95  # a true vessel crossing it near its end
    start = (prob[0] > 0.5).astype(np.uint8)
    strokes = np.zeros(start.shape, np.uint8)
    strokes[48, 10:76] = BACKGROUND_STROKE  # 1 px along the branch's middle, across the crossing
    rim = refine_labels(prob, strokes, VESSELS, config=THRESHOLD)
    assert rim[45:48, 10:68].all() and rim[49:52, 10:68].all()  # the rim a narrow stroke leaves
    out = refine_labels(prob, strokes, VESSELS, config=RefineConfig(method="threshold", reach=15, negative_band=3))
    assert not out[45:52, 10:68].any()
    assert out[:44, 70:73].all() and out[53:, 70:73].all()  # the crossing vessel beyond the band
    assert not out[45:52, 70:73].any()  # its pixels within 3 px of the stroke
    assert np.array_equal(out[:40], start[:40]) and np.array_equal(out[57:], start[57:])


def test_negative_band_counts_working_scale_pixels():
    from napari_ramseg.core.review.refine import at_scale

    assert at_scale(RefineConfig(negative_band=2), 2.4).negative_band == 5
    assert at_scale(RefineConfig(negative_band=0), 2.4).negative_band == 0


def _cup_probabilities(size: int = 96) -> np.ndarray:
    """Disc and cup falling off with the distance from the centre; the cup's 0.5 level at radius 24."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    disc = 1 / (1 + np.exp((r - 36) / 3))
    cup = 1 / (1 + np.exp((r - 24) / 6))
    return np.stack([disc, cup]).astype(np.float32)


def test_negative_cup_stroke_shrinks_the_cup_and_keeps_the_disc():
    prob = _cup_probabilities()
    start = refine_labels(prob, np.zeros(prob.shape[1:], np.uint8), OPTIC_DISC_CUP)
    strokes = np.zeros(start.shape, np.uint8)
    yy, xx = np.mgrid[:96, :96]
    ring = np.abs(np.hypot(yy - 48, xx - 48) - 20) < 0.7
    strokes[ring] = 1  # "this is disc, not cup" along a circle inside the cup's outline
    out = refine_labels(prob, strokes, OPTIC_DISC_CUP, config=THRESHOLD)
    assert (out == 2).sum() < 0.75 * (start == 2).sum()
    assert (out == 2)[48, 48] and (out >= 1).sum() == (start >= 1).sum()  # the disc is untouched
    assert (out[ring] == 1).all()


def test_without_strokes_the_start_mask_comes_back():
    prob = _faint_vessels()
    painted = (prob[0] > 0.5).astype(np.uint8)
    painted[80, 5:9] = 1  # a fix painted by hand, against the network
    out = refine_labels(prob, np.zeros(painted.shape, np.uint8), VESSELS, start=painted, config=THRESHOLD)
    assert np.array_equal(out, painted)


def test_a_painted_fix_survives_a_stroke_elsewhere():
    prob = _faint_vessels()
    painted = (prob[0] > 0.5).astype(np.uint8)
    painted[5:8, 60:90] = 1
    strokes = np.zeros(painted.shape, np.uint8)
    strokes[50, 10:30] = 1
    out = refine_labels(prob, strokes, VESSELS, start=painted, config=THRESHOLD)
    assert out[5:8, 60:90].all() and out[50, 10:30].all()


def test_volume_stroke_refines_its_slice_and_neighbours_only():
    prob = np.repeat(_faint_vessels()[:, None], 9, axis=1)  # (1, Z, Y, X)
    strokes = np.zeros(prob.shape[1:], np.uint8)
    strokes[4, 50, 10:30] = 1
    config = RefineConfig(method="threshold", reach=15, slices=2)
    out = refine_labels(prob, strokes, VESSELS, config=config)
    for z in range(9):
        assert out[z, 50, 15].item() == (abs(z - 4) <= 2), z


def test_exclusive_scheme_strokes_pick_the_class():
    scheme = LabelScheme(("a", "b"), "exclusive")
    prob = np.zeros((3, 40, 40), np.float32)
    prob[0], prob[1, :, 20:] = 0.6, 0.4  # the network says background everywhere, class a faintly right
    prob[0, :, 20:] = 0.5
    prob[2, :, :20] = 0.4
    strokes = np.zeros((40, 40), np.uint8)
    strokes[20, 25:30] = 1
    strokes[20, 5:10] = 2
    out = refine_labels(prob, strokes, scheme, config=RefineConfig(method="threshold", reach=5))
    assert out[20, 25] == 1 and out[20, 5] == 2 and out[20, 32] == 1 and out[0, 0] == 0


@pytest.mark.parametrize("bad, words", [(np.full((96, 96), 7, np.uint8), "value 7"),
                                        (np.zeros((10, 10), np.uint8), "do not match"),
                                        (np.zeros((96, 96), np.float32), "whole class numbers")])
def test_bad_strokes_are_one_line(bad, words):
    with pytest.raises(RamsegInputError, match=words):
        refine_labels(_faint_vessels(), bad, VESSELS)


def test_the_reach_is_given_at_the_working_scale():
    """Issue 30: ``reach`` counts pixels of the model's working scale, so a stroke on a photograph loaded
    at twice that scale reaches twice as many of its pixels: the same stretch of anatomy."""
    from dataclasses import replace

    small = _faint_vessels()
    big = np.repeat(np.repeat(small, 2, axis=1), 2, axis=2)  # the same scan, loaded at twice the scale
    config = replace(THRESHOLD, reach=8)
    strokes = np.zeros(big.shape[1:], np.uint8)
    strokes[100:102, 20:60] = 1  # along the faint vessel at rows 98-103, ending at column 60
    at_working_scale = refine_labels(big, strokes, VESSELS, config=config, scale=2.0)
    assert at_working_scale[98:104, 60:74].all()  # 8 working pixels past the stroke's end: 16 of these
    assert not at_working_scale[90:110, 78:].any()
    as_loaded = refine_labels(big, strokes, VESSELS, config=config)
    assert not as_loaded[90:110, 70:].any()  # a reach in loaded pixels would stop at half the anatomy



def test_at_scale_counts_every_head_distance_at_the_working_scale():
    """``at_scale``: reach, head_near and head_smooth grow with the scale, head_min_size (an area) with its square."""
    from napari_ramseg.core.config import RefineConfig
    from napari_ramseg.core.review.refine import at_scale

    scaled = at_scale(RefineConfig(reach=10, head_near=10, head_min_size=30, head_smooth=1.5), 2.0)
    assert (scaled.reach, scaled.head_near, scaled.head_min_size, scaled.head_smooth) == (20, 20, 120, 3.0)

def test_working_scale_of_a_photograph_a_volume_and_a_disc_roi():
    from napari_ramseg.core.config import PreprocessConfig
    from napari_ramseg.core.data.geometry import working_shape
    from napari_ramseg.core.review.refine import at_scale, working_scale
    from napari_ramseg.io import ImageData

    class Photographs:  # a predictor's input_shape: photographs at a 768 px long side, a disc ROI at 256
        def input_shape(self, height, width, volume=False, spacing=None):
            if volume:
                return height // 2, width // 2
            return working_shape(height, width, PreprocessConfig(long_side=768 if height != width else None))

    photograph = ImageData(array=np.zeros((1024, 1536, 3), np.uint8), axes="YXC")
    assert working_scale(Photographs(), photograph) == pytest.approx(2.0)
    volume = ImageData(array=np.zeros((4, 64, 64), np.float32), axes="ZYX")
    assert working_scale(Photographs(), volume) == pytest.approx(2.0)
    assert working_scale(Photographs(), photograph, {"roi": {"top": 10, "left": 20, "side": 512}}) == pytest.approx(2.0)
    scaled = at_scale(RefineConfig(reach=200, head_near=10, head_min_size=30), 2.0)
    assert (scaled.reach, scaled.head_near, scaled.head_min_size) == (400, 20, 120)
