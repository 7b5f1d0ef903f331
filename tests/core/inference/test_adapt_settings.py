"""A model package's source-chosen adaptation settings (model.json's "adapt" block): written atomically
with the rest of the file kept, validated on load with a one-line error, laid over AdaptConfig's
defaults by AdaptedPredictor, beaten by a config the caller gives, and kept by fine-tuning."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from napari_ramseg.core.inference.adapt import AdaptedPredictor, adapt_and_predict
from napari_ramseg.core.models.checkpoint import (ModelMetadata, check_adapt_settings, load_metadata, load_model,
                                                  write_adapt_settings, write_disc_settings)
from napari_ramseg.core.config import ADAPT
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.errors import RamsegInputError

CHOSEN = {"align": {"window": 0.025, "strength": 0.25}}
RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results" / "adaptation_bundled_settings.json"
IMAGE = np.random.default_rng(3).integers(0, 255, (36, 44, 3), dtype=np.uint8)


@pytest.fixture
def model(tmp_path, tiny_model):
    """A copy of the tiny run folder (no "adapt" block), free to be written."""
    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


def test_the_block_round_trips_and_the_rest_of_model_json_is_kept(model):
    before = (model / "model.json").read_text()
    write_adapt_settings(model, CHOSEN)
    after = json.loads((model / "model.json").read_text())
    assert after["adapt"] == CHOSEN and list(after).index("adapt") == list(after).index("metrics") + 1
    assert json.dumps({k: v for k, v in after.items() if k != "adapt"}, indent=2) == before
    metadata = load_metadata(model)
    assert metadata.adapt == CHOSEN and "adapt" not in metadata.extra
    assert ModelMetadata.from_dict(metadata.to_dict()).adapt == CHOSEN
    write_adapt_settings(model, {"align": {"strength": 0.75}})  # a second choice replaces the first
    text = (model / "model.json").read_text()
    assert text.count('"adapt": {') == 1 and json.loads(text)["adapt"] == {"align": {"strength": 0.75}}


def test_the_disc_and_adapt_blocks_keep_to_their_order(model):
    write_adapt_settings(model, CHOSEN)
    write_disc_settings(model, {"refine": 2})  # written second, still where to_dict puts it: before "adapt"
    keys = list(json.loads((model / "model.json").read_text()))
    assert keys.index("metrics") + 1 == keys.index("disc") == keys.index("adapt") - 1
    assert list(load_metadata(model).to_dict()).index("adapt") == keys.index("adapt")


def test_the_entry_point_lays_the_package_settings_over_the_defaults(model):
    assert AdaptedPredictor(Predictor.from_path(model, device="cpu"), "align").config == ADAPT
    write_adapt_settings(model, CHOSEN)
    predictor = Predictor.from_path(model, device="cpu")
    adapted = AdaptedPredictor(predictor, "align")
    assert adapted.config == replace(ADAPT, **CHOSEN["align"]) and adapted.config.towards == ADAPT.towards
    assert adapted.settings_line() == ("adaptation settings (align): window 0.025 (model.json), "
                                       "strength 0.25 (model.json), towards nearest")
    _, report = adapt_and_predict(predictor, IMAGE, "align")
    assert report.info["strength"] == 0.25
    assert AdaptedPredictor(predictor).config.window == 0.025  # a bare --adapt runs align: the same
    assert AdaptedPredictor(predictor, "prompt").config == ADAPT  # no prompt block: its defaults


def test_a_config_the_caller_gives_wins(model):
    write_adapt_settings(model, CHOSEN)
    predictor = Predictor.from_path(model, device="cpu")
    mine = replace(ADAPT, strength=1.0)
    adapted = AdaptedPredictor(predictor, "align", mine)
    assert adapted.config is mine and "model.json" not in adapted.settings_line()
    assert adapt_and_predict(predictor, IMAGE, "align", config=mine)[1].info["strength"] == 1.0


@pytest.mark.parametrize("block, message", [
    ({"align": {"windw": 0.1}}, "adapt.align.windw is not an adaptation setting"),
    ({"magic": {"window": 0.1}}, "adapt.magic is not an adaptation method"),
    ({"align": {"strength": 2}}, "adapt.align.strength must be a number in 0.0..1.0"),
    ({"align": {"method": "tent"}}, "adapt.align.method is not an adaptation setting"),
    ({"align": {"towards": "far"}}, "adapt.align.towards must be one of nearest, all"),
    ({"prompt": {"prompt_steps": 10 ** 6}}, "adapt.prompt.prompt_steps must be a whole number in 1..32"),
    ({"align": 0.5}, "adapt must be an object of settings per method"),
])
def test_a_bad_block_is_refused_on_load_in_one_line(model, block, message):
    path = model / "model.json"
    data = json.loads(path.read_text())
    data["adapt"] = block
    path.write_text(json.dumps(data))
    with pytest.raises(RamsegInputError) as err:
        load_metadata(model)
    assert message in str(err.value) and "invalid model metadata" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_bad_settings_are_never_written(model):
    before = (model / "model.json").read_bytes()
    with pytest.raises(RamsegInputError, match="invalid adaptation settings .adapt.align.windw is not"):
        write_adapt_settings(model, {"align": {"windw": 0.1}})
    assert (model / "model.json").read_bytes() == before


def test_whole_numbers_for_a_fraction_become_floats():
    assert check_adapt_settings({"align": {"strength": 1}}) == {"align": {"strength": 1.0}}


def test_a_finetuned_model_keeps_its_bases_block(tmp_path, model):
    """The settings were chosen on the base's sources; corrections do not re-choose them."""
    from helpers import make_synthetic_domains
    from napari_ramseg.core.finetune.corrections import CorrectionStore
    from napari_ramseg.core.config import FinetuneConfig
    from napari_ramseg.core.finetune.round import finetune
    from napari_ramseg.io import read_image, read_mask

    site = make_synthetic_domains(tmp_path / "site", domains=("siteC",), cases=3, size=40, seed=7)
    store = CorrectionStore(tmp_path / "project")
    predictor = Predictor.from_path(model, device="cpu")
    for i in range(3):
        image = read_image(site / "siteC" / "images" / f"case{i}.png").array
        store.save(image, predictor.predict(image).labels, read_mask(site / "siteC" / "labels" / f"case{i}.png"),
                   model, f"case{i}")
    write_adapt_settings(model, CHOSEN)
    result = finetune(model, store, tmp_path / "models", FinetuneConfig(iterations=1, device="cpu"))
    assert load_model(result.model_dir, "cpu")[1].adapt == CHOSEN


@pytest.mark.parametrize("name", ["vessels", "optic-disc"])
def test_the_bundled_block_is_the_source_chosen_setting(name):
    """bench/recipes/adaptation_settings.py chose it on the model's source-validation cases and wrote it."""
    from napari_ramseg.models import resolve_model

    if not RESULTS.exists():
        pytest.skip("bench/results/adaptation_bundled_settings.json not in this checkout")
    results = json.loads(RESULTS.read_text())
    if name not in results:
        pytest.skip(f"no source-chosen setting recorded for {name}")
    chosen = results[name]["chosen"]
    assert chosen in results[name]["grid"]
    assert load_metadata(resolve_model(name)).adapt == {"align": chosen}
