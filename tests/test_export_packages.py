"""``ramseg export`` as a new user meets it (issue 29, findings 2, 3, 13 and 20): packages of models with
several labels, the bundled models' own samples, the missing extra, the authors, the spec's warnings."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from napari_ramseg.cli import build_parser, main
from napari_ramseg.models import bundled_models, resolve_model

needs_disc = pytest.mark.skipif("optic-disc" not in bundled_models(), reason="optic-disc model not installed")


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ramseg: error: "), lines
    return lines[0]


def _warnings(package: Path) -> list[str]:
    from bioimageio.spec import load_description

    summary = load_description(package).validation_summary
    assert summary.status == "valid-format", summary
    return [f"{'.'.join(map(str, w.loc))}: {w.msg}" for detail in summary.details for w in detail.warnings]


@needs_disc
def test_a_package_name_holds_no_comma():
    from napari_ramseg.core.models.checkpoint import load_metadata
    from napari_ramseg.interchange.bioimageio import NAME_CHARACTERS, model_name

    model = resolve_model("optic-disc")
    name = model_name(model, load_metadata(model))
    assert name == "napari-ramseg disc and cup (optic-disc)"
    assert set(name) <= NAME_CHARACTERS and 5 <= len(name) <= 64


def test_without_the_interchange_extra_export_says_what_to_install(tiny_model, tmp_path, capsys, monkeypatch):
    for module in ("onnx", "bioimageio", "bioimageio.spec"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    for fmt, out in (("onnx", "m.onnx"), ("bioimageio", "m.zip")):
        assert main(["export", "--model", str(tiny_model), "--format", fmt, "--out", str(tmp_path / out)]) == 2
        line = _one_error_line(capsys)
        assert "pip install 'napari-ramseg[interchange]'" in line and "onnx" in line, line
        assert not (tmp_path / out).exists()


def test_a_package_asks_for_its_authors(tiny_model, synthetic_data, tmp_path, capsys):
    image = synthetic_data / "siteA" / "images" / "case0.png"
    assert main(["export", "--model", str(tiny_model), "--format", "bioimageio", "--sample", str(image),
                 "--out", str(tmp_path / "a.zip")]) == 2
    assert "--author" in _one_error_line(capsys)
    assert not (tmp_path / "a.zip").exists()


def test_a_package_has_sample_tensors_a_weights_parent_and_its_authors(tiny_model, synthetic_data, tmp_path):
    import yaml

    image = synthetic_data / "siteA" / "images" / "case0.png"
    out = tmp_path / "tiny.zip"
    assert main(["export", "--model", str(tiny_model), "--format", "bioimageio", "--sample", str(image),
                 "--author", "Ada Lovelace", "--author", "Alan Turing", "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        assert {"sample_input.tif", "sample_output.tif"} <= set(archive.namelist())
    assert [a["name"] for a in rdf["authors"]] == ["Ada Lovelace", "Alan Turing"]
    assert rdf["weights"]["onnx"]["parent"] == "torchscript" and "parent" not in rdf["weights"]["torchscript"]
    warnings = _warnings(out)
    assert not [w for w in warnings if "sample_tensor" in w or "parent" in w], warnings


def test_help_names_every_kind_of_model():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("predict", "export", "finetune"):
        model = next(a for a in sub.choices[command]._actions if a.dest == "model")
        assert "optic-disc" in model.help, command
    predict = next(a for a in sub.choices["predict"]._actions if a.dest == "model")
    assert ".zip" in predict.help


@needs_disc
@pytest.mark.slow  # an optic disc export and its bioimageio test: about a minute on a busy 2-core CPU
def test_the_optic_disc_model_exports_with_its_own_sample_and_passes_bioimageio_test(tmp_path):
    from bioimageio.core import test_model

    out = tmp_path / "optic-disc.zip"
    assert main(["export", "--model", "optic-disc", "--format", "bioimageio", "--author", "Test Author",
                 "--out", str(out)]) == 0  # no --sample: the bundled model brings its own
    warnings = _warnings(out)
    assert not [w for w in warnings if "sample_tensor" in w or "parent" in w], warnings
    summary = test_model(out, devices=["cpu"])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
