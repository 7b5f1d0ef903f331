"""``ramseg serve``'s background jobs (issue 31): a fine-tune round from uploaded corrections whose version
appears on the server with its lineage while the base model is untouched, progress, cancelling."""

from __future__ import annotations

import hashlib
import shutil
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from napari_ramseg.server.app import ServerSettings, create_app  # noqa: E402
from napari_ramseg.server.client import ServerClient, ServerError  # noqa: E402

TOKEN = "jobs-token-0123456789abcdef"


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("served-jobs")
    shutil.copytree(tiny_model, folder / "tiny")
    return folder


@pytest.fixture(scope="module")
def client(served) -> ServerClient:
    http = TestClient(create_app(ServerSettings(token=TOKEN, models_dir=served, device="cpu")))
    return ServerClient("http://testserver", TOKEN, transport=http._transport)


def _pairs(synthetic_data: Path) -> list[tuple[Path, Path]]:
    images = sorted((synthetic_data / "siteA" / "images").glob("*.png"))
    return [(image, synthetic_data / "siteA" / "labels" / image.name) for image in images]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _until(client: ServerClient, job_id: str, states: tuple[str, ...], seconds: float = 240) -> dict:
    deadline = time.monotonic() + seconds
    while (job := client.job(job_id))["state"] not in states:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def test_a_finetune_round_from_uploaded_corrections_appears_on_the_server_and_the_base_is_untouched(
        client, served, synthetic_data):
    before = _digest(served / "tiny")
    job = client.finetune("tiny", _pairs(synthetic_data), iterations=2, precision="fp32")
    assert job["state"] in ("queued", "running") and job["model"] == "tiny"
    seen = []
    done = client.wait(job["id"], on_progress=lambda j: seen.append(j["progress"].get("phase")), poll_s=0.2)
    assert done["state"] == "done", done
    assert done["result"]["version"] == "tiny-finetuned.v001" and done["result"]["round"] == 1
    assert "train" in seen or "write" in seen or "done" in seen
    models = {m["name"]: m for m in client.models()}
    version = models["tiny-finetuned.v001"]
    assert version["source"] == "fine-tuned on this server" and version["lineage"] == ["tiny"] and version["round"] == 1
    assert str(served) not in str(version)
    assert _digest(served / "tiny") == before  # the base model is never written
    image = _pairs(synthetic_data)[0][0]
    assert not client.segment(image, model="tiny-finetuned.v001").refused


def test_a_cancelled_round_writes_no_version(client, served, synthetic_data):
    job = client.finetune("tiny", _pairs(synthetic_data), iterations=1_000_000, precision="fp32")
    _until(client, job["id"], ("running",))
    client.cancel(job["id"])
    ended = _until(client, job["id"], ("cancelled", "done", "failed"))
    assert ended["state"] == "cancelled" and ended["result"]["version"] is None
    family = served / "tiny-finetuned"
    assert sorted(p.name for p in family.glob("v*")) == ["v001"]  # the first test's; nothing half-written
    assert not [p for p in family.iterdir() if p.name.startswith(".")]


def test_bad_fine_tune_requests_are_refused_in_one_line(client, synthetic_data, tiny_model):
    with pytest.raises(ServerError, match="404.*no model named"):
        client.finetune(str(tiny_model), _pairs(synthetic_data)[:1])
    with pytest.raises(ServerError, match="no job"):
        client.job("0123456789ab")
    broken = client._call("POST", "/jobs/finetune", expect=202, json={
        "model": "tiny", "cases": [{"image": "not base64!", "image_format": "png", "mask": "", "mask_format": "png"}]})
    failed = _until(client, broken["id"], ("failed", "done", "cancelled"))
    assert failed["state"] == "failed" and failed["error"] == "case 1: the image is not base64"
    bare = TestClient(create_app(ServerSettings(token=TOKEN)))
    answer = bare.post("/jobs/finetune", json={"model": "vessels", "cases": [{}]},
                       headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 409 and "--models DIR" in answer.json()["detail"]


def test_training_on_a_data_folder_of_the_server_gives_a_served_model(synthetic_data, tmp_path):
    data, models = tmp_path / "data", tmp_path / "models"
    data.mkdir()
    models.mkdir()
    (data / "synth").symlink_to(synthetic_data, target_is_directory=True)
    http = TestClient(create_app(ServerSettings(token=TOKEN, models_dir=models, device="cpu", data_dir=data)))
    client = ServerClient("http://testserver", TOKEN, transport=http._transport)
    with pytest.raises(ServerError, match="404.*no data folder named '../synth'.*never a path"):
        client.train("../synth")
    with pytest.raises(ServerError, match="400.*unknown training settings: out"):
        client.train("synth", out=str(tmp_path / "elsewhere"))
    job = client.train("synth", name="blobs", iterations=2, size=32, batch=4, base_width=4, labels=["blob"],
                       val_every=2)
    done = client.wait(job["id"], poll_s=0.2)
    assert done["state"] == "done" and done["result"]["version"] == "blobs", done
    assert done["progress"]["iteration"] == done["progress"]["total"] == 2
    models_seen = {m["name"]: m for m in client.models()}
    assert models_seen["blobs"]["labels"] == {"names": ["blob"], "kind": "nested"}
    assert not (tmp_path / "elsewhere").exists()
