"""Killing ``ramseg train`` partway leaves a run folder that is complete and loadable, or resumable.

A real ``python -m napari_ramseg train`` runs on tiny synthetic data under a unicode path with spaces;
once ``train.log`` shows progress and ``resume.json`` exists (``--val-every 1`` writes it every step),
it is sent SIGINT (Ctrl-C) or SIGKILL. The folder must then hold no half-written file, be refused as a
model with a clear message while incomplete, and finish with ``--resume`` into a model that loads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import make_synthetic_domains
from napari_ramseg.cli import main
from napari_ramseg.core.checkpoint import load_model
from napari_ramseg.errors import RamsegInputError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ITERATIONS = 40
TRAIN = ["--iterations", str(ITERATIONS), "--size", "32", "--batch", "2", "--base-width", "4", "--val-every", "1",
         "--device", "cpu", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_domains(tmp_path_factory.mktemp("interrupt") / "ダータ set", cases=3, size=32)


def _env():
    return {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}


def _ramseg(*args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "napari_ramseg", *map(str, args)], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _logged_iterations(run: Path) -> list[int]:
    path = run / "train.log"
    if not path.exists():
        return []
    return [json.loads(line)["iteration"] for line in path.read_text(encoding="utf-8").splitlines()
            if line.endswith("}")]  # the last line may be in the middle of being written


def _start_and_wait_for_progress(data: Path, run: Path, cwd: Path) -> subprocess.Popen:
    proc = _ramseg("train", "--data", data, "--out", run, *TRAIN, cwd=cwd)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended (rc {proc.returncode}) before it could be interrupted:\n{err}")
        if (run / "resume.json").exists() and len(_logged_iterations(run)) >= 2:
            return proc
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no training progress within 240 s")


def _no_temporaries(run: Path) -> None:
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp") or ".tmp" in p.name]


def _check_interrupted_state(run: Path) -> int:
    """The folder is complete and loadable, or resumable; returns the iteration to resume from."""
    if (run / "model.json").exists():  # finished before the signal landed: must be a complete model
        load_model(run)
        return ITERATIONS
    with pytest.raises(RamsegInputError, match="training of this run was interrupted before it wrote a model; "
                                                "finish it with ramseg train --data DATA --resume RUN"):
        load_model(run)
    state = json.loads((run / "resume.json").read_text(encoding="utf-8"))  # complete JSON, not a fragment
    assert 1 <= state["iteration"] < ITERATIONS
    tensors = load_file(str(run / "resume.safetensors"))  # complete safetensors
    assert any(k.startswith("model.") for k in tensors) and any(k.startswith("optim.") for k in tensors)
    assert state["iteration"] <= max(_logged_iterations(run)) + 1
    return state["iteration"]


def _resume_and_check(data: Path, run: Path, capsys) -> None:
    """In-process (the subprocess start-up is paid once per test, by the run that gets killed)."""
    before = sorted(p.name for p in run.iterdir())
    capsys.readouterr()
    # a new run into the same folder is refused: it would overwrite the interrupted one
    assert main(["train", "--data", str(data), "--out", str(run), *TRAIN]) == 2
    assert "already holds a run; choose another --out, or continue it with --resume" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before

    assert main(["train", "--data", str(data), "--resume", str(run), "--device", "cpu", "--quiet"]) == 0
    model, meta = load_model(run)
    assert meta.domains == ["siteA", "siteB"]
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["status"] == "complete" and metrics["iterations_done"] == ITERATIONS
    assert not (run / "resume.json").exists() and not (run / "resume.safetensors").exists()
    _no_temporaries(run)
    logged = _logged_iterations(run)
    assert logged[-1] == ITERATIONS and logged == sorted(set(logged))  # no iteration logged twice


def test_ctrl_c_ends_promptly_with_130_and_the_run_resumes(data, tmp_path, capsys):
    run = tmp_path / "走る run"
    proc = _start_and_wait_for_progress(data, run, tmp_path)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - sent
    if proc.returncode == 0:
        pytest.skip("training finished before SIGINT arrived")  # too fast a machine for this budget
    assert proc.returncode == 130, err
    assert elapsed < 60  # the process ends promptly (interpreter teardown included, on a loaded machine)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"ramseg: interrupted; {run} keeps its last complete state (nothing half-written); continue "
                     f"it with ramseg train --data '{data}' --resume '{run}'"]
    _no_temporaries(run)
    _check_interrupted_state(run)
    _resume_and_check(data, run, capsys)


def test_sigkill_leaves_a_resumable_run(data, tmp_path, capsys):
    run = tmp_path / "killed run"
    proc = _start_and_wait_for_progress(data, run, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("training finished before SIGKILL arrived")
    assert proc.returncode == -signal.SIGKILL
    _check_interrupted_state(run)
    # SIGKILL can land inside a write: only a temporary file can be half-written, never the real one.
    # Simulate that case (the kill's timing is random) with the killed process's own id.
    leftovers = [run / f".resume.safetensors.{proc.pid}.x8k2.tmp", run / f".model.safetensors.{proc.pid}.q1z9.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    _resume_and_check(data, run, capsys)  # includes: no *.tmp left


def _interrupted_then_resumed(tmp_path: Path) -> Path:
    """In-process: Ctrl-C at iteration 3 of 6 with validation (and resume state) every 2 iterations."""
    import numpy as np

    from napari_ramseg.core.config import ModelConfig, PreprocessConfig, TrainConfig
    from napari_ramseg.core.data import Sample
    from napari_ramseg.core.train import TrainCallbacks, Trainer

    rng = np.random.default_rng(0)
    samples = {d: [Sample(rng.uniform(-1, 1, (3, 32, 32)).astype(np.float32),
                          (rng.random((32, 32)) > 0.5).astype(np.uint8), d, f"{d}0")] for d in "AB"}
    cfg = TrainConfig(model=ModelConfig(base_width=4), preprocess=PreprocessConfig(size=32), iterations=6, batch=2,
                      val_every=2, device="cpu")
    run = tmp_path / "run"

    def ctrl_c_at_3(event):
        if event.iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, ["A", "B"], samples, samples["A"], run, TrainCallbacks(on_event=ctrl_c_at_3)).run()
    resumed = Trainer(cfg, ["A", "B"], samples, samples["A"], run)
    resumed.load_resume_state()
    resumed.run()
    return run


def test_resumed_history_has_every_iteration(tmp_path):
    run = _interrupted_then_resumed(tmp_path)
    history = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["history"]
    assert [h["iteration"] for h in history] == [1, 2, 3, 4, 5, 6]


def test_resumed_log_has_each_iteration_once(tmp_path):
    run = _interrupted_then_resumed(tmp_path)
    assert _logged_iterations(run) == [1, 2, 3, 4, 5, 6]
