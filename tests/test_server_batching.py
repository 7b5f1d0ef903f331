"""Cases that arrive at ``ramseg serve`` together share a network pass (issue 31): ``server/batching.py``.
The masks and measures are those of each case segmented alone, here, by the local pipeline."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from napari_ramseg.server.batching import BatchedForward, DeviceGate


def _until(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_passes_queued_while_the_device_is_busy_run_as_one_batch_and_each_thread_gets_its_rows():
    calls = []

    def forward(x):
        calls.append(len(x))
        return x * 2

    device = threading.Lock()
    batched = BatchedForward(forward, lambda h, w: 8, device)
    inputs = [torch.full((1, 3, 4, 4), float(i)) for i in range(5)] + [torch.zeros(1, 3, 8, 8)]
    with device:  # the device is busy: every pass queues
        with ThreadPoolExecutor(len(inputs)) as pool:
            futures = [pool.submit(batched, x) for x in inputs]
            _until(lambda: len(batched._queue) == len(inputs))
            device.release()
            try:
                outputs = [f.result(60) for f in futures]
            finally:
                device.acquire()
    assert all(torch.equal(out, x * 2) for out, x in zip(outputs, inputs))
    assert sorted(calls) == [1, 5]  # the five 4x4 inputs in one pass; the 8x8 one alone (another shape)
    assert batched.batched_rows == 5


def test_the_batch_limit_and_a_failed_pass_reach_every_waiting_thread():
    device = threading.Lock()

    def failing(x):
        raise RuntimeError("CUDA out of memory")

    batched = BatchedForward(failing, lambda h, w: 2, device)
    with device:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(batched, torch.zeros(1, 1, 2, 2)) for _ in range(3)]
            _until(lambda: len(batched._queue) == 3)
            device.release()
            try:
                errors = [f.exception(60) for f in futures]
            finally:
                device.acquire()
    assert all(isinstance(e, RuntimeError) and "out of memory" in str(e) for e in errors)


def test_an_adapted_case_has_the_device_to_itself():
    gate, log = DeviceGate(), []

    def plain():
        with gate.shared():
            log.append("plain")

    with gate.exclusive():
        with gate.shared():  # its own passes go through
            log.append("own pass")
        thread = threading.Thread(target=plain)
        thread.start()
        time.sleep(0.2)
        log.append("adapted done")
    thread.join(10)
    assert log == ["own pass", "adapted done", "plain"]


def test_cases_arriving_together_on_a_server_are_batched_and_answered_as_alone(tiny_model, synthetic_data, tmp_path):
    pytest.importorskip("uvicorn")
    from helpers import serve_on_loopback, stop_server

    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.core.review.pipeline import segment_case
    from napari_ramseg.io import read_image
    from napari_ramseg.server.app import ServerSettings, create_app
    from napari_ramseg.server.cases import jsonable
    from napari_ramseg.server.client import ServerClient

    token = "batch-token-0123456789abcdef"
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_model, target_is_directory=True)
    scans = [p for d in ("siteA", "siteB") for p in sorted((synthetic_data / d / "images").glob("*.png"))]
    app = create_app(ServerSettings(token=token, models_dir=models, device="cpu", batch=8))
    catalog = app.app.state.catalog
    server, thread, url = serve_on_loopback(app)
    try:
        with ServerClient(url, token) as client:
            client.segment(scans[0], model="tiny", precision="fp32")  # loads the model
        batched = catalog.predictor("tiny", "fp32")[1]._forward
        assert isinstance(batched, BatchedForward)

        def send(scan):
            with ServerClient(url, token) as client:
                return client.segment(scan, model="tiny", precision="fp32")

        with catalog.device_lock:  # the device is busy: the cases queue, then share passes
            with ThreadPoolExecutor(len(scans)) as pool:
                futures = [pool.submit(send, scan) for scan in scans]
                _until(lambda: len(batched._queue) == len(scans))
                catalog.device_lock.release()
                try:
                    remote = [f.result(120) for f in futures]
                finally:
                    catalog.device_lock.acquire()
        assert batched.batched_rows >= 2
    finally:
        stop_server(server, thread)
    local = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    for scan, answer in zip(scans, remote):
        alone = segment_case(local, read_image(scan))
        assert np.array_equal(answer.mask, alone.prediction.labels), scan
        assert answer.measures == jsonable(alone.measures) and answer.fit == jsonable(alone.fit.to_dict())
