"""What ``ramseg train`` tells a new user (issue 29, findings 14 and 15): a short run is not spent
validating, reading the data is timed, and unnamed classes are named from dataset.json or warned about."""

from __future__ import annotations

import json
import shutil

from napari_ramseg.cli import main
from napari_ramseg.core.config import TrainConfig
from napari_ramseg.core.training.job import TrainRequest, run_training

TINY = ["--iterations", "1", "--size", "32", "--batch", "2", "--base-width", "4", "--device", "cpu"]


def test_a_short_run_validates_at_its_end_only(synthetic_data, tmp_path):
    events = []
    run_training(TrainRequest(data=synthetic_data, out=tmp_path / "run", iterations=3, size=32, batch=2, base_width=4,
                              labels=["blob"], device="cpu"), on_event=events.append)
    assert [e.iteration for e in events if e.validation is not None] == [3]  # was every step (3 // 10 -> 1)
    assert TrainConfig(iterations=30).validation_interval() >= 30  # 30 steps: one validation, at the end
    assert TrainConfig(iterations=10_000).validation_interval() == 1000  # a long run: about 10
    assert TrainConfig(iterations=30, val_every=3).validation_interval() == 3  # asked for: as asked


def test_train_says_how_long_reading_the_data_took(synthetic_data, tmp_path, capsys):
    assert main(["train", "--data", str(synthetic_data), *TINY, "--labels", "blob", "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "read the data in " in err and " s: sources" in err, err
    assert "warning" not in err  # the labels were named


def test_unnamed_classes_are_warned_about(synthetic_data, tmp_path, capsys):
    assert main(["train", "--data", str(synthetic_data), *TINY, "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "warning: no --labels given" in err and "label_1" in err and "--labels" in err, err
    saved = json.loads((tmp_path / "r" / "model.json").read_text())["config"]["labels"]["names"]
    assert saved == ["label_1"]


def test_classes_named_by_dataset_json_need_no_warning(synthetic_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    (data / "dataset.json").write_text(json.dumps({"labels": {"names": ["blob"], "kind": "nested"}}))
    assert main(["train", "--data", str(data), *TINY, "--out", str(tmp_path / "r")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "model.json").read_text())["config"]["labels"]["names"] == ["blob"]
