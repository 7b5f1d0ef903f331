"""The disc-centred ROI (crop, then paste back to the same geometry) and the cup-to-disc measures on
hand-made masks with known ratios."""

import numpy as np
import pytest

from napari_ramseg.core.labels import OPTIC_DISC_CUP
from napari_ramseg.core.tasks.disc.measures import disc_measures
from napari_ramseg.core.tasks.disc.roi import Roi, crop, paste, resize_square
from napari_ramseg.core.evaluation.measures import measure_case


def _ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _disc_cup(shape=(200, 300), center=(90, 140), disc=(40, 36), cup=(20, 12)):
    labels = np.zeros(shape, np.uint8)
    labels[_ellipse(shape, *center, *disc)] = 1
    labels[_ellipse(shape, *center, *cup)] = 2
    return labels


@pytest.mark.parametrize("roi", [Roi(40, 80, 120), Roi(-30, -20, 100), Roi(150, 250, 90)])  # inside; over edges
def test_roi_round_trip_returns_the_image_geometry(roi):
    labels = _disc_cup()
    cropped = crop(labels, roi)
    assert cropped.shape == (roi.side, roi.side)
    back = paste(cropped, roi, labels.shape)
    assert back.shape == labels.shape
    rows, cols, _, _ = roi.inside(labels.shape)
    assert np.array_equal(back[rows, cols], labels[rows, cols])  # everything the ROI saw, in place
    outside = np.ones(labels.shape, bool)
    outside[rows, cols] = False
    assert not back[outside].any()  # and nothing elsewhere (the padding is dropped)


def test_roi_round_trip_through_the_network_scale():
    """Crop, shrink to the network's 256 px and back: the disc comes back where it was."""
    labels = _disc_cup(shape=(400, 600), center=(210, 390), disc=(48, 45), cup=(24, 20))
    roi = Roi.around((210, 390), 96, 1.34)
    small = resize_square(crop(labels, roi), 64, labels=True)
    back = paste(small, roi, labels.shape)
    disc_in, disc_back = labels >= 1, back >= 1
    dice = 2 * (disc_in & disc_back).sum() / (disc_in.sum() + disc_back.sum())
    assert dice > 0.97
    assert abs(np.argwhere(disc_back).mean(0) - np.argwhere(disc_in).mean(0)).max() < 1.5


def test_image_crop_pads_black_and_keeps_channels():
    image = np.full((50, 60, 3), 200, np.uint8)
    out = crop(image, Roi(-10, -10, 30))
    assert out.shape == (30, 30, 3) and out[:10].max() == 0 and out[10:, 10:].min() == 200


def test_roi_around_is_centred_and_scaled():
    roi = Roi.around((100.0, 50.0), 80, 1.5)
    assert roi.side == 120 and roi.center == (100.0, 50.0)


@pytest.mark.parametrize("disc, cup, vcdr, hcdr", [((40, 36), (20, 12), 41 / 81, 25 / 73),
                                                    ((30, 30), (15, 15), 31 / 61, 31 / 61)])
def test_cup_to_disc_ratios_of_hand_made_masks(disc, cup, vcdr, hcdr):
    labels = _disc_cup(disc=disc, cup=cup)
    m = measure_case(labels, OPTIC_DISC_CUP)
    assert m["vcdr"] == pytest.approx(vcdr) and m["hcdr"] == pytest.approx(hcdr)
    assert m["rim_px"] == m["disc_px"] - m["cup_px"] and m["cup_inside_disc"] is True


def test_known_ratio_with_rectangles_and_pixel_size():
    labels = np.zeros((100, 100), np.uint8)
    labels[10:90, 20:70] = 1  # disc: 80 rows, 50 columns
    labels[30:70, 35:55] = 2  # cup: 40 rows, 20 columns
    m = measure_case(labels, OPTIC_DISC_CUP, spacing=(0.01, 0.01))
    assert m["vcdr"] == 0.5 and m["hcdr"] == 0.4
    assert m["disc_px"] == 4000 and m["cup_px"] == 800 and m["rim_px"] == 3200
    assert m["rim_mm2"] == pytest.approx(0.32) and m["disc_mm2"] == pytest.approx(0.4)


def test_no_cup_and_no_disc():
    labels = np.zeros((50, 50), np.uint8)
    assert measure_case(labels, OPTIC_DISC_CUP)["vcdr"] is None
    labels[10:40, 10:40] = 1
    m = measure_case(labels, OPTIC_DISC_CUP)
    assert m["vcdr"] == 0.0 and m["hcdr"] == 0.0 and "rim_mm2" not in m


def test_a_cup_reaching_the_disc_outline_is_flagged():
    disc = np.zeros((50, 50), bool)
    disc[10:40, 10:40] = True
    cup = np.zeros_like(disc)
    cup[20:30, 20:30] = True
    assert disc_measures(disc, cup)["cup_inside_disc"] is True
    cup[20:30, 10:30] = True  # touches the disc's left edge: no rim there
    assert disc_measures(disc, cup)["cup_inside_disc"] is False
    outside = np.zeros_like(disc)
    outside[0:5, 0:5] = True  # a cup outside the disc (an exclusive scheme's separate masks)
    assert disc_measures(disc, outside)["cup_inside_disc"] is False
