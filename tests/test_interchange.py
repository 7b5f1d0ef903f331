"""Interchange: ONNX export against torch, the BioImage.IO package (its own test, offline), re-import."""

from __future__ import annotations

import json
import socket
import zipfile

import numpy as np
import pytest
import torch

from napari_ramseg.errors import RamsegInputError


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test: the package must validate offline."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAMSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def package(tiny_model, synthetic_data, tmp_path_factory):
    from napari_ramseg.interchange.bioimageio import export_bioimageio
    from napari_ramseg.io import read_image

    sample = read_image(synthetic_data / "siteA" / "images" / "case0.png")
    out = tmp_path_factory.mktemp("package") / "tiny.zip"
    return export_bioimageio(tiny_model, out, sample.array, sample.is_volume, authors=["Test Author"])


def test_onnx_matches_torch(tiny_model, tmp_path):
    pytest.importorskip("onnxruntime")
    from napari_ramseg.core.models.checkpoint import load_model
    from napari_ramseg.interchange.onnx_export import export_onnx, inference_network, run_onnx

    model, metadata = load_model(tiny_model)
    path = export_onnx(model, metadata, tmp_path / "tiny.onnx")
    net = inference_network(model)
    for shape in [(1, 3, 32, 32), (2, 3, 48, 80)]:  # batch, height and width are dynamic
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
        with torch.no_grad():
            folded, plain = net(x).numpy(), model(x).numpy()
        onnx_out = run_onnx(path, x.numpy())
        assert onnx_out.shape == (shape[0], metadata.config.labels.out_channels, *shape[2:])
        np.testing.assert_allclose(onnx_out, folded, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(onnx_out, plain, atol=1e-4, rtol=1e-3)

    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["label_names"]) == list(metadata.config.labels.names)
    assert float(props["threshold"]) == metadata.config.threshold


def test_bioimageio_package_passes_its_own_test_offline(package, offline):
    from bioimageio.core import test_model

    summary = test_model(package, devices=["cpu"])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    names = " ".join(d.name for d in summary.details)
    assert "Reproduce test outputs from test inputs (onnx)" in names
    assert "Reproduce test outputs from test inputs (torchscript)" in names


def test_package_describes_the_model(package, tiny_model):
    import yaml

    from napari_ramseg.interchange.citations import METHOD

    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        card = archive.read(rdf["documentation"]["source"]).decode()
        files = set(archive.namelist())
    assert {"weights.onnx", "weights_torchscript.pt", "model.json", "model.safetensors", "cover.png"} <= files
    assert rdf["format_version"].startswith("0.5")
    assert set(rdf["weights"]) == {"onnx", "torchscript"}
    assert METHOD.doi in [c.get("doi") for c in rdf["cite"]]
    steps = [[p["id"] for p in steps if p["id"] != "ensure_dtype"]  # the spec adds dtype steps itself
             for steps in (rdf["inputs"][0]["preprocessing"], rdf["outputs"][0]["postprocessing"])]
    assert steps == [["scale_range", "scale_linear", "clip"], ["sigmoid"]]
    assert rdf["config"]["napari-ramseg"]["weights"] == "model.safetensors"
    assert "github_user" not in json.dumps(rdf["authors"])
    # siteA/siteB are no public data set: named as such, not given an invented licence
    assert "siteA: not a public data set" in card and "## Validation" in card


def test_package_reimports_without_running_its_code(package, tiny_model, synthetic_data, tmp_path, cache):
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.io import read_image
    from napari_ramseg.models import resolve_model

    # A copy without the TorchScript and ONNX files loads the same: napari-ramseg never opens them.
    stripped = tmp_path / "stripped.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(stripped, "w") as dst:
        for item in src.infolist():
            if item.filename not in ("weights_torchscript.pt", "weights.onnx"):
                dst.writestr(item, src.read(item.filename))
    image = read_image(synthetic_data / "siteB" / "images" / "case1.png").array
    reference = Predictor.from_path(tiny_model, device="cpu", precision="fp32").predict(image)
    for model in (package, stripped):
        loaded = Predictor.from_path(resolve_model(str(model)), device="cpu", precision="fp32").predict(image)
        np.testing.assert_array_equal(loaded.labels, reference.labels)
        np.testing.assert_allclose(loaded.probabilities, reference.probabilities, atol=1e-6)
    assert len(list((cache / "bioimageio").iterdir())) == 2

    # an unpacked package folder (and its rdf.yaml) loads too
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
    for model in (folder, folder / "rdf.yaml"):
        loaded = Predictor.from_path(model, device="cpu", precision="fp32").predict(image)
        np.testing.assert_array_equal(loaded.labels, reference.labels)


def test_foreign_packages_are_refused_in_one_line(package, tmp_path, cache):
    import yaml

    from napari_ramseg.core.models.checkpoint import resolve_model_path

    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    foreign = dict(rdf, config={})
    path = tmp_path / "foreign.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rdf.yaml", yaml.safe_dump(foreign))
        archive.writestr("weights.pt", b"\x80\x04 pickle")
    with pytest.raises(RamsegInputError, match="not made by napari-ramseg") as info:
        resolve_model_path(path)
    assert "\n" not in str(info.value)

    missing = dict(rdf, attachments=[a for a in rdf["attachments"] if a["source"] != "model.safetensors"])
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "rdf.yaml").write_text(yaml.safe_dump(missing))
    with pytest.raises(RamsegInputError, match="not among the attachments"):
        resolve_model_path(tmp_path / "folder")

    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(RamsegInputError, match="not a readable zip"):
        resolve_model_path(tmp_path / "broken.zip")


def test_segment_dock_model_picker_takes_a_package(package, cache):
    from napari_ramseg.plugin.widgets._models import clear_predictor_cache, get_predictor, model_summary

    assert model_summary(package) == "blob · trained on siteA + siteB"
    try:
        predictor = get_predictor(package, device="cpu")
        assert predictor.channel_names == ["blob"] and get_predictor(package, device="cpu") is predictor  # cached
    finally:
        clear_predictor_cache()


def test_ramseg_export_writes_onnx_and_refuses_bad_names(tiny_model, tmp_path, capsys):
    from napari_ramseg.cli import main
    from napari_ramseg.interchange.onnx_export import run_onnx

    out = tmp_path / "tiny.onnx"
    assert main(["export", "--model", str(tiny_model), "--format", "onnx", "--out", str(out)]) == 0
    assert run_onnx(out, np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 1, 32, 32)
    assert main(["export", "--model", str(tiny_model), "--format", "onnx", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "--model", str(tiny_model), "--format", "bioimageio", "--out", str(tmp_path / "a.zip")]) == 2
    assert "give --sample IMAGE" in capsys.readouterr().err
    assert main(["export", "--model", str(tiny_model), "--format", "bioimageio",
                 "--out", str(tmp_path / "a.onnx")]) == 2
    assert "writes a .zip file" in capsys.readouterr().err


def test_a_volume_sample_becomes_a_2_5d_test_input(tiny_model):
    from napari_ramseg.core.models.checkpoint import load_metadata
    from napari_ramseg.interchange.bioimageio import sample_tensor

    volume = np.arange(5 * 40 * 48, dtype=np.uint16).reshape(5, 40, 48)
    x = sample_tensor(volume, True, load_metadata(tiny_model), stride=8)
    assert x.shape == (1, 3, 40, 48) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], volume[1:4].astype(np.float32))  # slices j-1, j, j+1 of the middle one
    with pytest.raises(RamsegInputError, match="too small"):
        sample_tensor(volume[:, :4, :4], True, load_metadata(tiny_model), stride=8)


def test_ramseg_predict_takes_a_package(package, synthetic_data, tmp_path, cache):
    from napari_ramseg.cli import main
    from napari_ramseg.io import read_mask

    image = synthetic_data / "siteA" / "images" / "case2.png"
    assert main(["predict", "--model", str(package), "--input", str(image), "--output", str(tmp_path / "m.png"),
                 "--device", "cpu", "--precision", "fp32"]) == 0
    assert read_mask(tmp_path / "m.png").shape == (48, 48)
