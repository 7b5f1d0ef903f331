"""`ramseg finetune` end to end on tiny data."""

from __future__ import annotations

import json

import pytest

from helpers import make_synthetic_domains
from napari_ramseg.cli import main
from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.finetune.corrections import CorrectionStore


def test_finetune_from_files_then_from_the_project(tmp_path, tiny_model, synthetic_data, capsys):
    site = make_synthetic_domains(tmp_path / "site", domains=("siteC",), cases=3, size=40, seed=3)
    images = [str(site / "siteC" / "images" / f"case{i}.png") for i in range(3)]
    labels = [str(site / "siteC" / "labels" / f"case{i}.png") for i in range(3)]
    out = tmp_path / "models"
    code = main(["finetune", "--model", str(tiny_model), "--images", *images, "--labels", *labels,
                 "--replay", str(synthetic_data), "--out", str(out), "--iterations", "2", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() == str(out / "v001")
    assert "saved 3 corrected case(s)" in captured.err and "held-out Dice" in captured.err
    store = CorrectionStore(out / "corrections")
    assert len(store.list_cases()) == 3 and len(store.latest_cases("val")) == 1
    case = store.load(store.list_cases()[0])
    assert case.provenance["model"]["path"] == str(tiny_model.resolve())
    assert case.provenance["image_meta"]["source"] == images[0]
    _, meta = load_model(out / "v001")
    assert meta.extra["finetune"]["round"] == 1 and meta.extra["command"].startswith("ramseg")

    # the same files again add nothing; the saved project alone drives round 2 from v001
    code = main(["finetune", "--model", str(out / "v001"), "--images", *images, "--labels", *labels,
                 "--out", str(out), "--iterations", "2", "--device", "cpu"])
    assert code == 0 and "(3 unchanged)" in capsys.readouterr().err
    code = main(["finetune", "--model", str(out / "v002"), "--project", str(out / "corrections"), "--out", str(out),
                 "--iterations", "2", "--device", "cpu"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["corrections", "v001", "v002", "v003"]
    record = json.loads((out / "v003" / "model.json").read_text())["finetune"]
    assert record["round"] == 3 and len(record["cases_train"]) == 2


@pytest.mark.parametrize("extra, message", [
    ([], "nothing to learn from"),
    (["--images", "a.png"], "--images and --labels together"),
    (["--images", "a.png", "b.png", "--labels", "a_mask.png"], "2 images but 1 label files"),
])
def test_finetune_input_errors_are_one_line(tmp_path, tiny_model, capsys, extra, message):
    code = main(["finetune", "--model", str(tiny_model), "--out", str(tmp_path / "models"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").glob("v*"))


def test_finetune_empty_project_is_refused(tmp_path, tiny_model, capsys):
    code = main(["finetune", "--model", str(tiny_model), "--project", str(tmp_path / "none"), "--out", str(tmp_path / "m")])
    assert code == 2 and "no corrected cases" in capsys.readouterr().err
