"""One owner each: the run folder's files, the training loop, the pool's state, the defaults."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from napari_ramseg.core.models import run_folder
from napari_ramseg.core.config import FinetuneConfig, ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.data.dataset import Sample
from napari_ramseg.core.evaluation.metrics import case_dice
from napari_ramseg.core.models.run_folder import RunFolder
from napari_ramseg.core.method.sampling import SourcePool
from napari_ramseg.core.training.trainer import TrainCallbacks, Trainer
from napari_ramseg.core.training.job import CONFIG_FIELDS, TrainRequest, config_from_request


def _samples(domains=("A", "B"), n=2, size=32):
    rng = np.random.default_rng(0)
    return {d: [Sample(rng.uniform(-1, 1, (3, size, size)).astype(np.float32),
                       (rng.random((size, size)) > 0.6).astype(np.uint8), d, f"{d}{i}") for i in range(n)]
            for d in domains}


def _config(**changes):
    return TrainConfig(model=ModelConfig(base_width=4), preprocess=PreprocessConfig(size=32), iterations=4, batch=2,
                       val_every=2, device="cpu", precision="fp32").replace(**changes)


def test_the_file_names_are_the_on_disk_format(tmp_path):
    """Runs written before are resumed and loaded by these names: they never change."""
    folder = RunFolder(tmp_path / "run")
    assert [p.name for p in (folder.model_json, folder.model_weights, folder.metrics, folder.log,
                             folder.resume_state, folder.resume_weights)] == [
        "model.json", "model.safetensors", "metrics.json", "train.log", "resume.json", "resume.safetensors"]
    assert re.fullmatch(r"runs/ramseg-\d{8}-\d{6}", run_folder.default_run_dir().as_posix())
    assert run_folder.dock_run_dir().parent.name == "ramseg-runs"


def test_a_fresh_folder_refuses_one_that_holds_a_run(tmp_path):
    assert RunFolder.fresh(tmp_path / "new").path == tmp_path / "new"
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "resume.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--resume"):
        RunFolder.fresh(tmp_path / "new")


def test_the_log_is_cut_back_to_a_resumed_iteration(tmp_path):
    folder = RunFolder(tmp_path)
    for i in (1, 2, 3):
        folder.append_log({"iteration": i})
    with open(folder.log, "a", encoding="utf-8") as fh:
        fh.write('{"iteration": 4, "lo')  # a line cut short by a kill
    folder.truncate_log(2)
    assert [json.loads(line)["iteration"] for line in folder.log.read_text().splitlines()] == [1, 2]


def test_the_run_folder_and_resume_reader_load_without_torch():
    """The Train dock asks a folder about its resume state from napari's process."""
    code = ("import sys; from napari_ramseg.core.models.run_folder import RunFolder; from napari_ramseg.core.training import resume; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_pool_state_round_trips():
    a = SourcePool(_samples(n=3), ["A", "B"], PreprocessConfig(size=32), seed=3)
    a.draw_batch(3)
    b = SourcePool(_samples(n=3), ["A", "B"], PreprocessConfig(size=32), seed=99)
    b.load_state(a.state())
    for _ in range(3):
        (ia, ma, da), (ib, mb, db) = a.draw_batch(3), b.draw_batch(3)
        assert np.array_equal(ia.numpy(), ib.numpy()) and np.array_equal(da.numpy(), db.numpy())


def test_run_is_the_loop_driven_to_the_end(tmp_path):
    """``run()`` reports what ``iter_run()`` yields, and both end with the same files and result."""
    driven = []
    result = Trainer(_config(), ["A", "B"], _samples(), _samples()["A"], tmp_path / "run",
                     TrainCallbacks(on_event=driven.append)).run()
    loop = Trainer(_config(), ["A", "B"], _samples(), _samples()["A"], tmp_path / "loop").iter_run()
    yielded = []
    while True:
        try:
            yielded.append(next(loop))
        except StopIteration as done:
            same = done.value
            break
    assert [e.iteration for e in driven] == [e.iteration for e in yielded] == [1, 2, 3, 4]
    assert [e.validation is not None for e in yielded] == [False, True, False, True]
    assert [e.losses["loss"] for e in driven] == pytest.approx([e.losses["loss"] for e in yielded])
    assert result.iterations_done == same.iterations_done == 4 and not same.stopped
    assert sorted(p.name for p in (tmp_path / "loop").iterdir()) == ["metrics.json", "model.json",
                                                                     "model.safetensors", "train.log"]


def test_a_stopped_loop_keeps_a_resume_state(tmp_path):
    calls = iter([False, True])
    loop = Trainer(_config(), ["A", "B"], _samples(), (), tmp_path / "run",
                   TrainCallbacks(should_stop=lambda: next(calls))).iter_run()
    assert next(loop).iteration == 1
    with pytest.raises(StopIteration) as done:
        next(loop)
    assert done.value.value.stopped and done.value.value.iterations_done == 1
    assert RunFolder(tmp_path / "run").saved_iteration() == 1 and RunFolder(tmp_path / "run").has_model()


def test_metadata_is_public():
    trainer = Trainer(_config(), ["A", "B"], _samples())
    assert trainer.metadata().domains == ["A", "B"]


def test_case_dice_is_the_mean_over_structures():
    from napari_ramseg.core.labels import OPTIC_DISC_CUP

    truth = np.zeros((4, 4), np.uint8)
    truth[:2] = 1
    truth[0, :2] = 2
    pred = truth.copy()
    pred[0, :2] = 1  # the disc is right, the cup missed
    assert case_dice(pred, truth, OPTIC_DISC_CUP) == pytest.approx(0.5)
    assert case_dice(np.stack([pred, pred]), np.stack([truth, truth]), OPTIC_DISC_CUP) == pytest.approx(0.5)


def test_train_request_defaults_are_the_configs(tmp_path):
    request = TrainRequest(data=tmp_path)
    assert set(CONFIG_FIELDS) <= {f.name for f in dataclasses.fields(TrainRequest)}
    for name, path in CONFIG_FIELDS.items():
        if name not in ("resume_every_s", "iterations"):  # None: the config's (or the resumed run's, or --epochs)
            assert getattr(request, name) == TrainConfig.default(path), name
    labels = TrainConfig().labels
    assert config_from_request(request, labels, 10) == TrainConfig(labels=labels)
    changed = config_from_request(TrainRequest(data=tmp_path, size=64, ram=False, num_threads=2, base_width=8,
                                               resume_every_s=0), labels, 10)
    assert (changed.preprocess.size, changed.method.ram, changed.num_threads, changed.model.base_width,
            changed.resume_every_s) == (64, False, 2, 8, 0)


def test_cli_defaults_are_the_configs():
    import argparse

    from napari_ramseg.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    tune = sub.choices["finetune"].parse_args(["--out", "models"])
    assert (tune.iterations, tune.seed, tune.device) == (FinetuneConfig().iterations, FinetuneConfig().seed,
                                                         FinetuneConfig().device)
    train = sub.choices["train"].parse_args(["--data", "d"])
    assert (train.batch, train.size, train.device, train.precision) == (
        TrainConfig().batch, PreprocessConfig().size, TrainConfig().device, TrainConfig().precision)
