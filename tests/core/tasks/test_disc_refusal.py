"""The "not a colour fundus image" check at the edge of DiscPredictor (core/tasks/disc/fundus.py): a grey
image is refused in one line before either stage runs, a red-dominant fundus-like image is not, and
the threshold comes from DiscConfig or the model package's "disc" block."""

import json
from pathlib import Path

import numpy as np
import pytest

from napari_ramseg.core.models.checkpoint import check_disc_settings
from napari_ramseg.core.config import DiscConfig
from napari_ramseg.core.tasks.disc import DiscPredictor, check_fundus, red_excess
from napari_ramseg.errors import RamsegInputError

from helpers import BrightDiscModel, import_bench, synthetic_fundus

RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results" / "fundus_check.json"


def _model(disc=None):
    """The stand-in disc model on every channel's mean, so a grey image would still show its disc."""
    return BrightDiscModel(disc, margin=30, channel=None)


def _grey(image):
    """The same picture with R = G = B (an MRI slice or a red-free photograph stored as RGB)."""
    return np.repeat(image[..., :3].mean(-1, keepdims=True), 3, axis=-1).round().astype(np.uint8)


def test_a_grey_image_is_refused_in_one_line_before_either_stage():
    model = _model()
    with pytest.raises(RamsegInputError, match="not a colour fundus image") as err:
        DiscPredictor(model).predict(_grey(synthetic_fundus()))
    assert len(str(err.value).splitlines()) == 1 and "red excess 0.000 < 0.084" in str(err.value)
    assert model.calls == []  # the network never ran


def test_a_red_dominant_fundus_like_photograph_and_crop_pass_the_check():
    photograph = synthetic_fundus(disc=(150, 420), radius=40)
    assert check_fundus(photograph) >= DiscConfig().min_red_excess
    found = DiscPredictor(_model()).predict(photograph)
    assert found.kind == "photograph" and found.labels[150, 420] >= 1
    crop = synthetic_fundus(disc=(200, 300), radius=40)[110:330, 200:420]
    assert DiscPredictor(_model()).predict(crop).kind == "crop"


def test_red_excess_is_zero_for_grey_and_the_same_for_a_photograph_its_crop_and_any_bit_depth():
    photograph = synthetic_fundus(radius=0.1)  # the fundus colour alone: 150, 70, 30 inside the field of view
    assert red_excess(_grey(photograph)) == pytest.approx(0.0, abs=1e-6)
    pure_red = np.zeros((64, 64, 3), np.uint8)
    pure_red[..., 0] = 200
    assert red_excess(pure_red) == pytest.approx(2 / 3)
    assert red_excess(photograph) == pytest.approx(150 / 250 - 1 / 3, abs=0.01)
    assert red_excess(photograph[120:280, 220:380]) == pytest.approx(150 / 250 - 1 / 3, abs=0.01)
    assert red_excess(photograph.astype(np.uint16) * 257) == pytest.approx(red_excess(photograph), abs=1e-4)
    assert red_excess(np.zeros((40, 40, 3), np.uint8)) == 0.0


def test_the_threshold_is_read_from_the_config_and_from_the_package():
    grey = _grey(synthetic_fundus())
    DiscPredictor(_model(), DiscConfig(min_red_excess=0.0)).predict(grey)  # 0: the check is off
    photograph = synthetic_fundus()
    DiscPredictor(_model()).predict(photograph)
    strict = _model({"min_red_excess": 0.5})  # a package asking for more red than this image has
    with pytest.raises(RamsegInputError, match=r"red excess 0\.\d+ < 0\.5"):
        DiscPredictor(strict).predict(photograph)
    assert strict.calls == []
    assert check_disc_settings({"min_red_excess": 0}) == {"min_red_excess": 0.0}
    with pytest.raises(ValueError, match="disc.min_red_excess must be a number in 0.0..0.66"):
        check_disc_settings({"min_red_excess": 0.9})


def test_the_default_threshold_is_the_one_chosen_on_fundus_images():
    """DiscConfig's default is bench/results/fundus_check.json's choice for the bundled model, below
    every fundus set's lowest value, and no fundus image of any set is refused by any direction's."""
    result = json.loads(RESULTS.read_text())
    assert result["directions"]["bundled"]["threshold"] == DiscConfig().min_red_excess
    lowest = min(s["min"] for s in result["sets"].values())
    assert DiscConfig().min_red_excess == pytest.approx(np.floor(result["margin"] * lowest * 1000) / 1000)
    for name, direction in result["directions"].items():
        assert not set(direction["unseen"]) & set(direction["chosen_on"]), name
        assert all(n == 0 for n in direction["refused"].values()), name


def test_scikit_images_fundus_photograph_passes():
    skimage_data = pytest.importorskip("skimage.data")
    assert check_fundus(skimage_data.retina()) >= DiscConfig().min_red_excess


def test_each_direction_chooses_its_threshold_without_its_unseen_domain(tmp_path):
    """bench/recipes/optic_disc_settings.py --fundus-check on a stand-in data folder: the margin times the lowest
    value of the sets a direction may see, and the refusals counted on its unseen domain too."""
    from PIL import Image

    settings = import_bench("recipes.optic_disc_settings")
    reds = {"DRIONS-DB": 95, "Drishti-GS": 120}  # the two disc sets a little less red than the rest
    for name, pattern in settings.FUNDUS_SETS.items():
        folder = tmp_path / pattern.replace("/*/", "/a/").rstrip("*")
        folder.mkdir(parents=True)
        image = np.zeros((64, 96, 3), np.uint8)
        image[...] = (reds.get(name, 150), 70, 30)
        Image.fromarray(image).save(folder / "case.png")
    result = settings.fundus_check(tmp_path)
    value = {n: s["min"] for n, s in result["sets"].items()}
    assert value["DRIONS-DB"] < value["Drishti-GS"] < value["HRF"]
    for name, direction in result["directions"].items():
        seen = min(v for n, v in value.items() if n not in settings.FUNDUS_UNSEEN[name])
        assert direction["threshold"] == pytest.approx(np.floor(0.8 * seen * 1000) / 1000), name
    assert result["directions"]["drishti_to_drions"]["lowest"]["set"] == "Drishti-GS"  # DRIONS-DB unseen
    assert result["directions"]["bundled"]["lowest"]["set"] == "DRIONS-DB"
    refused = result["directions"]["drishti_to_drions"]["refused"]  # 0.8 x Drishti-GS's value is above DRIONS-DB's
    assert set(refused) == set(settings.FUNDUS_SETS) and refused["DRIONS-DB"] == 1 and sum(refused.values()) == 1
