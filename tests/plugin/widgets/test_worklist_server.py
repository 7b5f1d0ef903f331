"""The Worklist dock with "server" as its device (issue 31): a folder of scans segmented through a
``ramseg serve`` on loopback gets the same masks and report rows as a local run, written here; Stop drops
the answer of the scan on its way, and that scan stays pending."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

pytest.importorskip("uvicorn")

from helpers import serve_model_on_loopback, stop_server  # noqa: E402

from napari_ramseg.server import connection  # noqa: E402
from napari_ramseg.plugin.widgets._server import SERVER  # noqa: E402
from napari_ramseg.plugin.widgets.worklist import WorklistWidget  # noqa: E402

pytestmark = pytest.mark.gui
TOKEN = "worklist-dock-token-0123456789"
WAIT_MS = 120_000


@pytest.fixture
def server_url(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv(connection.CONFIG_ENV, str(tmp_path / "config"))
    server, thread, url, _ = serve_model_on_loopback(tiny_model, tmp_path, TOKEN)
    connection.save(url, TOKEN)  # as the settings dialog remembers it
    yield url
    stop_server(server, thread)


def _scans(synthetic_data, folder):
    folder.mkdir()
    for domain in ("siteA", "siteB"):
        for i in (0, 1):
            shutil.copy(synthetic_data / domain / "images" / f"case{i}.png", folder / f"{domain}_case{i}.png")
    return folder


def _dock(viewer, folder, model, device):
    widget = WorklistWidget(viewer)
    widget.model_picker.set_model(model)
    widget.device_combo.setCurrentText(device)
    assert widget.device_combo.currentText() == device
    assert widget.open_folder(folder) is not None
    return widget


def test_the_worklist_segments_a_folder_through_the_server_as_it_does_here(make_napari_viewer, tmp_path,
                                                                           synthetic_data, tiny_model, server_url):
    viewer = make_napari_viewer()
    here = _dock(viewer, _scans(synthetic_data, tmp_path / "here"), tiny_model, "cpu")
    served = _dock(viewer, _scans(synthetic_data, tmp_path / "served"), tiny_model, SERVER)
    assert served.device_combo.itemText(served.device_combo.count() - 1) == SERVER
    here.segment_all(run_sync=True)
    served.segment_all(run_sync=True)
    assert served.runner.last_outcome == "done", served.runner.status.text()
    assert served.runner.progress.value() == 4
    local, remote = here.worklist, served.worklist
    assert remote.pending(str(tiny_model)) == [] and remote.order() == local.order()
    for name in local.cases:
        np.testing.assert_array_equal(remote.load_prediction(name), local.load_prediction(name), err_msg=name)
        assert remote.cases[name].row == pytest.approx(local.cases[name].row), name
        assert remote.cases[name].model == str(tiny_model)  # the same model: a local run skips these cases
    assert (remote.root / "report.csv").read_text() == (local.root / "report.csv").read_text()
    assert served.open_case(remote.order()[0])  # opens as a local run's scan does, ready to paint


def test_stop_drops_the_scan_on_its_way_and_it_stays_pending(make_napari_viewer, qtbot, tmp_path, synthetic_data,
                                                              tiny_model, server_url, monkeypatch):
    from napari_ramseg.server.client import ServerClient

    answered = threading.Event()
    monkeypatch.setattr(ServerClient, "segment", lambda *a, **k: answered.wait(60))  # a server that takes long
    widget = _dock(make_napari_viewer(), _scans(synthetic_data, tmp_path / "scans"), tiny_model, SERVER)
    widget.segment_all()
    qtbot.waitUntil(lambda: "on http://127.0.0.1" in widget.runner.status.text(), timeout=WAIT_MS)
    widget.runner.cancel()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=10_000)
    answered.set()
    assert widget.runner.last_outcome == "cancelled"
    assert len(widget.worklist.pending(str(tiny_model))) == 4
    assert all(case.row is None and case.model is None for case in widget.worklist.cases.values())
