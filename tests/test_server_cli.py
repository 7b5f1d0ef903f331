"""``ramseg predict|evaluate|finetune --server URL --token-file F`` (issue 31) against a ``ramseg serve`` app
on a real uvicorn on loopback, started in this test run: the same masks, report rows and measures as the
same command run here, for a 2D image and a volume; a fine-tune round whose version appears on the server;
one line (exit status 2) for a server out of reach, a wrong token and a server stopped mid-job, with the
user's files untouched."""

from __future__ import annotations

import csv
import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("uvicorn")

from helpers import serve_model_on_loopback, stop_server  # noqa: E402

from napari_ramseg.cli import main  # noqa: E402
from napari_ramseg.io import read_mask  # noqa: E402

TOKEN = "cli-token-0123456789abcdef"


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """(url, token file, models folder) of a server offering the tiny model as ``tiny``."""
    folder = tmp_path_factory.mktemp("cli-served")
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    server, thread, url, models = serve_model_on_loopback(tiny_model, folder, TOKEN)
    yield url, token_file, models
    stop_server(server, thread)


def _volume(path):
    nib = pytest.importorskip("nibabel")
    volume = np.random.default_rng(0).normal(400, 80, (6, 40, 40)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0), np.diag([0.8, 0.8, 2.0, 1.0])), path)
    return path


def _report(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_predict_through_the_server_writes_the_same_masks_and_report_as_here(served, tiny_model, synthetic_data,
                                                                              tmp_path, capsys):
    url, token_file, _ = served
    remote = ["--server", url, "--token-file", str(token_file), "--model", "tiny"]
    local = ["--model", str(tiny_model), "--device", "cpu"]
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("case0.png", "case1.png"):
        (folder / name).write_bytes((synthetic_data / "siteB" / "images" / name).read_bytes())
    _volume(folder / "mri.nii.gz")
    (folder / "broken.png").write_bytes(b"not a png")
    for where, options in (("here", local), ("server", remote)):
        assert main(["predict", "--input", str(folder), "--output", str(tmp_path / where), "--precision", "fp32",
                     "--review", "disagreement", *options]) == 0
    for mask in ("case0.png", "case1.png", "mri.nii.gz"):
        assert np.array_equal(read_mask(tmp_path / "here" / mask), read_mask(tmp_path / "server" / mask)), mask
    here, there = _report(tmp_path / "here" / "report.csv"), _report(tmp_path / "server" / "report.csv")
    assert here == there and len(here) == 4  # every measure, fit, uncertainty, disagreement and the unreadable row
    # one scan: the same mask file and the same lines said
    capsys.readouterr()
    for where, options in (("here", local), ("server", remote)):
        assert main(["predict", "--input", str(folder / "case0.png"), "--output", str(tmp_path / f"{where}.png"),
                     "--precision", "fp32", *options]) == 0
    assert np.array_equal(read_mask(tmp_path / "here.png"), read_mask(tmp_path / "server.png"))


def test_evaluate_through_the_server_scores_as_here(served, tiny_model, synthetic_data, tmp_path):
    url, token_file, _ = served
    for where, options in (("here", ["--model", str(tiny_model)]),
                           ("server", ["--server", url, "--token-file", str(token_file), "--model", "tiny"])):
        assert main(["evaluate", "--data", str(synthetic_data), "--domain", "siteB", "--precision", "fp32",
                     "--json", str(tmp_path / f"{where}.json"), *options]) == 0
    here, there = (json.loads((tmp_path / f"{w}.json").read_text()) for w in ("here", "server"))
    assert here["cases"] == there["cases"] and here["summary"] == there["summary"]
    assert there["server"] == {"url": url, "model": "tiny"}


def test_a_finetune_round_through_the_server_leaves_its_version_there(served, synthetic_data, tmp_path, capsys):
    url, token_file, models = served
    images = sorted((synthetic_data / "siteA" / "images").glob("*.png"))
    labels = [synthetic_data / "siteA" / "labels" / p.name for p in images]
    assert main(["finetune", "--server", url, "--token-file", str(token_file), "--model", "tiny",
                 "--images", *map(str, images), "--labels", *map(str, labels), "--iterations", "2",
                 "--precision", "fp32", "--lr-scale", "0.25"]) == 0
    out = capsys.readouterr()
    version = out.out.strip().splitlines()[-1]
    assert version.startswith("tiny-finetuned.v") and f"the server wrote {version}" in out.err
    assert (models / "tiny-finetuned" / version.split(".")[-1] / "model.json").is_file()
    assert not list(tmp_path.iterdir())  # nothing written here


@pytest.mark.parametrize("problem", ["unreachable", "wrong token"])
def test_a_server_out_of_reach_or_refusing_the_token_is_one_line_and_nothing_is_written(
        problem, served, synthetic_data, tmp_path, capsys):
    url, token_file, _ = served
    if problem == "unreachable":
        url = "http://127.0.0.1:9"
    else:
        token_file = tmp_path / "wrong"
        token_file.write_text("wrong-token-0123456789")
    scan = synthetic_data / "siteB" / "images" / "case0.png"
    before = scan.read_bytes()
    out = tmp_path / "out"
    assert main(["predict", "--server", url, "--token-file", str(token_file), "--model", "tiny",
                 "--input", str(scan), "--output", str(out / "mask.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    want = "cannot reach the ramseg server at" if problem == "unreachable" else "refused the token"
    assert len(err) == 1 and err[0].startswith("ramseg: error: ") and want in err[0], err
    assert scan.read_bytes() == before and not out.exists()


def test_options_that_mean_something_only_here_are_refused_with_server(served, synthetic_data, tmp_path, capsys):
    url, token_file, _ = served
    scan = synthetic_data / "siteB" / "images" / "case0.png"
    assert main(["predict", "--server", url, "--token-file", str(token_file), "--device", "cpu",
                 "--input", str(scan), "--output", str(tmp_path / "m.png")]) == 2
    assert "--device cannot be used with --server" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the token itself is never taken on the command line
        main(["predict", "--server", url, "--token", TOKEN, "--input", str(scan), "--output", str(tmp_path / "m.png")])


def test_a_server_stopped_mid_finetune_is_said_in_one_line_and_nothing_is_half_written(
        tiny_model, synthetic_data, tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    server, thread, url, models = serve_model_on_loopback(tiny_model, tmp_path, TOKEN)
    images = sorted((synthetic_data / "siteA" / "images").glob("*.png"))
    labels = [synthetic_data / "siteA" / "labels" / p.name for p in images]

    def stop_once_running() -> None:
        deadline = time.monotonic() + 120
        while not (models / "tiny-finetuned").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        stop_server(server, thread)

    stopper = threading.Thread(target=stop_once_running)
    stopper.start()
    code = main(["finetune", "--server", url, "--token-file", str(token_file), "--model", "tiny",
                 "--images", *map(str, images), "--labels", *map(str, labels), "--iterations", "1000000"])
    stopper.join()
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ramseg:")]
    assert code != 0
    assert err[-1].startswith("ramseg: error: ") or "stopped on the server" in err[-1], err
    assert "cannot reach the ramseg server" in err[-1] or "stopped" in err[-1]
    assert not list((models / "tiny-finetuned").glob("v*"))
