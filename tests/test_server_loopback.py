"""``ramseg serve``'s app on a real uvicorn server on loopback, in this test run (issue 31): the client
over HTTP gets the local pipeline's answer, and once the server is stopped it says so in one line."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("uvicorn")

from napari_ramseg.core.inference.predictor import Predictor  # noqa: E402
from napari_ramseg.core.review.pipeline import CaseOptions, segment_case  # noqa: E402
from napari_ramseg.io import read_image  # noqa: E402
from napari_ramseg.server.app import ServerSettings, create_app  # noqa: E402
from napari_ramseg.server.cases import jsonable  # noqa: E402
from napari_ramseg.server.client import ServerClient, ServerError  # noqa: E402

from helpers import serve_model_on_loopback, serve_on_loopback  # noqa: E402

TOKEN = "loopback-token-0123456789"


def test_a_server_on_loopback_answers_as_the_local_pipeline_and_once_stopped_the_client_says_so(tiny_model, tmp_path):
    from PIL import Image

    scan = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(scan)
    server, thread, url, _ = serve_model_on_loopback(tiny_model, tmp_path, TOKEN)
    try:
        with ServerClient(url, TOKEN) as client:
            assert client.health()["status"] == "ok"
            remote = client.segment(scan, model="tiny", precision="fp32")
        with pytest.raises(ServerError, match="refused the token"):
            ServerClient(url, TOKEN[::-1]).health()
    finally:
        server.should_exit = True
        thread.join(30)
    local = segment_case(Predictor.from_path(tiny_model, device="cpu", precision="fp32"), read_image(scan),
                         CaseOptions())
    assert np.array_equal(remote.mask, local.prediction.labels) and remote.measures == jsonable(local.measures)
    assert not thread.is_alive()
    with pytest.raises(ServerError, match=f"cannot reach the ramseg server at {url}") as err:
        ServerClient(url, TOKEN).segment(scan, model="tiny")
    assert len(str(err.value).splitlines()) == 1


def test_direct_tls_with_uvicorns_certificate_options(tmp_path):
    """``--ssl-keyfile``/``--ssl-certfile`` as ``ramseg serve`` passes them: the client trusts the
    department's own certificate when given it, and refuses the server in one line when not."""
    import shutil
    import subprocess as sp

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    sp.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
           check=True, capture_output=True)
    server, thread, url = serve_on_loopback(create_app(ServerSettings(token=TOKEN)), ssl_keyfile=str(key),
                                           ssl_certfile=str(cert))
    try:
        assert ServerClient(url, TOKEN, verify=cert).health()["status"] == "ok"
        with pytest.raises(ServerError, match="certificate this client does not trust") as err:
            ServerClient(url, TOKEN).health()
        assert len(str(err.value).splitlines()) == 1
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_server_stopped_mid_job_leaves_no_version_and_the_client_says_so(tiny_model, synthetic_data, tmp_path):
    images = sorted((synthetic_data / "siteA" / "images").glob("*.png"))
    pairs = [(image, synthetic_data / "siteA" / "labels" / image.name) for image in images]
    workers_before = {t for t in threading.enumerate() if t.name == "ramseg-jobs"}
    server, thread, url, models = serve_model_on_loopback(tiny_model, tmp_path, TOKEN)
    try:
        with ServerClient(url, TOKEN) as client:
            job = client.finetune("tiny", pairs, iterations=1_000_000, precision="fp32")
            deadline = time.monotonic() + 120
            while client.job(job["id"])["state"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        server.should_exit = True
        thread.join(120)
    assert not thread.is_alive()
    workers = {t for t in threading.enumerate() if t.name == "ramseg-jobs"} - workers_before
    assert not workers  # the round was cancelled and stopped at its next step before the server ended
    with pytest.raises(ServerError, match="cannot reach the ramseg server") as err:
        ServerClient(url, TOKEN).wait(job["id"])
    assert len(str(err.value).splitlines()) == 1
    family = models / "tiny-finetuned"
    assert not list(family.glob("v*")) and not [p for p in family.iterdir() if p.name.startswith(".")]
