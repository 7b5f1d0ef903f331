"""Every file napari-ramseg reads back is checked against its schema in one place (issue 29, finding 32):
a hostile or damaged value ends in one RamsegInputError naming the file, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_ramseg.cli import main
from napari_ramseg.core.models import checkpoint as ckpt
from napari_ramseg.core.config import ModelConfig, TrainConfig
from napari_ramseg.errors import RamsegInputError
from napari_ramseg.schema import read_json


def _model_copy(src: Path, dst: Path, change) -> Path:
    dst.mkdir()
    (dst / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    meta = json.loads((src / "model.json").read_text())
    change(meta)
    (dst / "model.json").write_text(json.dumps(meta))
    return dst


def _set(path: str, value):
    def change(meta):
        node = meta
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return change


@pytest.mark.parametrize("path, value, expected", [
    ("format_version", float("inf"), "format_version: input should be a valid integer"),
    ("metrics", 5, "metrics: input should be a valid dictionary"),
    ("finetune", [1, 2], "finetune: input should be a valid dictionary"),
    ("finetune.round", float("inf"), "finetune.round: input should be a valid integer"),
    ("finetune.lineage", 5, "finetune.lineage: input should be a valid list"),
    ("config.lr", float("nan"), "config.lr: input should be a finite number"),
    ("config.lr", 1e30, "config.lr: input should be less than or equal to 1"),
    ("config.batch", 0, "config.batch: input should be greater than or equal to 1"),
    ("config.num_threads", -4, "config.num_threads"),
    ("config.grad_accumulation", 0, "config.grad_accumulation"),
    ("config.method.window_ratio", "0.1", "config.method.window_ratio: input should be a valid number"),
])
def test_hostile_model_json_values_are_one_line(tmp_path, tiny_model, path, value, expected):
    model = _model_copy(tiny_model, tmp_path / "m", _set(path, value))
    with pytest.raises(RamsegInputError) as err:
        ckpt.load_model(model)
    assert str(err.value).startswith(f"{model / 'model.json'}: invalid model metadata (") and expected in str(err.value)


def test_the_bundled_models_pass_their_schema():
    from napari_ramseg.models import resolve_model

    for name in ("vessels", "optic-disc"):
        assert ckpt.load_metadata(resolve_model(name)).domains


def test_a_huge_learning_rate_is_refused_as_the_request_is_made(tmp_path, synthetic_data, capsys):
    rc = main(["train", "--data", str(synthetic_data), "--out", str(tmp_path / "r"), "--iterations", "2",
               "--size", "32", "--batch", "2", "--base-width", "4", "--lr", "1e30", "--device", "cpu"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ramseg: error")]
    assert rc == 2 and len(err) == 1 and "lr" in err[0], err
    assert not (tmp_path / "r" / "model.json").exists()


def test_divergence_is_one_line_naming_the_learning_rate():
    from napari_ramseg.core.training.trainer import Trainer
    from napari_ramseg.errors import TrainingDiverged
    from tests.helpers import square_samples

    train = square_samples(("A", "B"), n=2, size=32)
    cfg = TrainConfig(model=ModelConfig(base_width=4), iterations=3, batch=2, lr=1.0, device="cpu")
    trainer = Trainer(cfg, ["A", "B"], train)
    for p in trainer.net.parameters():
        p.data.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"lower the learning rate \(--lr, now 1\)"):
        trainer.step()


def test_deeply_nested_json_is_one_line(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(RamsegInputError, match="nested too deeply"):
        read_json(path, "model metadata")


# -- the resume state -----------------------------------------------------------------------------------

def _trainer(run, base_width=4):
    from napari_ramseg.core.training.trainer import Trainer
    from tests.helpers import square_samples

    cfg = TrainConfig(model=ModelConfig(base_width=base_width), iterations=4, batch=2, device="cpu")
    return Trainer(cfg, ["A", "B"], square_samples(("A", "B"), n=2, size=32), run_dir=run)


def _edit_state(run, change):
    path = run / "resume.json"
    state = json.loads(path.read_text())
    change(state)
    path.write_text(json.dumps(state))
    return path


@pytest.mark.parametrize("change, expected", [
    (lambda s: s.update(best="abc"), "best: input should be a valid dictionary"),
    (lambda s: s["config"].update(batch=0), "config.batch: input should be greater than or equal to 1"),
    (lambda s: s["config"].update(num_threads=-4), "config.num_threads: input should be greater than or equal to 0"),
    (lambda s: s["config"].update(grad_accumulation=0), "config.grad_accumulation"),
    (lambda s: s.update(pool_orders=[[0], "x"]), "pool_orders.1: input should be a valid list"),
    (lambda s: s.update(iteration=float("inf")), "iteration: input should be a valid integer"),
])
def test_hostile_resume_state_values_are_one_line(tmp_path, change, expected):
    from napari_ramseg.core.training.resume import read_resume_state

    run = tmp_path / "run"
    _trainer(run).save_resume_state()
    path = _edit_state(run, change)
    before = path.read_bytes()
    with pytest.raises(RamsegInputError) as err:
        read_resume_state(run)
    assert str(err.value).startswith(f"{path}: invalid resume state (") and expected in str(err.value)
    assert path.read_bytes() == before


def test_out_of_range_pool_orders_are_refused_before_training(tmp_path):
    run = tmp_path / "run"
    _trainer(run).save_resume_state()
    path = _edit_state(run, lambda s: s.update(pool_orders=[[0, 999], [1]]))
    trainer = _trainer(run)
    with pytest.raises(RamsegInputError, match="pool_orders do not fit the 2 domain"):
        trainer.load_resume_state()
    assert trainer.iteration == 0 and str(path).endswith("resume.json")


def test_resume_weights_of_another_width_are_refused_naming_the_file(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    _trainer(run).save_resume_state()
    _trainer(other, base_width=8).save_resume_state()
    (run / "resume.safetensors").write_bytes((other / "resume.safetensors").read_bytes())
    with pytest.raises(RamsegInputError) as err:
        _trainer(run).load_resume_state()
    message = str(err.value)
    assert message.startswith(str(run / "resume.safetensors")) and "do not fit the run's network" in message


def test_a_deeply_nested_model_json_is_one_line(tmp_path, tiny_model):
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    (model / "model.json").write_text('{"config": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(RamsegInputError, match=r"model.json: unreadable model metadata \(nested too deeply\)"):
        ckpt.load_model(model)
