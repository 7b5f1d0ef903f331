"""The Correct and fine-tune dock with "server" as its device (issue 31): the project's corrections go to a
``ramseg serve`` on loopback, the round runs there and its version appears there; nothing is written here."""

from __future__ import annotations

import pytest

pytest.importorskip("uvicorn")

from helpers import make_synthetic_domains, serve_model_on_loopback, stop_server  # noqa: E402

from napari_ramseg.core.finetune.corrections import CorrectionStore  # noqa: E402
from napari_ramseg.io import read_image, read_mask  # noqa: E402
from napari_ramseg.server import connection  # noqa: E402
from napari_ramseg.plugin.widgets._server import SERVER, ServerRound  # noqa: E402
from napari_ramseg.plugin.widgets.finetune import CorrectFinetuneWidget  # noqa: E402

pytestmark = pytest.mark.gui
TOKEN = "finetune-dock-token-0123456789"


def test_a_round_through_the_server_leaves_its_version_there(make_napari_viewer, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv(connection.CONFIG_ENV, str(tmp_path / "config"))
    site = make_synthetic_domains(tmp_path / "site", domains=("siteC",), cases=3, size=40, seed=11) / "siteC"
    project = tmp_path / "project"
    store = CorrectionStore(project)
    for i in range(3):
        image = read_image(site / "images" / f"case{i}.png").array
        truth = read_mask(site / "labels" / f"case{i}.png")
        store.save(image, truth * 0, truth, tiny_model, f"case{i}.png")
    server, thread, url, models = serve_model_on_loopback(tiny_model, tmp_path, TOKEN)
    try:
        connection.save(url, TOKEN)
        widget = CorrectFinetuneWidget(make_napari_viewer())
        widget.project_edit.setText(str(project))
        widget.model_picker.set_model(tiny_model)
        widget.iterations_spin.setValue(2)
        widget.device_combo.setCurrentText(SERVER)
        widget.start_finetune(run_sync=True)
    finally:
        stop_server(server, thread)
    result = widget.last_result
    assert isinstance(result, ServerRound) and result.version == f"{tiny_model.name}-finetuned.v001"
    assert f"New model {result.version} (round 1) on {url}" in widget.status.text()
    assert (models / f"{tiny_model.name}-finetuned" / "v001" / "model.json").is_file()
    assert not list(project.parent.glob("*finetuned*"))  # nothing written here
