"""``ramseg serve`` (issue 31): FastAPI's TestClient against the app, the client module through it.

The server answers a case as the local pipeline does (``core.review.pipeline.segment_case``): the same mask
and measures for a fundus photograph, the same refusal of an MRI slice by the optic disc model; the
token is checked on every request, models are named and never given as paths, uploads are limited,
and each request leaves one log line that names no file.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
with warnings.catch_warnings():  # Starlette 1.x would rather run its TestClient on httpx2; httpx serves
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from napari_ramseg.cli import main  # noqa: E402
from napari_ramseg.core.inference.predictor import Predictor  # noqa: E402
from napari_ramseg.core.review.pipeline import segment_case  # noqa: E402
from napari_ramseg.io import read_image  # noqa: E402
from napari_ramseg.models import bundled_models, resolve_model  # noqa: E402
from napari_ramseg.server import security  # noqa: E402
from napari_ramseg.server.app import ServerSettings, create_app  # noqa: E402
from napari_ramseg.server.cases import jsonable  # noqa: E402
from napari_ramseg.server.client import ServerClient, ServerError  # noqa: E402

TOKEN = "test-token-0123456789abcdef"
PHOTO = Path(__file__).resolve().parents[1] / "napari_ramseg" / "sample_data" / "hrf_01_h.jpg"
needs_bundled = pytest.mark.skipif(not {"optic-disc", "vessels"} <= set(bundled_models()),
                                   reason="the bundled optic-disc and vessels models are needed")


@pytest.fixture(scope="module")
def models_dir(tiny_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_model, folder / "tiny")
    return folder


@pytest.fixture(scope="module")
def http(models_dir) -> TestClient:
    return TestClient(create_app(ServerSettings(token=TOKEN, models_dir=models_dir, device="cpu")))


@pytest.fixture(scope="module")
def client(http) -> ServerClient:
    """The client module, talking to the app in-process through the TestClient's transport."""
    return ServerClient("http://testserver", TOKEN, transport=http._transport)


def _auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _grey_png(path: Path, size: int = 40) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _local(model: str | Path, path: Path, **options):
    from napari_ramseg.core.review.pipeline import CaseOptions

    predictor = Predictor.from_path(resolve_model(model), device="cpu", precision="fp32")
    return segment_case(predictor, read_image(path), CaseOptions(**options))


# ---------------------------------------------------------------------------------------------- auth


def test_requests_without_the_token_or_with_a_wrong_one_are_refused_and_the_right_one_accepted(http, models_dir):
    assert http.get("/health").status_code == 401
    assert http.get("/models", headers=_auth("wrong-token-0123456789")).status_code == 401
    assert http.get("/health", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    refused = http.post("/segment", params={"model": "tiny", "format": "png"}, content=b"x" * 100,
                        headers=_auth(TOKEN + "x"))
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert "wrong token" in refused.json()["detail"]
    answer = http.get("/health", headers=_auth())
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    models = {m["name"]: m for m in http.get("/models", headers=_auth()).json()["models"]}
    assert models["tiny"]["source"] == "models folder" and models["tiny"]["labels"] == {"names": ["blob"],
                                                                                         "kind": "nested"}
    assert str(models_dir) not in str(models)  # a model is a name; the server's paths stay on the server


def test_the_token_is_compared_in_constant_time(monkeypatch):
    calls = []
    real = security.hmac.compare_digest
    monkeypatch.setattr(security.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert security.bearer_matches(f"Bearer {TOKEN}", TOKEN)
    assert not security.bearer_matches("Bearer nope", TOKEN) and not security.bearer_matches(None, TOKEN)
    assert len(calls) == 3


def test_the_client_says_in_one_line_that_the_server_is_out_of_reach_or_refuses_the_token(http):
    with pytest.raises(ServerError, match="cannot reach the ramseg server at http://127.0.0.1:9") as err:
        ServerClient("http://127.0.0.1:9", TOKEN).health()
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(ServerError, match="refused the token") as err:
        ServerClient("http://testserver", "wrong-token-0123456789", transport=http._transport).models()
    assert len(str(err.value).splitlines()) == 1


# ------------------------------------------------------------------------------- same answers as local


@needs_bundled
def test_a_fundus_photograph_gets_the_same_mask_and_measures_as_the_local_pipeline(client):
    remote = client.segment(PHOTO, model="vessels", precision="fp32")
    local = _local("vessels", PHOTO)
    assert not remote.refused and remote.task == local.task.name == "2d"
    assert remote.mask.shape == local.prediction.labels.shape
    assert np.array_equal(remote.mask, local.prediction.labels)
    assert remote.measures == jsonable(local.measures) and remote.measures["vessel_px"] > 0
    assert remote.fit == jsonable(local.fit.to_dict()) and remote.reliable == local.reliable


@needs_bundled
def test_an_mri_slice_is_refused_by_the_optic_disc_model_exactly_as_locally(client, shared_data):
    mri = shared_data / "prostate_slices" / "BIDMC" / "images" / "test_00_00.png"
    local = _local("optic-disc", mri)
    remote = client.segment(mri, model="optic-disc", precision="fp32")
    assert local.refused and remote.refused and remote.mask is None
    assert remote.refusal == local.refusal and "takes a colour fundus image" in remote.refusal
    assert remote.fit == jsonable(local.fit.to_dict())


def test_a_volume_comes_back_as_nifti_in_its_own_world_space_as_locally(client, models_dir, tmp_path):
    import nibabel as nib

    affine = np.diag([0.6, 0.7, 3.0, 1.0])
    affine[:3, 3] = (10, -5, 2)
    volume = np.random.default_rng(1).random((32, 32, 4)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    remote = client.segment(path, model="tiny", precision="fp32")
    local = _local(models_dir / "tiny", path)
    assert remote.task == local.task.name
    assert np.array_equal(remote.mask, local.prediction.labels) and remote.measures == jsonable(local.measures)
    assert remote.raw["mask"]["format"] == ".nii.gz" and np.allclose(remote.raw["spacing"], [3.0, 0.7, 0.6])
    import base64

    sent = tmp_path / "mask.nii.gz"
    sent.write_bytes(base64.b64decode(remote.raw["mask"]["data"]))
    assert np.allclose(nib.load(sent).affine, affine)




def test_adaptation_and_review_options_travel_with_the_request(client, models_dir, tmp_path):
    from napari_ramseg.core.inference.adapt import AdaptedPredictor
    from napari_ramseg.core.review.pipeline import CaseOptions

    scan = _grey_png(tmp_path / "scan.png", 48)
    remote = client.segment(scan, model="tiny", adapt="align", review="disagreement", precision="fp32")
    predictor = Predictor.from_path(models_dir / "tiny", device="cpu", precision="fp32")
    local = segment_case(predictor, read_image(scan), CaseOptions(review="disagreement"),
                         segmenter=AdaptedPredictor(predictor, "align"))
    assert np.array_equal(remote.mask, local.prediction.labels) and remote.measures == jsonable(local.measures)
    assert remote.disagreement is not None and remote.disagreement == pytest.approx(local.disagreement, abs=1e-6)
    assert remote.raw["adaptation"]["method"] == "align" and remote.raw["adaptation"]["fit_after"] is not None
    assert client.segment(scan, model="tiny").raw["adaptation"] is None


# --------------------------------------------------------------------------------------- limits, names


@pytest.mark.parametrize("name", ["../tiny", "/etc/passwd", "tiny/model.safetensors", "C:\\models\\tiny"])
def test_a_request_naming_a_path_is_refused(http, models_dir, name):
    answer = http.post("/segment", params={"model": name, "format": "png"}, content=b"x", headers=_auth())
    assert answer.status_code == 404 and "never a path" in answer.json()["detail"]
    absolute = http.post("/segment", params={"model": str(models_dir / "tiny"), "format": "png"}, content=b"x",
                         headers=_auth())
    assert absolute.status_code == 404


def test_uploads_over_the_limit_are_refused_declared_or_streamed(models_dir):
    small = TestClient(create_app(ServerSettings(token=TOKEN, models_dir=models_dir, max_upload_bytes=1000)))
    params = {"model": "tiny", "format": "jpg"}
    declared = small.post("/segment", params=params, content=PHOTO.read_bytes(), headers=_auth())
    assert declared.status_code == 413 and "limit of 1000 bytes" in declared.json()["detail"]
    streamed = small.post("/segment", params=params, content=iter([b"x" * 600, b"x" * 600]), headers=_auth())
    assert streamed.status_code == 413
    assert small.get("/health", headers=_auth()).status_code == 200  # and the server goes on


def test_a_volume_over_the_readers_limit_is_refused_from_its_header(http, tmp_path):
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 4096))
    header.set_data_dtype(np.float32)
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 1024)  # 256 GiB claimed, 1 KiB sent
    answer = http.post("/segment", params={"model": "tiny", "format": "nii"}, content=path.read_bytes(),
                       headers=_auth())
    assert answer.status_code == 400 and "GiB decoded" in answer.json()["detail"]
    assert str(tmp_path) not in answer.text and "/tmp" not in answer.json()["detail"]


@pytest.mark.parametrize("params, words", [
    ({"format": "exe"}, "format '.exe' is not one of"),
    ({"format": "png", "adapt": "magic"}, "adapt 'magic' is not one of"),
    ({"format": "png", "review": "all"}, "review 'all' is not one of"),
    ({"format": "png", "precision": "fp8"}, "precision 'fp8' is not one of"),
])
def test_bad_options_are_refused_in_one_line(http, params, words):
    answer = http.post("/segment", params={"model": "tiny", **params}, content=b"x", headers=_auth())
    assert answer.status_code == 400 and words in answer.json()["detail"]


def test_an_empty_or_unreadable_upload_is_refused_in_one_line(http):
    empty = http.post("/segment", params={"model": "tiny", "format": "png"}, content=b"", headers=_auth())
    assert empty.status_code == 400 and "no image" in empty.json()["detail"]
    junk = http.post("/segment", params={"model": "tiny", "format": "png"}, content=b"not a png", headers=_auth())
    assert junk.status_code == 400 and junk.json()["detail"].startswith("the uploaded .png cannot be read")


def test_a_client_that_goes_away_mid_upload_leaves_the_server_healthy(http, models_dir):
    app = create_app(ServerSettings(token=TOKEN, models_dir=models_dir))
    messages = iter([{"type": "http.request", "body": b"x" * 100, "more_body": True}, {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/segment", "raw_path": b"/segment",
             "query_string": b"model=tiny&format=png", "headers": [(b"authorization", f"Bearer {TOKEN}".encode())],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80), "scheme": "http", "root_path": "",
             "http_version": "1.1"}
    asyncio.run(app(scope, receive, send))
    assert TestClient(app).get("/health", headers=_auth()).status_code == 200


# ----------------------------------------------------------------------------------- starting, logs


def test_without_a_token_the_server_listens_on_loopback_only(monkeypatch, capsys, tmp_path):
    from napari_ramseg.server import app

    monkeypatch.delenv(security.TOKEN_ENV, raising=False)
    started = []
    monkeypatch.setattr(app, "serve", lambda *a, **k: started.append((a, k)))
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refusing to serve on 0.0.0.0 without a token" in err and not started
    for host in ("127.0.0.1", "::1", "localhost"):
        assert main(["serve", "--host", host]) == 0
    assert [a[0].token for a, _ in started] == [None] * 3
    monkeypatch.setenv(security.TOKEN_ENV, TOKEN)
    assert main(["serve", "--host", "0.0.0.0"]) == 0 and started[-1][0][0].token == TOKEN
    short = tmp_path / "token"
    short.write_text("abc\n")
    assert main(["serve", "--host", "0.0.0.0", "--token-file", str(short)]) == 2
    assert "at least 16 characters" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no way to give the token itself on the command line
        main(["serve", "--token", TOKEN])


def test_tls_options_reach_uvicorn(monkeypatch, tmp_path):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    key.write_text("k")
    cert.write_text("c")
    (tmp_path / "token").write_text(TOKEN)
    assert main(["serve", "--host", "0.0.0.0", "--token-file", str(tmp_path / "token"), "--ssl-keyfile", str(key),
                 "--ssl-certfile", str(cert)]) == 0
    assert seen["ssl_keyfile"] == str(key) and seen["ssl_certfile"] == str(cert) and seen["access_log"] is False
    assert main(["serve", "--ssl-keyfile", str(key)]) == 2  # one without the other


def test_each_request_leaves_one_log_line_that_names_no_file(client, http, tmp_path, caplog, monkeypatch):
    # in the whole suite an earlier test's library silenced logging (a dictConfig that disables existing
    # loggers, or logging.disable); a server process sets up its own logging first, so undo both here
    monkeypatch.setattr(logging.getLogger("napari_ramseg.server"), "disabled", False)
    monkeypatch.setattr(logging.root.manager, "disable", logging.NOTSET)
    scan = _grey_png(tmp_path / "Jane_Doe_1956-03-02.png")
    with caplog.at_level(logging.INFO, logger="napari_ramseg.server"):
        client.segment(scan, model="tiny")
        http.get("/patients/Jane_Doe", headers=_auth())
    lines = [r.getMessage() for r in caplog.records if r.name == "napari_ramseg.server"]
    assert len(lines) == 2, lines
    assert " POST /segment 200 " in lines[0] and " GET - 404 " in lines[1]
    assert not any(word in line for line in lines for word in ("Jane", "Doe", ".png", "1956", "tiny"))


def test_the_server_imports_no_ui_and_the_core_never_imports_the_server():
    """A GPU box runs ``ramseg serve`` headless: no Qt, napari or docks; and the core stays free of it."""
    import ast

    package = Path(__file__).resolve().parents[1] / "napari_ramseg"
    ui = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt", "vispy")
    for path in sorted((package / "server").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            relative = node.module or "" if isinstance(node, ast.ImportFrom) and node.level else ""
            assert not any(n.split(".")[0] in ui for n in names), f"{path.name} imports {names}"
            assert not relative.startswith(("widgets", "napari_io")), f"{path.name} imports {relative}"
    for path in sorted((package / "core").rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in modules if m.split(".")[0] == "server" or m.startswith("napari_ramseg.server")], path
