"""The ramseg command end to end on tiny sizes, and its one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from napari_ramseg.cli import main


def _ramseg(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "napari_ramseg", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_train_predict_evaluate_on_synthetic_data(synthetic_data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(synthetic_data), "--iterations", "3", "--size", "32", "--batch", "4",
                 "--base-width", "4", "--out", str(run), "--device", "cpu", "--quiet"]) == 0
    assert (run / "model.safetensors").exists() and (run / "model.json").exists()
    assert (run / "metrics.json").exists() and (run / "train.log").exists()
    image = synthetic_data / "siteA" / "images" / "case0.png"
    assert main(["predict", "--model", str(run), "--input", str(image), "--output", str(tmp_path / "m.png")]) == 0
    assert np.array(Image.open(tmp_path / "m.png")).shape == (48, 48)
    # a folder in, a folder out
    assert main(["predict", "--model", str(run), "--input", str(image.parent), "--output", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
    report_path = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(run), "--data", str(synthetic_data), "--domain", "siteB",
                 "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert set(report["summary"]["label_1"]) == {"dice", "hd95", "asd"}
    assert len(report["cases"]) == 4


def test_ablation_flags_reach_the_model_config(synthetic_data, tmp_path):
    run = tmp_path / "erm"
    assert main(["train", "--data", str(synthetic_data), "--iterations", "2", "--size", "32", "--batch", "4",
                 "--base-width", "4", "--out", str(run), "--no-ram", "--no-dsir", "--no-consistency", "--quiet"]) == 0
    method = json.loads((run / "model.json").read_text())["config"]["method"]
    assert (method["ram"], method["dsir"], method["consistency"]) == (False, False, False)


def test_cldice_weight_reaches_the_config_and_model_json(synthetic_data, tmp_path):
    run = tmp_path / "cldice"
    assert main(["train", "--data", str(synthetic_data), "--iterations", "2", "--size", "32", "--batch", "4",
                 "--base-width", "4", "--out", str(run), "--cldice-weight", "0.5", "--quiet"]) == 0
    saved = json.loads((run / "model.json").read_text())["config"]
    assert saved["cldice_weight"] == 0.5
    from napari_ramseg.core.models.checkpoint import load_metadata

    assert load_metadata(run).config.cldice_weight == 0.5
    log = [json.loads(line) for line in (run / "train.log").read_text().splitlines()]
    assert log and all(entry["cldice"] > 0 for entry in log)  # the term was in every step's loss


@pytest.mark.parametrize("weight", ["-1", "nan"])
def test_a_bad_cldice_weight_is_one_line_before_any_data_is_read(tmp_path, capsys, weight):
    # the data folder does not exist: the weight is refused first
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--cldice-weight", weight,
                 "--out", str(tmp_path / "r")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ramseg: error: --cldice-weight must be a number >= 0"), lines
    assert not (tmp_path / "r").exists()


def test_an_existing_run_is_never_overwritten(synthetic_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(synthetic_data), "--iterations", "1", "--size", "32", "--batch", "2",
            "--base-width", "4", "--out", str(run), "--quiet"]
    assert main(args) == 0
    before = (run / "model.safetensors").read_bytes()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("setup, expected", [
    ("missing_mask", "no mask"),
    ("size_mismatch", "does not match"),
    ("bad_labels", "outside"),
    ("empty", "no"),
    ("unreadable", "cannot"),
])
def test_bad_data_gives_one_clear_line(tmp_path, setup, expected):
    root = tmp_path / "data"
    img_dir, lab_dir = root / "siteA" / "images", root / "siteA" / "labels"
    img_dir.mkdir(parents=True)
    lab_dir.mkdir(parents=True)
    if setup != "empty":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img_dir / "c0.png")
        mask = np.zeros((32, 32), np.uint8)
        if setup == "size_mismatch":
            mask = np.zeros((16, 32), np.uint8)
        if setup == "bad_labels":
            mask[0, 0] = 7
        if setup != "missing_mask":
            Image.fromarray(mask).save(lab_dir / "c0.png")
        if setup == "unreadable":
            (img_dir / "c0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    proc = _ramseg("train", "--data", root, "--iterations", "1", "--size", "32", "--out", tmp_path / "r",
                   "--labels", "x", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("ramseg: error:")
    assert "Traceback" not in proc.stderr
    assert expected in lines[-1].lower()
    if setup != "empty":
        assert "c0.png" in lines[-1]


def test_missing_model_and_input(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "nope"), "--input", str(tmp_path), "--output", "x.png"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_issue_commands_on_real_data(shared_data, tmp_path):
    """The commands from the Foundation issue, verbatim, on the real data (tiny budget)."""
    run = tmp_path / "RUN"
    proc = _ramseg("train", "--data", shared_data / "vessels", "--domains", "HRF,STARE", "--iterations", "12",
                   "--size", "64", "--batch", "4", "--out", run, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (run / "model.safetensors").exists() and (run / "model.json").exists()
    stare = shared_data / "vessels" / "STARE" / "images" / "im0001.png"
    proc = _ramseg("predict", "--model", run, "--input", stare, "--output", tmp_path / "mask.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert np.array(Image.open(tmp_path / "mask.png")).shape == np.array(Image.open(stare)).shape[:2]
    proc = _ramseg("train", "--data", shared_data / "fundus_dofe_layout", "--format", "dofe", "--iterations", "12",
                   "--size", "64", "--batch", "4", "--out", tmp_path / "RUN2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "RUN2" / "model.safetensors").exists()


def test_predicted_png_masks_are_palette_images_that_keep_the_class_indices(tiny_model, synthetic_data, tmp_path,
                                                                              capsys):
    from napari_ramseg.io import read_mask, write_labels
    from napari_ramseg.palette import LABEL_COLORS

    image = synthetic_data / "siteA" / "images" / "case0.png"
    out = tmp_path / "mask.png"
    assert main(["predict", "--model", str(tiny_model), "--input", str(image), "--output", str(out)]) == 0
    with Image.open(out) as im:
        assert im.mode == "P"  # colours any viewer shows, not a black 0/1 grey image
        palette = im.getpalette()[:6]
    assert palette[:3] == [0, 0, 0]
    assert "#%02x%02x%02x" % tuple(palette[3:6]) == LABEL_COLORS[0]
    # the pixel values stay the class indices
    labels = np.zeros((20, 30), np.uint8)
    labels[2:8, 3:9], labels[10:15, 12:20] = 1, 2
    write_labels(tmp_path / "two.png", labels)
    np.testing.assert_array_equal(read_mask(tmp_path / "two.png"), labels)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "two.png")), labels)

    # an existing mask is kept, and the message names the command-line flag
    capsys.readouterr()
    assert main(["predict", "--model", str(tiny_model), "--input", str(image), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err
    assert main(["predict", "--model", str(tiny_model), "--input", str(image), "--output", str(out),
                 "--overwrite"]) == 0


def test_evaluate_help_describes_every_option():
    import argparse

    from napari_ramseg.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    evaluate = sub.choices["evaluate"]
    assert evaluate.description
    for action in evaluate._actions:
        assert action.help, f"evaluate {action.option_strings} has no description"


def test_predict_warns_when_the_scan_does_not_fit_the_model_and_still_writes_the_mask(
        tiny_model, synthetic_data, tmp_path, capsys):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    volume = (500 + 800 * (rng.random((10, 40, 40)) > 0.7) + rng.normal(0, 50, (10, 40, 40))).astype(np.float32)
    mri = tmp_path / "mri.nii.gz"
    nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0), np.diag([0.6, 0.6, 3.0, 1.0])), mri)
    out = tmp_path / "mri_mask.nii.gz"
    assert main(["predict", "--model", str(tiny_model), "--input", str(mri), "--output", str(out)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"ramseg: warning: {mri}: grey 3D volume (fit ")
    assert warnings[0].endswith("the model was trained on colour 2D images (siteA, siteB)")
    assert out.exists()

    # a folder: one line per file that does not fit, none for the model's own source images
    folder = tmp_path / "mixed"
    folder.mkdir()
    source = synthetic_data / "siteA" / "images" / "case0.png"
    (folder / "source.png").write_bytes(source.read_bytes())
    Image.fromarray(np.array(Image.open(source)).mean(axis=-1).astype(np.uint8)).save(folder / "grey.png")
    assert main(["predict", "--model", str(tiny_model), "--input", str(folder), "--output", str(tmp_path / "o")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [line for line in warnings if line.startswith(f"ramseg: warning: {folder / 'grey.png'}: ")]
    assert len(warnings) == 1 and (tmp_path / "o" / "grey.png").exists() and (tmp_path / "o" / "source.png").exists()
