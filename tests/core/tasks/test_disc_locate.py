"""Stage one on synthetic fundus images: photograph or crop, and the disc among bright distractors."""

import numpy as np
import pytest

from napari_ramseg.core.config import DiscConfig
from napari_ramseg.core.tasks.disc.locate import locate

from helpers import synthetic_fundus as _photograph


def test_the_bright_disc_of_a_photograph_is_the_first_candidate():
    located = locate(_photograph())
    assert located.photograph
    best = located.candidates[0]
    assert abs(best.y - 150) < 12 and abs(best.x - 420) < 12
    assert 60 < best.diameter < 130  # DiscConfig.disc_fov_ratio of the field of view's width


def test_a_crop_filled_to_its_corners_is_a_crop():
    crop = _photograph(disc=(200, 300))[80:320, 180:420]
    located = locate(crop)
    assert not located.photograph
    assert abs(located.candidates[0].y - 120) < 15 and abs(located.candidates[0].x - 120) < 15


def test_a_small_lamp_reflex_does_not_hide_the_disc_among_the_candidates():
    image = _photograph()
    image[300:306, 150:156] = 255  # a tiny saturated reflex
    located = locate(image, DiscConfig(candidates=3))
    assert any(abs(c.y - 150) < 12 and abs(c.x - 420) < 12 for c in located.candidates)


@pytest.mark.parametrize("shape", [(64, 64), (300, 200)])
def test_flat_images_still_give_a_candidate(shape):
    located = locate(np.zeros((*shape, 3), np.uint8))
    assert len(located.candidates) >= 1
