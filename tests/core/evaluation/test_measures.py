"""Clinical measures: sizes in pixels and physical units, field-of-view fractions, registered task measures."""

import numpy as np
import pytest

from napari_ramseg.core.labels import OPTIC_DISC_CUP, PROSTATE, VESSELS
from napari_ramseg.core.evaluation.measures import MEASURES, measure_case, register


def test_vessel_fraction_counts_only_the_field_of_view():
    labels = np.zeros((10, 10), np.uint8)
    labels[0, :] = 1  # 10 vessel pixels, 5 of them inside the field of view
    fov = np.zeros((10, 10), bool)
    fov[:5, :5] = True
    fov[5:, :] = True
    m = measure_case(labels, VESSELS, fov=fov)
    assert m["vessel_px"] == 10
    assert m["vessel_fraction"] == pytest.approx(5 / fov.sum())
    assert "vessel_mm2" not in m


def test_areas_in_mm2_and_volumes_in_ml():
    labels = np.zeros((4, 4), np.uint8)
    labels[:2, :2] = 2  # nested: the cup lies inside the disc
    labels[2, 2] = 1
    m = measure_case(labels, OPTIC_DISC_CUP, spacing=(0.5, 0.25))
    assert (m["disc_px"], m["cup_px"]) == (5, 4)
    assert m["disc_mm2"] == pytest.approx(5 * 0.125)
    volume = np.zeros((10, 10, 10), np.uint8)
    volume[:5] = 1
    v = measure_case(volume, PROSTATE, spacing=(3.0, 1.0, 1.0))
    assert v["prostate_voxels"] == 500
    assert v["prostate_ml"] == pytest.approx(1.5)


@pytest.mark.parametrize("spacing", [None, (0.0, 1.0), (float("nan"), 1.0), (1.0,)])
def test_unknown_spacing_gives_pixels_only(spacing):
    m = measure_case(np.ones((3, 3), np.uint8), VESSELS, spacing=spacing)
    assert m["vessel_px"] == 9 and "vessel_mm2" not in m


def test_registered_measures_run_only_when_their_labels_exist(monkeypatch):
    monkeypatch.setattr("napari_ramseg.core.evaluation.measures.MEASURES", dict(MEASURES))
    register("disc", "cup")(lambda masks, spacing: {"both": int(masks["cup"].sum())})
    labels = np.full((2, 2), 2, np.uint8)
    assert measure_case(labels, OPTIC_DISC_CUP)["both"] == 4
    assert "both" not in measure_case(labels > 0, VESSELS)


def test_fov_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="field-of-view"):
        measure_case(np.zeros((3, 3)), VESSELS, fov=np.ones((2, 2), bool))
