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

from napari_ramseg.core.models.checkpoint import load_model, resolve_model_path
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
        weights = (model / "model.safetensors").read_bytes() if weights is None else weights
        archive.writestr("model.safetensors", weights)
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
    from napari_ramseg.core.models import package

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


# -- 23, 26, 32, 33: fine-tune versions and the corrections store ---------------------------------------

def _round(model, store, out):
    """One quick fine-tune round."""
    from napari_ramseg.core.finetune import round as ft
    from napari_ramseg.core.config import FinetuneConfig

    return ft.finetune(model, store, out, FinetuneConfig(iterations=1, device="cpu", batch=2))


@pytest.fixture
def corrections(tmp_path, tiny_model):
    """Four corrected cases (the third held out), as the Correct and fine-tune dock saves them."""
    from helpers import make_synthetic_domains
    from napari_ramseg.core.finetune.corrections import CorrectionStore
    from napari_ramseg.io import read_image, read_mask

    site = make_synthetic_domains(tmp_path / "site", domains=("siteC",), cases=4, size=40, seed=7)
    store = CorrectionStore(tmp_path / "project")
    for i in range(4):
        image = read_image(site / "siteC" / "images" / f"case{i}.png").array
        final = read_mask(site / "siteC" / "labels" / f"case{i}.png")
        store.save(image, np.zeros_like(final), final, tiny_model, f"case{i}")
    return store


def test_a_file_named_like_the_next_version_is_skipped(tmp_path, tiny_model, corrections, monkeypatch):
    from napari_ramseg.core.finetune import round as ft

    out = tmp_path / "out"
    out.mkdir()
    (out / "v001").write_text("notes")
    assert ft.next_version(out) == "v002"
    calls = []
    original = ft.next_version

    def counted(root):  # today's loop asked forever; a few calls at most are right
        calls.append(root)
        if len(calls) > 5:
            raise AssertionError("next_version asked again and again")
        return original(root)

    monkeypatch.setattr(ft, "next_version", counted)
    result = _round(tiny_model, corrections, out)
    assert result.version == "v002" and (out / "v001").read_text() == "notes"
    assert sorted(p.name for p in out.iterdir()) == ["v001", "v002"]  # no .partial-* left


def test_version_and_case_folders_follow_the_umask(tmp_path, tiny_model, corrections):
    import os
    import stat

    old = os.umask(0o022)
    try:
        result = _round(tiny_model, corrections, tmp_path / "out")
        case = corrections.case_dir(corrections.list_cases()[-1])
        extra = corrections.save(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8),
                                 np.ones((8, 8), np.uint8), tiny_model, "extra")
    finally:
        os.umask(old)
    for folder in (result.model_dir, case, corrections.case_dir(extra)):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


def _damage(store, index: int, change) -> Path:
    path = store.case_dir(store.list_cases()[index]) / "provenance.json"
    prov = json.loads(path.read_text())
    change(prov)
    path.write_text(json.dumps(prov))
    return path


@pytest.mark.parametrize("change, expected", [
    (lambda p: p.update(seq=None), "seq: input should be a valid integer"),
    (lambda p: p.update(image_sha256=[1]), "image_sha256: input should be a valid string"),
    (lambda p: p.pop("files"), "files: field required"),
    (lambda p: p["files"].update(final="../../secret.tif"), "files.final: string should match pattern"),
    (lambda p: p["files"].update(image="/etc/passwd"), "files.image: string should match pattern"),
])
def test_damaged_provenance_is_refused_naming_the_case(corrections, change, expected):
    path = _damage(corrections, 1, change)
    with pytest.raises(RamsegInputError) as err:
        corrections.latest_cases("train")
    message = str(err.value)
    assert message.startswith(f"{path}: invalid correction provenance (") and expected in message, message
    assert "this corrected case cannot be used" in message


def test_a_round_refuses_a_case_with_broken_provenance_instead_of_dropping_it(tmp_path, tiny_model, corrections):
    path = corrections.case_dir(corrections.list_cases()[2]) / "provenance.json"  # the held-out case
    path.write_text("{ damaged")
    with pytest.raises(RamsegInputError, match="unreadable correction provenance") as err:
        _round(tiny_model, corrections, tmp_path / "out")
    assert str(err.value).startswith(str(path))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- 24: a TIFF of many tiny pages; 30: degenerate NIfTI and DICOM geometry -----------------------------

def test_a_tiff_of_many_tiny_pages_is_refused_quickly(tmp_path):
    import tifffile

    from napari_ramseg.io import read_image
    from napari_ramseg.io._tiff import MAX_TIFF_PAGES

    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as writer:
        for _ in range(MAX_TIFF_PAGES + 500):
            writer.write(np.zeros((1, 1), np.uint8), contiguous=False)
    start = time.perf_counter()
    with pytest.raises(RamsegInputError, match=f"TIFF holds {MAX_TIFF_PAGES + 500} pages; at most {MAX_TIFF_PAGES}"):
        read_image(path)
    assert time.perf_counter() - start < 5


def _nifti(path: Path, srow=None, pixdim=None, scode=2) -> Path:
    """A small volume whose sform rows (``srow``) or voxel sizes (``pixdim``, which the qform uses) are set
    as given, bypassing nibabel's own checks, as a hostile or broken file would hold them."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((8, 8, 3))
    header.set_data_dtype(np.float32)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=scode)
    if srow is not None:
        header["srow_x"], header["srow_y"], header["srow_z"] = srow
    if pixdim is not None:
        header["pixdim"][1:4] = pixdim
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.float32), None, header), str(path))
    return path


@pytest.mark.parametrize("kind", ["zero sform", "nan sform", "nan qform"])
def test_degenerate_nifti_geometry_is_refused_when_read(tmp_path, kind):
    from napari_ramseg.io import read_image

    if kind == "zero sform":
        path = _nifti(tmp_path / "z.nii.gz", srow=np.zeros((3, 4)))
    elif kind == "nan sform":
        path = _nifti(tmp_path / "n.nii.gz", srow=np.full((3, 4), np.nan))
    else:
        path = _nifti(tmp_path / "q.nii.gz", pixdim=np.nan, scode=0)
    with pytest.raises(RamsegInputError, match="NIfTI geometry is degenerate") as err:
        read_image(path)
    assert str(err.value).startswith(str(path))


def test_dicom_pixel_spacing_of_zero_is_refused_when_read(tmp_path):
    import pydicom

    from helpers import write_dicom_series
    from napari_ramseg.io import read_image

    files = write_dicom_series(tmp_path / "series", np.zeros((3, 8, 8), np.int16), np.eye(4))
    for path in files:
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = ["0", "0"]
        ds.save_as(path)
    with pytest.raises(RamsegInputError, match=r"PixelSpacing must be two positive sizes in mm, not \[0.0, 0.0\]"):
        read_image(tmp_path / "series")


# -- 33: --overwrite never suggested where it cannot help; a TIFF's mask keeps its shape; EXIF orientation -

def test_a_folder_in_the_way_is_named_as_such_not_as_a_file_to_overwrite(tmp_path):
    from napari_ramseg.io import write_image, write_labels

    (tmp_path / "mask.png").mkdir()
    (tmp_path / "copy.tif").mkdir()
    for write, path in ((write_labels, tmp_path / "mask.png"), (write_image, tmp_path / "copy.tif")):
        with pytest.raises(RamsegInputError, match="is a folder; give a file name") as err:
            write(path, np.zeros((4, 4), np.uint8))
        assert not isinstance(err.value, FileExistsError) and "overwrite" not in str(err.value)


def test_a_tiff_mask_keeps_the_shape_of_its_image_file(tmp_path):
    import tifffile

    from napari_ramseg.io import read_image, write_labels

    for shape in ((10, 1, 1), (10, 5, 1)):
        tifffile.imwrite(tmp_path / "scan.tif", np.zeros(shape, np.uint8))
        image = read_image(tmp_path / "scan.tif")
        mask = np.ones(image.spatial_shape, np.uint8)
        written = write_labels(tmp_path / "mask.tif", mask, like=image, overwrite=True)
        assert tifffile.imread(written).shape == shape


def test_exif_orientation_is_applied_as_displayed(tmp_path):
    from PIL import Image

    from napari_ramseg.io import read_image

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:5, :10] = 255  # a bright corner, top left as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    for name in ("photo.jpg", "photo.png"):
        image.save(tmp_path / name, exif=exif.tobytes())
        data = read_image(tmp_path / name)
        expected = np.asarray(image.transpose(Image.Transpose.ROTATE_270))
        assert data.array.shape == (40, 20, 3) and data.header["exif_orientation"] == 6
        assert np.abs(data.array.astype(int) - expected.astype(int)).max() < 40  # JPEG is lossy
