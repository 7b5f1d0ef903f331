"""The optic disc's per-direction settings (bench/recipes/optic_disc_settings.py): what each direction may see,
the vessel-convergence point that stands in for a disc on the vessel photographs, and the hit test."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import import_bench

settings = import_bench("recipes.optic_disc_settings")


def test_no_direction_chooses_its_settings_on_its_unseen_domain():
    unseen = {"drishti_to_drions": "DRIONS-DB", "drions_to_drishti": "Drishti-GS"}
    for name, target in unseen.items():
        assert not any(target in d for d in settings.SOURCE_PHOTOGRAPHS[name]), name
        assert not any(target in d for d in settings.SOURCE_CROPS[name]), name
    assert "DRIONS-DB" in settings.SOURCE_PHOTOGRAPHS["bundled"]  # a source of the shipped model


def test_the_convergence_point_is_where_the_vessel_tree_meets():
    h, w = 300, 400
    mask = np.zeros((h, w), bool)
    hub = (120, 300)
    for angle in np.linspace(0, 2 * np.pi, 9, endpoint=False):  # eight vessels leaving the hub
        for r in range(0, 250):
            y, x = int(hub[0] + r * np.sin(angle)), int(hub[1] + r * np.cos(angle))
            if 0 <= y < h and 0 <= x < w:
                mask[max(0, y - 1):y + 2, max(0, x - 1):x + 2] = True
    y, x = settings.convergence_point(mask, fov_width=w)
    assert abs(y - hub[0]) < 10 and abs(x - hub[1]) < 10


def test_a_hit_is_inside_the_expert_disc_or_near_the_convergence_point():
    disc = np.zeros((50, 50), bool)
    disc[10:20, 10:20] = True
    with_mask = settings.Photo("DRIONS-DB", "a", np.zeros((50, 50, 3), np.uint8), disc)
    assert with_mask.hit(15, 15) and not with_mask.hit(30, 30) and not with_mask.hit(-5, 80)
    vessel = settings.Photo("HRF", "b", np.zeros((50, 50, 3), np.uint8), None, (25.0, 25.0), 8.0)
    assert vessel.hit(30, 30) and not vessel.hit(25, 40)


def test_refinement_ties_go_to_fewer_passes_then_to_the_earlier_bound():
    grid = ["0/0.0"] + [f"{k}/{b}" for k in settings.REFINE if k > 0 for b in settings.MAX_RESCALE]
    photographs = dict.fromkeys(grid, 0.80)
    photographs.update({"1/1.25": 0.85, "2/1.25": 0.85004, "2/1.1": 0.85})  # 1/1.25 and 2/1.1 tie at 4 decimals
    crops = {0: 0.90, 1: 0.93, 2: 0.93004}  # 1 and 2 tie at 4 decimals
    chosen = settings.pick_refinement({"photographs": photographs, "crops": crops})
    assert chosen == {"refine": 1, "max_rescale": 1.25, "refine_crops": 1}
    flat = settings.pick_refinement({"photographs": dict.fromkeys(grid, 0.8), "crops": dict.fromkeys(range(3), 0.8)})
    assert flat == {"refine": 0, "max_rescale": 0.0, "refine_crops": 0}
