"""The attacker's findings of issue 29 about files read back and inputs: each hostile file ends in one
line naming it, quickly, and leaves nothing behind (packages, weights, versions, TIFF, geometry, folders)."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from napari_ramseg.core.checkpoint import load_model, resolve_model_path
from napari_ramseg.errors import RamsegInputError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAMSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _rdf(extra_attachments=()) -> dict:
    return {"type": "model", "format_version": "0.5.3", "name": "tiny",
            "attachments": [{"source": "model.json"}, {"source": "model.safetensors"}, *extra_attachments],
            "config": {"napari-ramseg": {"model_json": "model.json", "weights": "model.safetensors"}}}


def _package(path: Path, model: Path, rdf_text: str | None = None, weights: bytes | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("rdf.yaml", rdf_text if rdf_text is not None else yaml.safe_dump(_rdf()))
        archive.writestr("model.json", (model / "model.json").read_bytes())
        archive.writestr("model.safetensors", weights if weights is not None else (model / "model.safetensors").read_bytes())
    return path


# -- 21: a YAML alias bomb, a source that is not a string, attachments that are not a list ---------------

ALIAS_BOMB = """type: model
config: {napari-ramseg: {model_json: model.json, weights: model.safetensors}}
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
attachments: [{source: model.json}, {source: model.safetensors}, {source: *e}]
"""


@pytest.mark.parametrize("rdf_text, expected", [
    (ALIAS_BOMB, "aliases (*name) are not accepted"),
    (yaml.safe_dump(_rdf([{"source": [1, 2]}])), "attachments.2.source: input should be a valid string"),
    (yaml.safe_dump({**_rdf(), "attachments": 5}), "attachments: input should be a valid list"),
    ("type: model\nx: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
])
def test_hostile_package_descriptions_are_one_line(tmp_path, tiny_model, cache, rdf_text, expected):
    path = _package(tmp_path / "p.zip", tiny_model, rdf_text)
    start = time.perf_counter()
    with pytest.raises(RamsegInputError) as err:
        resolve_model_path(path)
    assert expected in str(err.value) and str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    assert time.perf_counter() - start < 10
    assert not (cache / "bioimageio").exists() or not any((cache / "bioimageio").iterdir())


# -- 22: a zip bomb is refused from its header, and a refused extraction leaves no cache folder ---------

def test_zip_bomb_weights_are_refused_before_extraction(tmp_path, tiny_model, cache):
    bomb = _package(tmp_path / "bomb.zip", tiny_model, weights=bytes(64 << 20))  # 64 MiB of zeros, ~64 KB zipped
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(RamsegInputError, match="model.safetensors in the package is not safetensors"):
        resolve_model_path(bomb)
    assert not (cache / "bioimageio").exists() or not any((cache / "bioimageio").iterdir())

    # a valid header describing another network (a 16 MiB tensor): refused from the header too
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(4 << 20)}, str(other))
    with pytest.raises(RamsegInputError, match="weights do not match the architecture"):
        resolve_model_path(_package(tmp_path / "other.zip", tiny_model, weights=other.read_bytes()))
    assert not (cache / "bioimageio").exists() or not any((cache / "bioimageio").iterdir())


def test_an_interrupted_extraction_leaves_no_cache_folder(tmp_path, tiny_model, cache, monkeypatch):
    from napari_ramseg.interchange import package

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(package, "_extract", fail)
    with pytest.raises(OSError):
        resolve_model_path(_package(tmp_path / "p.zip", tiny_model))
    assert not any((cache / "bioimageio").iterdir())
    monkeypatch.undo()
    monkeypatch.setenv("RAMSEG_CACHE_DIR", str(cache))
    weights, meta = resolve_model_path(tmp_path / "p.zip")
    assert load_model(weights.parent)[1].domains


# -- 25: weights that overflow on conversion, and dtypes the network cannot hold ------------------------

def _weights_copy(tmp_path: Path, model: Path, change) -> Path:
    out = tmp_path / "m"
    out.mkdir()
    (out / "model.json").write_bytes((model / "model.json").read_bytes())
    state = load_file(str(model / "model.safetensors"))
    name = next(k for k, v in state.items() if k.endswith("weight") and v.ndim == 4)
    state[name] = change(state[name])
    save_file(state, str(out / "model.safetensors"))
    return out


@pytest.mark.parametrize("change, expected", [
    (lambda w: w.double() * 1e300, "values too large for float32"),
    (lambda w: w.to(torch.float8_e4m3fn), "as float8_e4m3fn, which the network cannot use"),
    (lambda w: w.to(torch.complex64), "as complex64"),
    (lambda w: w.to(torch.int8), "as int8"),
    (lambda w: w > 0, "as bool"),
])
def test_weights_are_checked_after_conversion(tmp_path, tiny_model, change, expected):
    model = _weights_copy(tmp_path, tiny_model, change)
    with pytest.raises(RamsegInputError) as err:
        load_model(model)
    assert expected in str(err.value) and str(err.value).startswith(str(model / "model.safetensors"))


def test_float64_weights_that_fit_still_load(tmp_path, tiny_model):
    model = _weights_copy(tmp_path, tiny_model, lambda w: w.double())
    net, _ = load_model(model)
    assert all(p.dtype == torch.float32 for p in net.parameters())
