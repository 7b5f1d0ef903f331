"""Training in a child process: events stream to the parent, Stop ends it at once, errors come back as one line."""

from __future__ import annotations

import time

from napari_ramseg.core.checkpoint import load_model
from napari_ramseg.core.train_job import TrainRequest
from napari_ramseg.core.train_process import TrainProcess


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


def test_stop_ends_the_child_at_once(tmp_path, synthetic_data):
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
        process.stop()
        assert not process.is_alive() and time.monotonic() - started < 5.0
        assert process.finished and process.error is None and process.stopped
    finally:
        if process.is_alive():
            process.stop()
    # atomic writes: the run folder holds no model or a loadable one, never a torn file
    if (run / "model.json").exists():
        load_model(run)
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
