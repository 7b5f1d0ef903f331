"""The Train dock with "server" as its device (issue 31): the run goes to a ``ramseg serve`` on loopback, which
trains on its own copy of the data folder (named, never a path); progress arrives as a local run's does and
the model is served under the run's name; Stop cancels the job there."""

from __future__ import annotations

import pytest

pytest.importorskip("uvicorn")

from helpers import serve_on_loopback, stop_server  # noqa: E402

from napari_ramseg.server import connection  # noqa: E402
from napari_ramseg.server.app import ServerSettings, create_app  # noqa: E402
from napari_ramseg.plugin.widgets._server import SERVER  # noqa: E402
from napari_ramseg.plugin.widgets._server_train import ServerTraining  # noqa: E402
from napari_ramseg.plugin.widgets.train import TrainWidget  # noqa: E402

pytestmark = pytest.mark.gui
TOKEN = "train-dock-token-0123456789"


@pytest.fixture
def served(synthetic_data, tmp_path, monkeypatch):
    """(the server's models folder) with the synthetic dataset in its --data, remembered as the dock's server."""
    monkeypatch.setenv(connection.CONFIG_ENV, str(tmp_path / "config"))
    models = tmp_path / "models"
    models.mkdir()
    app = create_app(ServerSettings(token=TOKEN, models_dir=models, data_dir=synthetic_data.parent, device="cpu"))
    server, thread, url = serve_on_loopback(app)
    connection.save(url, TOKEN)
    yield models
    stop_server(server, thread)


def _widget(make_napari_viewer, synthetic_data, out, iterations):
    widget = TrainWidget(make_napari_viewer())
    widget.data_edit.setText(str(synthetic_data))
    widget.refresh_domains()
    widget.iterations_spin.setValue(iterations)
    widget.size_spin.setValue(32)
    widget.batch_spin.setValue(4)
    widget.width_spin.setValue(4)
    widget.device_combo.setCurrentText(SERVER)
    widget.out_edit.setText(str(out))
    return widget


def test_training_on_the_server_shows_progress_and_serves_the_model(make_napari_viewer, qtbot, synthetic_data,
                                                                     tmp_path, served):
    widget = _widget(make_napari_viewer, synthetic_data, tmp_path / "served-run", 2)
    widget.start()
    assert isinstance(widget.process, ServerTraining)
    qtbot.waitUntil(lambda: widget.process.finished, timeout=180_000)
    assert widget.process.error is None
    assert widget.progress.value() == 2 and len(widget.plot.series["loss"]) >= 1
    assert "the model is on the server as served-run" in widget.status.text()
    assert (served / "served-run" / "model.json").is_file() and not (tmp_path / "served-run").exists()


def test_stop_cancels_the_training_job_on_the_server(make_napari_viewer, qtbot, synthetic_data, tmp_path, served):
    widget = _widget(make_napari_viewer, synthetic_data, tmp_path / "long-run", 100_000)
    widget.start()
    qtbot.waitUntil(lambda: bool(widget.process.history), timeout=180_000)
    widget.stop()
    qtbot.waitUntil(lambda: widget.process.finished, timeout=180_000)
    assert widget.process.result["stopped"] and widget.process.error is None
    assert widget.start_button.isEnabled()
