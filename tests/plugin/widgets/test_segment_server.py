"""The Segment dock with "server" as its device (issue 31): the case goes to a ``ramseg serve`` on loopback
and comes back as the same layers a local run adds; a server out of reach is one notification and the
layers are untouched; Stop ends the wait at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("uvicorn")

from helpers import serve_model_on_loopback, stop_server  # noqa: E402

from napari_ramseg.server import connection  # noqa: E402
from napari_ramseg.plugin.widgets._server import SERVER, ServerSettingsDialog  # noqa: E402

pytestmark = pytest.mark.gui
WAIT_MS = 120_000
TOKEN = "dock-token-0123456789abcdef"


@pytest.fixture
def server_url(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv(connection.CONFIG_ENV, str(tmp_path / "config"))
    server, thread, url, _ = serve_model_on_loopback(tiny_model, tmp_path, TOKEN)
    yield url
    stop_server(server, thread)


def _photo():
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)


def _settings(widget, url: str, token: str = TOKEN) -> str:
    dialog = ServerSettingsDialog(widget)
    dialog.url_edit.setText(url)
    dialog.token_edit.setText(token)
    return dialog.test()


def test_the_segment_dock_offers_a_server_and_segments_through_it_as_it_does_here(sync_segment_widget, server_url):
    widget = sync_segment_widget
    combo = widget.device_combo
    assert [combo.itemText(i) for i in range(combo.count())][-1] == SERVER
    assert _settings(widget, server_url).startswith("✓ connected")
    viewer = widget.viewer
    image = viewer.add_image(_photo(), name="photo", rgb=True)
    widget.image_combo.set_layer(image)
    widget.probabilities_box.setChecked(True)
    widget.uncertainty_box.setChecked(True)
    combo.setCurrentText("cpu")
    widget.segment()
    here = {name: viewer.layers[f"photo {name}"].data.copy() for name in ("segmentation", "probability: blob",
                                                                          "uncertainty")}
    combo.setCurrentText(SERVER)
    widget.segment()
    assert widget.runner.last_outcome == "done"
    for name, data in here.items():
        np.testing.assert_array_equal(viewer.layers[f"photo {name}"].data, data, err_msg=name)
    assert viewer.layers["photo segmentation"].metadata["device"].startswith("server http://127.0.0.1")


def test_a_server_out_of_reach_is_one_notification_and_the_layers_are_untouched(sync_segment_widget, tmp_path,
                                                                                 monkeypatch, notifications):
    monkeypatch.setenv(connection.CONFIG_ENV, str(tmp_path / "config"))
    widget = sync_segment_widget
    assert "cannot reach the ramseg server" in _settings(widget, "http://127.0.0.1:9")
    image = widget.viewer.add_image(_photo(), name="photo", rgb=True)
    widget.image_combo.set_layer(image)
    widget.device_combo.setCurrentText(SERVER)
    widget.segment()
    assert widget.runner.last_outcome == "failed"
    assert [layer.name for layer in widget.viewer.layers] == ["photo"]
    assert any("cannot reach the ramseg server at http://127.0.0.1:9" in m for m in notifications())


def test_stop_ends_the_wait_for_the_server_at_once(segment_widget, server_url, qtbot, monkeypatch):
    from napari_ramseg.server.client import ServerClient

    widget = segment_widget
    _settings(widget, server_url)
    answered = threading.Event()
    monkeypatch.setattr(ServerClient, "segment", lambda *a, **k: answered.wait(60))  # a server that takes long
    image = widget.viewer.add_image(_photo(), name="photo", rgb=True)
    widget.image_combo.set_layer(image)
    widget.device_combo.setCurrentText(SERVER)
    widget.segment(run_sync=False)
    qtbot.waitUntil(lambda: "segmenting on" in widget.runner.status.text(), timeout=WAIT_MS)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=10_000)
    answered.set()
    assert widget.runner.last_outcome == "cancelled"
    assert [layer.name for layer in widget.viewer.layers] == ["photo"]
