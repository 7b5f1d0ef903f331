"""Stopping ``ramseg train`` partway keeps the work: the run folder is complete and resumable.

A real ``python -m napari_ramseg train`` runs on tiny synthetic data under a unicode path with spaces.

- SIGINT (Ctrl-C) and SIGTERM (SLURM, Kubernetes, torchrun), 20 s into a long schedule with no
  validation yet: the run finishes its step, writes a resume state for it and the model, and exits
  130 or 143 within seconds, saying truly what it left; ``--resume`` continues from that iteration.
- SIGKILL, which nothing can catch: the folder holds no half-written file, is refused as a model with a
  clear message while incomplete, and finishes with ``--resume`` into a model that loads.
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

from helpers import make_synthetic_domains
from napari_ramseg.cli import _train_run_note, main
from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.training.stopping import GracefulStop, StopNow
from napari_ramseg.core.training.job import TrainRequest, run_training
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


LONG = ["--iterations", "1000000", "--size", "32", "--batch", "2", "--base-width", "4", "--device", "cpu",
        "--threads", "1", "--quiet"]  # no validation for 100000 steps: nothing but a stop writes a resume state
SIGNAL_AFTER_S = 20


@pytest.mark.parametrize("signum, code, periodic", [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, True)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_20_s_in_stops_after_the_step_and_resume_continues_there(data, tmp_path, signum, code, periodic):
    run, name = tmp_path / "走る run", signal.Signals(signum).name
    launched = time.monotonic()
    # SIGTERM's run also writes resume states by wall time (every 3 s); SIGINT's keeps the default (5 min)
    proc = _ramseg("train", "--data", data, "--out", run, *LONG, *(["--resume-every", "3"] if periodic else []),
                   cwd=tmp_path)
    while time.monotonic() - launched < SIGNAL_AFTER_S or not _logged_iterations(run):
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) before the signal:\n{proc.communicate()[1]}")
        if time.monotonic() - launched > 240:
            proc.kill()
            pytest.fail("no training progress within 240 s")
        time.sleep(0.05)
    assert (run / "resume.json").exists() == periodic  # by wall time only; no validation has run
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - sent
    assert proc.returncode == code, err
    assert elapsed < 15  # the step in progress, the saving and interpreter teardown, on a loaded machine
    assert "Traceback" not in err
    state = json.loads((run / "resume.json").read_text(encoding="utf-8"))
    stopped_at = state["iteration"]
    assert stopped_at >= 1 and _logged_iterations(run)[-1] == stopped_at  # that step finished and was logged
    assert [line for line in err.splitlines() if line.strip()] == [
        f"ramseg: {name} received: stopping after the current step (again: at once)",
        f"ramseg: interrupted ({name}) at iteration {stopped_at}; {run} holds a resume state for iteration "
        f"{stopped_at} and a model of the training so far (nothing half-written); continue it with "
        f"ramseg train --data '{data}' --resume '{run}'"]
    _no_temporaries(run)
    assert len(load_file(str(run / "resume.safetensors"))) > 0
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["status"] == "stopped" and metrics["iterations_done"] == stopped_at
    load_model(run)  # the stopped model is complete

    # --resume continues from that iteration (in-process, stopped again after three steps)
    events = []
    result = run_training(TrainRequest(data=data, resume=run, device="cpu", command="ramseg train --resume RUN"),
                          on_event=events.append, should_stop=lambda: len(events) >= 3)
    assert result.stopped and [e.iteration for e in events] == [stopped_at + 1, stopped_at + 2, stopped_at + 3]
    assert _logged_iterations(run) == list(range(1, stopped_at + 4))
    assert json.loads((run / "resume.json").read_text(encoding="utf-8"))["iteration"] == stopped_at + 3
    meta = json.loads((run / "model.json").read_text(encoding="utf-8"))
    assert meta["command"].startswith("ramseg train --data") and meta["resumed_with"] == ["ramseg train --resume RUN"]
    _no_temporaries(run)


def test_a_second_signal_stops_at_once(tmp_path):
    with GracefulStop() as stop:
        assert not stop() and stop.exit_code == 0
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # the handler runs between bytecodes
        assert stop() and stop.name == "SIGTERM" and stop.exit_code == 143
        with pytest.raises(StopNow) as now:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert now.value.exit_code == 130 and isinstance(now.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def test_a_stop_before_the_first_step_leaves_a_resume_state_at_iteration_0(data, tmp_path, capsys):
    run = tmp_path / "early"
    result = run_training(TrainRequest(data=data, out=run, iterations=5, size=32, batch=2, base_width=4,
                                       device="cpu"), should_stop=lambda: True)
    assert result.stopped and result.iterations_done == 0
    assert json.loads((run / "resume.json").read_text(encoding="utf-8"))["iteration"] == 0
    assert not (run / "model.json").exists()  # no model of untrained weights
    assert _train_run_note(run, data) == (f"{run} holds a resume state for iteration 0 (nothing half-written); "
                                          f"continue it with ramseg train --data '{data}' --resume {run}")
    assert main(["train", "--data", str(data), "--resume", str(run), "--device", "cpu", "--quiet"]) == 0
    assert json.loads((run / "metrics.json").read_text(encoding="utf-8"))["iterations_done"] == 5
    assert _train_run_note(tmp_path / "never", data) == (f"nothing was written to {tmp_path / 'never'} "
                                                         "(it stopped before training began)")


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
    from napari_ramseg.core.data.dataset import Sample
    from napari_ramseg.core.training.trainer import TrainCallbacks, Trainer

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
