"""A model package's two-stage optic disc settings (model.json's "disc" block): written atomically with
the rest of the file kept, validated on load with a one-line error, laid over DiscConfig's defaults by
DiscPredictor, and beaten by a DiscConfig the caller gives."""

import dataclasses
import json

import numpy as np
import pytest

from napari_ramseg.core.models.checkpoint import (DISC_LIMITS, ModelMetadata, build_model, check_disc_settings,
                                                  load_metadata, save_model, write_disc_settings)
from napari_ramseg.core.config import DiscConfig, ModelConfig, TrainConfig
from napari_ramseg.core.labels import OPTIC_DISC_CUP
from napari_ramseg.core.tasks.disc import DiscPredictor
from napari_ramseg.core.tasks.disc.predict import _paste_prediction, _pad_square
from napari_ramseg.core.tasks.disc.roi import Roi
from napari_ramseg.core.inference.predictor import Prediction, Predictor
from napari_ramseg.errors import RamsegInputError

from helpers import BrightDiscModel, import_bench, synthetic_fundus

CHOSEN = {"coarse_long_side": 384, "disc_fov_ratio": 0.17, "candidates": 3, "min_confidence": 0.6,
          "max_disc_fraction": 1.0, "pick": "first", "refine": 2, "max_rescale": 1.0, "refine_crops": 2}  # the bundled model's


@pytest.fixture
def disc_model(tmp_path):
    """A run folder holding an untrained nested disc/cup network (base width 4) and no "disc" block."""
    metadata = ModelMetadata(TrainConfig(labels=OPTIC_DISC_CUP, model=ModelConfig(base_width=4, depth=3)), ["A"],
                             extra={"command": "made by a test"})
    return save_model(build_model(metadata), metadata, tmp_path / "disc-model")


def test_the_block_round_trips_and_the_rest_of_model_json_is_kept(disc_model):
    before = (disc_model / "model.json").read_text()
    write_disc_settings(disc_model, CHOSEN)
    after = json.loads((disc_model / "model.json").read_text())
    assert after["disc"] == CHOSEN and list(after).index("disc") == list(after).index("metrics") + 1
    assert json.dumps({k: v for k, v in after.items() if k != "disc"}, indent=2) == before
    metadata = load_metadata(disc_model)
    assert metadata.disc == CHOSEN and "disc" not in metadata.extra
    assert ModelMetadata.from_dict(metadata.to_dict()).disc == CHOSEN
    write_disc_settings(disc_model, {"refine": 2})  # a second choice replaces the first, not added beside it
    text = (disc_model / "model.json").read_text()
    assert text.count('"disc": {') == 1 and json.loads(text)["disc"] == {"refine": 2}


def test_disc_predictor_uses_the_package_settings_over_the_defaults(disc_model):
    assert DiscPredictor(Predictor.from_path(disc_model, device="cpu")).config == DiscConfig()
    write_disc_settings(disc_model, CHOSEN)
    disc = DiscPredictor(Predictor.from_path(disc_model, device="cpu"))
    assert disc.config == dataclasses.replace(DiscConfig(), **CHOSEN) and disc.config.roi_ratio == DiscConfig.roi_ratio
    assert disc.settings_line() == ("optic disc settings: the model package's: coarse_long_side 384, "
                                    "refine 2, refine_crops 2, max_rescale 1.0, max_disc_fraction 1.0, "
                                    "the rest as DiscConfig's defaults")


def test_the_package_block_changes_what_the_prediction_does():
    crop = synthetic_fundus(disc=(200, 300), radius=40)[110:330, 200:420]  # a crop, the disc off its centre
    plain, refined = BrightDiscModel(), BrightDiscModel({"refine_crops": 1})
    DiscPredictor(plain).predict(crop)
    DiscPredictor(refined).predict(crop)
    assert len(plain.calls) == 1 and len(refined.calls) == 2  # the block's refine_crops re-centred the crop


def test_the_dock_and_worklist_path_takes_the_package_settings_too():
    from napari_ramseg.core.tasks.disc import predict_2d  # what the dock and the worklist call

    model = BrightDiscModel({"refine_crops": 1})
    _, summary = predict_2d(model, synthetic_fundus(disc=(200, 300), radius=40)[110:330, 200:420], True)
    assert summary["kind"] == "crop" and len(model.calls) == 2


def test_an_explicit_disc_config_wins_over_the_package():
    model = BrightDiscModel({"refine_crops": 2, "coarse_long_side": 384})
    disc = DiscPredictor(model, DiscConfig())
    assert disc.config == DiscConfig() and disc.settings_source == "given"
    assert disc.settings_line() == "optic disc settings: as given: all as DiscConfig's defaults"
    disc.predict(synthetic_fundus(disc=(200, 300), radius=40)[110:330, 200:420])
    assert len(model.calls) == 1
    assert DiscPredictor(BrightDiscModel()).settings_line().endswith("(the model package carries none)")


@pytest.mark.parametrize("block, message", [
    ({"coarse_side": 384}, "disc.coarse_side is not a two-stage setting (known: coarse_long_side"),
    ({"pick": "best"}, "disc.pick must be one of first, confident, not 'best'"),
    ({"refine": -1}, "disc.refine must be a whole number in 0..8, not -1"),
    ({"refine": True}, "disc.refine must be a whole number"),
    ({"candidates": 1e9}, "disc.candidates must be a whole number in 1..32"),
    ({"max_disc_fraction": 1.5}, "disc.max_disc_fraction must be a number in 0.0..1.0, not 1.5"),
    ({"min_confidence": "0.6"}, "disc.min_confidence must be a number"),
    ({"min_confidence": float("nan")}, "disc.min_confidence must be a number"),
    ({"min_disc_fraction": 0.5, "max_disc_fraction": 0.4}, "min_disc_fraction 0.5 exceeds max_disc_fraction 0.4"),
    ([384], "disc must be an object of two-stage settings"),
])
def test_a_bad_block_is_refused_on_load_in_one_clear_line(disc_model, block, message):
    path = disc_model / "model.json"
    data = json.loads(path.read_text())
    data["disc"] = block
    path.write_text(json.dumps(data))
    with pytest.raises(RamsegInputError) as err:
        load_metadata(disc_model)
    assert message in str(err.value) and "invalid model metadata" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_bad_settings_are_never_written(disc_model):
    before = (disc_model / "model.json").read_bytes()
    with pytest.raises(RamsegInputError, match="invalid optic disc settings .disc.refnie is not"):
        write_disc_settings(disc_model, {"refnie": 2})
    assert (disc_model / "model.json").read_bytes() == before


def test_every_setting_has_limits_that_its_default_and_the_chosen_values_pass():
    numeric = {f.name for f in dataclasses.fields(DiscConfig) if f.name != "pick"}
    assert numeric == set(DISC_LIMITS)
    assert check_disc_settings(dataclasses.asdict(DiscConfig())) == dataclasses.asdict(DiscConfig())
    assert check_disc_settings({"max_disc_fraction": 1}) == {"max_disc_fraction": 1.0}  # JSON's 1 is a fraction


def test_the_settings_tool_writes_a_choice_only_into_the_model_it_was_chosen_for(disc_model, tmp_path):
    settings = import_bench("recipes.optic_disc_settings")
    results = tmp_path / "settings.json"
    results.write_text(json.dumps({"directions": {"bundled": {"run": str(disc_model), "settings": CHOSEN}}}))
    assert "wrote" in settings.write_into(results, "bundled", disc_model)
    assert load_metadata(disc_model).disc == CHOSEN
    with pytest.raises(SystemExit, match="chosen for"):
        settings.write_into(results, "bundled", tmp_path)
    with pytest.raises(SystemExit, match="no settings chosen for 'drions_to_drishti'"):
        settings.write_into(results, "drions_to_drishti", disc_model)


def test_padding_and_pasting_keep_maps_a_prediction_goes_without():
    labels = np.ones((30, 20), np.uint8)
    bare = Prediction(labels, None, None, ["disc", "cup"])
    padded = _pad_square(bare, Roi(0, 0, 30))
    assert padded.labels.shape == (30, 30) and padded.probabilities is None and padded.entropy is None
    pasted = _paste_prediction(padded, Roi(5, 5, 30), (50, 60))
    assert pasted.labels.shape == (50, 60) and pasted.probabilities is None and pasted.entropy is None
    full = _pad_square(Prediction(labels, np.ones((2, 30, 20), np.float32), np.zeros((30, 20)), ["disc", "cup"]),
                       Roi(0, 0, 30))
    assert full.probabilities.shape == (2, 30, 30) and full.probabilities[:, :, 20:].max() == 0
