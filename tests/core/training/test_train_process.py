"""Training in a child process: events stream to the parent, Stop ends it as Ctrl-C ends ``ramseg train``
(after the step, with a resume state), errors come back as one line, a crash with its last stderr lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.training.job import TrainRequest
from napari_ramseg.core.training.process import TrainProcess


def _request(data, out, iterations, **kw):
    return TrainRequest(data=data, out=out, iterations=iterations, size=32, batch=4, base_width=4, labels=["blob"],
                        device="cpu", **kw)


def _wait_for(process: TrainProcess, predicate, timeout: float = 180.0) -> list[dict]:
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += process.poll()
        if predicate(events) or process.finished:
            return events
        time.sleep(0.1)
    raise AssertionError(f"timed out; events so far: {[e['type'] for e in events]}")


def test_stop_ends_the_child_after_its_step_with_a_resume_state(tmp_path, synthetic_data):
    run = tmp_path / "run"
    process = TrainProcess(_request(synthetic_data, run, 10_000, val_every=1)).start()
    try:
        events = _wait_for(process, lambda ev: sum(e["type"] == "iteration" for e in ev) >= 2)
        iterations = [e for e in events if e["type"] == "iteration"]
        assert events[0]["type"] == "started" and events[0]["pid"] == process.pid
        assert [e["iteration"] for e in iterations[:2]] == [1, 2]
        assert iterations[0]["total"] == 10_000 and "loss" in iterations[0]["losses"]
        assert iterations[0]["validation"]["dice_by_domain"].keys() == {"siteA", "siteB"}
        assert any(e["type"] == "log" and "sources" in e["message"] for e in events)
        started = time.monotonic()
        process.stop()  # SIGTERM: the child's graceful stop, as for ramseg train
        assert not process.is_alive() and time.monotonic() - started < 20.0
        assert process.finished and process.error is None and process.stopped and not process.killed
    finally:
        if process.is_alive():
            process.stop(timeout=1)
    assert process.exitcode == 143  # 128 + SIGTERM, as ramseg train exits
    done = process.result["iterations_done"]
    assert process.result["stopped"] and done >= 2
    assert json.loads((run / "resume.json").read_text())["iteration"] == done
    assert json.loads((run / "metrics.json").read_text())["status"] == "stopped"
    load_model(run)  # the model of the steps so far, complete
    assert not [p for p in run.glob(".*.tmp")]


def test_finished_child_reports_its_run_folder(tmp_path, synthetic_data):
    process = TrainProcess(_request(synthetic_data, tmp_path / "run", 2, val_every=2)).start()
    assert process.wait(180)
    assert process.error is None, process.traceback
    assert process.result["run_dir"] == str(tmp_path / "run") and process.result["iterations_done"] == 2
    assert [e["iteration"] for e in process.history] == [1, 2]
    assert process.history[-1]["validation"] is not None
    model, meta = load_model(tmp_path / "run")
    assert meta.domains == ["siteA", "siteB"]
    assert not process.is_alive() and process.exitcode == 0


def test_bad_input_comes_back_as_one_line(tmp_path):
    process = TrainProcess(_request(tmp_path / "missing", tmp_path / "run", 2)).start()
    assert process.wait(120)
    assert process.result is None
    assert process.error == f"{tmp_path / 'missing'}: dataset folder not found"
    assert "Traceback" in process.traceback


def test_a_dead_child_reports_its_last_error_lines(tmp_path, monkeypatch):
    crash = "import sys; print('loading'); sys.stderr.write('Traceback ...\\nRuntimeError: boom in the child\\n'); sys.exit(3)"
    monkeypatch.setattr(TrainProcess, "command", lambda self: [sys.executable, "-c", crash])
    process = TrainProcess(_request(tmp_path, tmp_path / "run", 2)).start()
    assert process.wait(60)
    assert process.exitcode == 3
    assert process.error == "the training process ended unexpectedly (exit code 3): RuntimeError: boom in the child"
    assert "Traceback ..." in process.last_error_lines() and process.traceback.endswith("boom in the child")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_child_that_ignores_stop_is_killed_after_the_timeout(tmp_path, monkeypatch):
    stubborn = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('up', file=sys.stderr, flush=True); time.sleep(60)")
    monkeypatch.setattr(TrainProcess, "command", lambda self: [sys.executable, "-c", stubborn])
    process = TrainProcess(_request(tmp_path, tmp_path / "run", 2)).start()
    deadline = time.monotonic() + 30
    while "up" not in process.stderr_tail and time.monotonic() < deadline:
        process.poll()
        time.sleep(0.05)
    started = time.monotonic()
    process.stop(timeout=1.0)
    assert process.killed and process.exitcode == -signal.SIGKILL and time.monotonic() - started < 10
    assert process.finished and process.error is None  # asked to stop: not a failure


def test_the_child_never_imports_the_callers_main(tmp_path, synthetic_data):
    """A script without an ``if __name__ == "__main__"`` guard starts training: its body runs once."""
    script = tmp_path / "no_guard.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from pathlib import Path
        from napari_ramseg.core.training.job import TrainRequest
        from napari_ramseg.core.training.process import TrainProcess
        print("script body ran", flush=True)
        process = TrainProcess(TrainRequest(data=Path({str(synthetic_data)!r}), out=Path({str(tmp_path / "run")!r}),
                                            iterations=2, size=32, batch=4, base_width=4, device="cpu")).start()
        process.wait(240)
        print(json.dumps({{"error": process.error, "tail": process.stderr_tail, "result": process.result}}))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("script body ran") == 1
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["error"] is None, report["tail"]
    assert report["result"]["iterations_done"] == 2
    load_model(tmp_path / "run")
