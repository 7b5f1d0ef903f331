"""``ramseg predict --model optic-disc``: whole photographs and disc-centred crops, full-size masks, the
printed vCDR and two-stage settings, report.csv's cup-to-disc ratios for a folder, and a clear refusal
without a disc."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_ramseg.cli import main
from napari_ramseg.core.models.checkpoint import load_metadata
from napari_ramseg.models import bundled_models, resolve_model


def _dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


pytestmark = pytest.mark.skipif("optic-disc" not in bundled_models(), reason="optic-disc model not installed")
SETTINGS = Path(__file__).resolve().parents[1] / "bench" / "results" / "optic_disc_settings.json"


def _says_the_package_settings(err: str) -> bool:
    """The --verbose line names every setting of the package's "disc" block that differs from DiscConfig's."""
    from napari_ramseg.core.config import DiscConfig

    disc, defaults = load_metadata(resolve_model("optic-disc")).disc, DiscConfig()
    changed = [f"{k} {v}" for k, v in disc.items() if getattr(defaults, k) != v]
    line = next((ln for ln in err.splitlines() if ln.startswith("optic disc settings: the model package's: ")), "")
    return bool(changed) and all(c in line for c in changed) and line.endswith("the rest as DiscConfig's defaults")


def test_the_bundled_model_carries_the_settings_its_rows_were_measured_with():
    if not SETTINGS.exists():
        pytest.skip("bench/results/optic_disc_settings.json not in this checkout")
    measured = json.loads(SETTINGS.read_text())["directions"]["bundled"]
    assert measured["run"] == "napari_ramseg/bundled_models/optic-disc"
    assert load_metadata(resolve_model("optic-disc")).disc == measured["settings"]


def test_whole_drions_photograph_gives_a_full_size_disc_and_the_vcdr(shared_data, tmp_path, capsys):
    photo = shared_data / "fundus" / "DRIONS-DB" / "images" / "image_001.jpg"
    truth = np.array(Image.open(shared_data / "fundus" / "DRIONS-DB" / "labels" / "image_001.png")) >= 1
    assert main(["predict", "--model", "optic-disc", "--input", str(photo), "--output", str(tmp_path / "m.png"),
                 "--precision", "fp32", "--verbose"]) == 0  # the settings line only with --verbose
    mask = np.array(Image.open(tmp_path / "m.png"))
    assert mask.shape == (400, 600) and _dice(mask >= 1, truth) > 0.8
    err = capsys.readouterr().err
    assert "vCDR" in err and "whole photograph" in err and _says_the_package_settings(err)


def test_adapting_a_whole_photograph_adapts_each_roi_of_the_two_stages(shared_data, tmp_path, capsys, monkeypatch):
    from napari_ramseg.core.inference.adapt import AdaptedPredictor

    photo = shared_data / "fundus" / "DRIONS-DB" / "images" / "image_001.jpg"
    truth = np.array(Image.open(shared_data / "fundus" / "DRIONS-DB" / "labels" / "image_001.png")) >= 1
    shapes = []
    original = AdaptedPredictor.predict_image
    monkeypatch.setattr(AdaptedPredictor, "predict_image",
                        lambda self, image, postprocess=False: shapes.append(image.shape) or original(self, image, postprocess))
    assert main(["predict", "--model", "optic-disc", "--input", str(photo), "--output", str(tmp_path / "m.png"),
                 "--adapt", "--precision", "fp32"]) == 0
    mask = np.array(Image.open(tmp_path / "m.png"))
    assert mask.shape == (400, 600) and _dice(mask >= 1, truth) > 0.8
    assert len(shapes) >= 2 and all(s[0] == s[1] < 300 for s in shapes)  # square ROIs, never the photograph
    err = capsys.readouterr().err
    assert "adapted (align): fit " in err and f"(the last of {len(shapes)} ROIs adapted)" in err and "vCDR" in err


def test_drishti_crop_is_taken_as_a_crop(shared_data, tmp_path, capsys):
    crop = shared_data / "fundus" / "Drishti-GS" / "images" / "drishtiGS_004.png"  # held out from training
    truth = np.array(Image.open(shared_data / "fundus" / "Drishti-GS" / "labels" / "drishtiGS_004.png"))
    assert main(["predict", "--model", "optic-disc", "--input", str(crop), "--output", str(tmp_path / "c.png"),
                 "--precision", "fp32", "--verbose"]) == 0
    mask = np.array(Image.open(tmp_path / "c.png"))
    assert mask.shape == truth.shape[:2] and _dice(mask >= 1, truth >= 1) > 0.85 and (mask == 2).any()
    err = capsys.readouterr().err
    assert "disc-centred crop" in err and _says_the_package_settings(err)


def test_a_folder_gets_the_ratios_in_report_csv_and_a_discless_photograph_comes_first(shared_data, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(shared_data / "fundus" / "DRIONS-DB" / "images" / "image_002.jpg", folder)
    Image.fromarray(np.zeros((400, 600, 3), np.uint8)).save(folder / "blank.png")  # nothing in view
    assert main(["predict", "--model", "optic-disc", "--input", str(folder), "--output", str(tmp_path / "out"),
                 "--precision", "fp32"]) == 0
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "out" / "report.csv"))}
    assert 0.0 < float(rows["image_002"]["vcdr"]) < 1.0 and rows["image_002"]["review_priority"] == "2"
    # listed, first for review, with the reason, as the worklist lists it; but no mask is written
    blank = rows["blank"]
    assert blank["review_priority"] == "1" and blank["fits"] == "False" and "no optic disc found" in blank["fit_note"]
    assert float(blank["mean_uncertainty"]) == 1.0 and blank["vcdr"] == ""
    assert not (tmp_path / "out" / "blank.png").exists()


def test_one_photograph_without_a_disc_is_refused_in_one_line(tmp_path, capsys):
    Image.fromarray(np.zeros((400, 600, 3), np.uint8)).save(tmp_path / "blank.png")  # nothing in view
    assert main(["predict", "--model", "optic-disc", "--input", str(tmp_path / "blank.png"),
                 "--output", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err
    assert "no optic disc found" in err and "blank" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.png").exists()


def test_a_grey_image_is_refused_as_not_a_fundus_image_in_one_line(tmp_path, capsys):
    yy, xx = np.mgrid[:400, :600]
    slice_like = (60 + 120 * np.exp(-((yy - 200) ** 2 + (xx - 300) ** 2) / 2000.0)).astype(np.uint8)  # a bright blob
    Image.fromarray(np.stack([slice_like] * 3, -1)).save(tmp_path / "grey.png")  # grey stored as RGB, like an MRI slice
    assert main(["predict", "--model", "optic-disc", "--input", str(tmp_path / "grey.png"),
                 "--output", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err
    assert "not a colour fundus image" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.png").exists()


def test_finetune_learns_from_rois_of_the_corrected_photographs(shared_data, tmp_path, capsys):
    """``ramseg finetune`` on three DRIONS-DB photographs (disc-only masks): the round says it learns from
    disc-centred ROIs, scores the held-out photograph through the two stages, and the base is untouched."""
    folder = shared_data / "fundus" / "DRIONS-DB"
    stems = ["image_003", "image_010", "image_020"]
    base = resolve_model("optic-disc")
    before = (base / "model.safetensors").read_bytes()
    assert main(["finetune", "--model", "optic-disc", "--images", *[str(folder / "images" / f"{s}.jpg") for s in stems],
                 "--labels", *[str(folder / "labels" / f"{s}.png") for s in stems], "--out", str(tmp_path / "models"),
                 "--iterations", "2", "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    assert "2 corrected image(s) cut into 8 disc-centred ROIs" in err  # 1 + 2 jittered + 1 negative each
    record = json.loads((tmp_path / "models" / "v001" / "model.json").read_text())["finetune"]
    # the held-out photograph through the two stages: the bundled model finds its disc (it was trained on it)
    assert record["before_dice"] > 0.85 and record["after_dice"] is not None
    assert (base / "model.safetensors").read_bytes() == before
