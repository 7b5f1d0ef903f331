"""A resume state written by an earlier version still loads and continues: long training runs are resumed
across versions, so the format of resume.json and resume.safetensors never changes.

``fixtures/resume_state_v1`` was written before the Trainer handed resume its state (``Trainer.state_dict``):
a run of 4 iterations stopped after 2, with ``continued.json`` holding what the code of then made of it
when resumed to the end (each iteration's loss, the final weights' sums)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from napari_ramseg.core.config import MethodConfig, ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.training.resume import read_resume_state
from napari_ramseg.core.training.trainer import Trainer

from helpers import square_samples

FIXTURE = Path(__file__).parent / "fixtures" / "resume_state_v1"


def _trainer(run: Path) -> Trainer:
    cfg = TrainConfig(model=ModelConfig(base_width=4, depth=3), preprocess=PreprocessConfig(size=32), batch=6,
                      iterations=4, method=MethodConfig(), device="cpu", val_every=2, precision="fp32")
    return Trainer(cfg, ["A", "B", "C"], square_samples(), square_samples(n=1)["A"], run)


def test_a_resume_state_of_the_earlier_format_loads_and_continues_as_it_did(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("resume.json", "resume.safetensors"):
        shutil.copy(FIXTURE / name, run / name)
    assert read_resume_state(run)["iteration"] == 2
    saved = load_file(str(run / "resume.safetensors"))
    trainer = _trainer(run)
    trainer.load_resume_state()
    assert trainer.iteration == 2 and len(trainer.history) == 2 and trainer.best is not None
    for key, value in trainer.net.state_dict().items():
        assert torch.equal(value, saved[f"model.{key}"]), key
    assert trainer.state_dict().optimizer  # Adam's moments came back

    assert trainer.run().iterations_done == 4
    expected = json.loads((FIXTURE / "continued.json").read_text())
    assert [h["loss"] for h in trainer.history] == pytest.approx(expected["history_losses"], rel=1e-4, abs=1e-5)
    final = load_file(str(run / "model.safetensors"))
    sums = {k: float(v.double().sum()) for k, v in final.items() if v.is_floating_point()}
    assert sums.keys() == expected["weight_sums"].keys()
    for key, value in expected["weight_sums"].items():
        assert sums[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key


def test_the_state_written_now_has_the_earlier_format(tmp_path):
    """Same tensor names and JSON keys as the fixture: the format did not change."""
    run = tmp_path / "run"
    trainer = _trainer(run)
    trainer.step()
    trainer.save_resume_state()
    written, earlier = load_file(str(run / "resume.safetensors")), load_file(str(FIXTURE / "resume.safetensors"))
    assert written.keys() - {k for k in written if k.startswith("best.")} == \
        earlier.keys() - {k for k in earlier if k.startswith("best.")}
    state, old = json.loads((run / "resume.json").read_text()), json.loads((FIXTURE / "resume.json").read_text())
    assert list(state) == list(old)
