"""``ramseg predict|evaluate --adapt [METHOD]``: test-time adaptation from the command line."""

import json

import numpy as np
import pytest
from PIL import Image

from napari_ramseg.cli import build_parser, main
from napari_ramseg.core.inference.adapt import METHODS
from napari_ramseg.core.config import ADAPT


def test_predict_adapts_a_photograph_and_says_so(tiny_model, synthetic_data, tmp_path, capsys):
    image = synthetic_data / "siteA" / "images" / "case0.png"
    out = tmp_path / "m.png"
    assert main(["predict", "--model", str(tiny_model), "--input", str(image), "--output", str(out),
                 "--adapt", "--device", "cpu", "--precision", "fp32"]) == 0
    assert np.array(Image.open(out)).shape == (48, 48)
    assert f"adapted ({ADAPT.method}): fit " in capsys.readouterr().err


def test_predict_adapts_a_volume_once(tiny_model, tmp_path, monkeypatch):
    nib = pytest.importorskip("nibabel")
    volume = np.random.default_rng(0).normal(400, 80, (6, 40, 40)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0), np.diag([0.8, 0.8, 2.0, 1.0])), path)
    calls = []
    original = METHODS["adabn"].adapt
    monkeypatch.setattr(METHODS["adabn"], "adapt",
                        lambda self, p, x, f: calls.append(x.shape) or original(self, p, x, f))
    out = tmp_path / "mask.nii.gz"
    assert main(["predict", "--model", str(tiny_model), "--input", str(path), "--output", str(out),
                 "--adapt", "adabn", "--device", "cpu"]) == 0
    assert len(calls) == 1 and calls[0][0] == 6  # one adaptation, on the volume's slices
    assert nib.load(out).shape == (40, 40, 6)


def test_evaluate_with_adaptation_records_it(tiny_model, synthetic_data, tmp_path):
    report_path = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(tiny_model), "--data", str(synthetic_data), "--domain", "siteB",
                 "--adapt", "align", "--json", str(report_path), "--device", "cpu"]) == 0
    report = json.loads(report_path.read_text())
    assert report["adapt"] == "align" and len(report["cases"]) == 4


def test_unknown_method_is_one_line(tiny_model, synthetic_data, tmp_path, capsys):
    image = synthetic_data / "siteA" / "images" / "case0.png"
    code = main(["predict", "--model", str(tiny_model), "--input", str(image), "--output", str(tmp_path / "m.png"),
                 "--adapt", "magic"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown adaptation method 'magic'" in err and "align" in err


def test_help_names_every_registered_method():
    for command in ("predict", "evaluate"):
        action = next(a for a in build_parser()._subparsers._group_actions[0].choices[command]._actions
                      if "--adapt" in a.option_strings)
        assert all(name in action.help for name in METHODS) and action.const == ADAPT.method


def test_predict_and_evaluate_say_which_settings_they_used(tiny_model, synthetic_data, tmp_path, capsys):
    """The model package's source-chosen settings (model.json "adapt") are the ones run, and named."""
    import shutil

    from napari_ramseg.core.models.checkpoint import write_adapt_settings

    model = shutil.copytree(tiny_model, tmp_path / "model")
    write_adapt_settings(model, {"align": {"window": 0.025, "strength": 0.25}})
    image = synthetic_data / "siteA" / "images" / "case0.png"
    assert main(["predict", "--model", str(model), "--input", str(image), "--output", str(tmp_path / "m.png"),
                 "--adapt", "align", "--device", "cpu"]) == 0
    assert ("adaptation settings (align): window 0.025 (model.json), strength 0.25 (model.json), towards nearest"
            in capsys.readouterr().err)
    report_path = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(model), "--data", str(synthetic_data), "--domain", "siteB",
                 "--adapt", "--json", str(report_path), "--device", "cpu"]) == 0
    assert json.loads(report_path.read_text())["adapt_settings"] == {"window": 0.025, "strength": 0.25,
                                                                     "towards": "nearest"}
