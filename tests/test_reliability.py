"""Issue 4: every class of bad input gets a correct result or one line naming the file, never a traceback.

Each test asserts the exact outcome: the exit status of ``ramseg``, the one stderr line and the file it
names, and what is (not) on disk afterwards. The tiny model of ``conftest.tiny_model`` (base width 4,
labels ``blob``) is the model under test; images are 32-48 pixels.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from helpers import make_synthetic_domains
from napari_ramseg import io as rio
from napari_ramseg.cli import main
from napari_ramseg.core.models import checkpoint as ckpt
from napari_ramseg.core.models.checkpoint import ModelMetadata, load_model, save_model
from napari_ramseg.core.config import ModelConfig, TrainConfig
from napari_ramseg.core.labels import LabelScheme
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.method.model import RamSegNet
from napari_ramseg.errors import RamsegInputError
from napari_ramseg.files import atomic_write, atomic_write_json

FORMATS = ("png", "jpg", "tif", "nii", "nii.gz")
RNG = np.random.default_rng(0)


def _ramseg(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "napari_ramseg", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "PYTHONIOENCODING": "utf-8"})


_PROGRESS = re.compile(r"^(train|predict|evaluate [^:]*): +(\d+it \[|\d+%\|)")


def _cli(capsys, *args) -> tuple[int, list[str]]:
    """Run ``ramseg`` in-process; (exit status, non-empty stderr lines other than tqdm progress bars).

    ``ramseg evaluate`` draws its progress bar before the work starts, so a refusal is preceded by
    the bar's line (see the report: the bar should start on the first case).
    """
    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    return rc, [line for line in err.splitlines() if line.strip() and not _PROGRESS.match(line)]


def _one_error_line(lines: list[str], path: Path | str) -> str:
    """Exactly one line, ``ramseg: error: <path>: ...``."""
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ramseg: error: {path}"), lines[0]
    return lines[0]


def _write(path: Path, fmt: str, array: np.ndarray) -> Path:
    if fmt in ("png", "jpg"):
        Image.fromarray(array).save(path)
    elif fmt == "tif":
        tifffile.imwrite(path, array)
    else:
        nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def _valid_file(folder: Path, fmt: str, name: str = "scan") -> Path:
    array = RNG.integers(0, 255, (48, 48, 3) if fmt in ("png", "jpg") else (40, 40, 4), dtype=np.uint8)
    if fmt.startswith("nii"):
        array = array.astype(np.float32)
    return _write(folder / f"{name}.{fmt}", fmt, array)


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in Path(folder).rglob("*") if ".tmp" in p.name], list(Path(folder).rglob("*"))


def _corrupt(path: Path, how: str) -> Path:
    blob = path.read_bytes()
    if how == "truncated":
        data = blob[: len(blob) // 2]
    elif how == "corrupt":  # the magic number survives, the rest is scrambled
        if path.name.endswith(".gz"):
            raw = bytearray(gzip.decompress(blob))
            raw[40:80] = bytes(range(200, 240))  # dim[] of the NIfTI header
            data = gzip.compress(bytes(raw))
        else:
            keep = 12
            data = blob[:keep] + bytes(RNG.integers(0, 256, len(blob) - keep, dtype=np.uint8))
    else:
        data = b""
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------ broken image files


@pytest.mark.parametrize("how", ["truncated", "corrupt", "empty"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_broken_file_is_refused_naming_it(tmp_path, fmt, how):
    path = _corrupt(_valid_file(tmp_path, fmt, "bad scan"), how)
    with pytest.raises(RamsegInputError) as err:
        rio.read_image(path)
    assert err.value.path == str(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    with pytest.raises(RamsegInputError, match="bad scan"):
        rio.read_mask(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_on_a_truncated_file_exits_2_with_one_line(tmp_path, capsys, tiny_model, fmt):
    path = _corrupt(_valid_file(tmp_path, fmt), "truncated")
    out = tmp_path / "out"
    rc, lines = _cli(capsys, "predict", "--model", tiny_model, "--input", path, "--output", out / "mask.tif",
                     "--device", "cpu")
    assert rc == 2
    line = _one_error_line(lines, path)
    assert "cannot read" in line and "truncated or corrupt" in line
    assert not (out / "mask.tif").exists()
    if out.exists():
        _no_temporaries(out)


def test_predict_subprocess_no_traceback_on_corrupt_nifti_in_unicode_folder(tmp_path, tiny_model):
    folder = tmp_path / "ダータ set"
    folder.mkdir()
    path = _corrupt(_valid_file(folder, "nii.gz", "Fall 1"), "truncated")
    proc = _ramseg("predict", "--model", tiny_model, "--input", path, "--output", folder / "seg.nii.gz",
                   "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"ramseg: error: {path}: cannot read NIfTI (truncated or corrupt?): "
        "Compressed file ended before the end-of-stream marker was reached"]
    assert sorted(p.name for p in folder.iterdir()) == ["Fall 1.nii.gz"]


def test_a_fifo_named_like_an_image_is_refused_not_read(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(RamsegInputError, match="pipe.png: is not a regular file"):
        rio.read_image(fifo)  # would block forever if opened


# ------------------------------------------------------------------------------ unsupported shapes


def test_unsupported_shapes_are_refused_naming_the_file(tmp_path):
    cases = {
        "t4.nii.gz": (lambda p: nib.save(nib.Nifti1Image(np.zeros((8, 8, 3, 2), np.float32), np.eye(4)), p),
                      "4D NIfTI"),
        "line.nii": (lambda p: nib.save(nib.Nifti1Image(np.zeros((8,), np.float32), np.eye(4)), p), "is not an image"),
        "cx.nii": (lambda p: nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.complex64), np.eye(4)), p),
                   "not supported"),
        "t4.tif": (lambda p: tifffile.imwrite(p, np.zeros((2, 3, 8, 8), np.uint8), photometric="minisblack"), "4D"),
        "rgbstack.tif": (lambda p: tifffile.imwrite(p, np.zeros((3, 8, 8, 3), np.uint8), photometric="rgb"),
                         "3D colour stacks"),
        "five.tif": (lambda p: tifffile.imwrite(p, np.zeros((8, 8, 5), np.uint8), photometric="minisblack",
                                                planarconfig="contig", extrasamples=[0] * 4), "5 samples"),
    }
    for name, (make, expected) in cases.items():
        make(tmp_path / name)
        with pytest.raises(RamsegInputError) as err:
            rio.read_image(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: ") and expected in str(err.value), (name, err.value)


def test_predict_refuses_a_4d_volume(tmp_path, capsys, tiny_model):
    path = tmp_path / "dwi scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3, 2), np.float32), np.eye(4)), path)
    rc, lines = _cli(capsys, "predict", "--model", tiny_model, "--input", path, "--output", tmp_path / "o.nii.gz",
                     "--device", "cpu")
    assert rc == 2
    assert "4D NIfTI is not supported (shape (16, 16, 3, 2)); give one 3D volume" in _one_error_line(lines, path)
    assert not (tmp_path / "o.nii.gz").exists()


# ------------------------------------------------------------------------- NaN, Inf, constant images


@pytest.mark.parametrize("name, array", [
    ("nan image.tif", np.where(np.eye(32, dtype=bool), np.nan, 1.0).astype(np.float32)),
    ("inf volume.nii.gz", np.where(RNG.random((32, 32, 3)) > 0.9, np.inf, 0.5).astype(np.float32)),
])
def test_predict_refuses_nan_and_inf_naming_the_file(tmp_path, capsys, tiny_model, name, array):
    path = tmp_path / name
    if name.endswith(".tif"):
        tifffile.imwrite(path, array)
    else:
        nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    out = tmp_path / "out" / f"mask{rio.suffix_of(path)}"
    rc, lines = _cli(capsys, "predict", "--model", tiny_model, "--input", path, "--output", out, "--device", "cpu")
    assert rc == 2
    assert _one_error_line(lines, path).endswith("image contains NaN or Inf values")
    assert not out.parent.exists()  # nothing written


def test_training_and_evaluation_refuse_a_nan_image(tmp_path, capsys, tiny_model):
    data = make_synthetic_domains(tmp_path / "data", cases=3, size=32)
    bad = data / "siteB" / "images" / "case1.tif"
    (data / "siteB" / "images" / "case1.png").unlink()
    tifffile.imwrite(bad, np.full((32, 32, 3), np.nan, np.float32), photometric="rgb")
    run = tmp_path / "run"
    rc, lines = _cli(capsys, "train", "--data", data, "--iterations", "1", "--size", "32", "--batch", "2",
                     "--base-width", "4", "--out", run, "--device", "cpu", "--quiet")
    assert rc == 2
    assert _one_error_line(lines, bad).endswith("image contains NaN or Inf values")
    assert not run.exists()  # refused before the run folder was made
    report = tmp_path / "report.json"
    rc, lines = _cli(capsys, "evaluate", "--model", tiny_model, "--data", data, "--domain", "siteB",
                     "--device", "cpu", "--json", report)
    assert rc == 2
    assert _one_error_line(lines, bad).endswith("image contains NaN or Inf values")
    assert not report.exists()


@pytest.mark.parametrize("name, array", [
    ("flat.png", np.full((40, 36), 128, np.uint8)),
    ("flat rgb.png", np.full((40, 36, 3), 7, np.uint8)),
    ("flat.tif", np.full((40, 36), -3.5, np.float32)),
    ("black.nii.gz", np.zeros((36, 40, 3), np.int16)),
])
def test_constant_images_give_a_valid_mask(tmp_path, capsys, tiny_model, name, array):
    path = tmp_path / name
    if name.endswith(".nii.gz"):
        nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    else:
        _write(path, "png" if name.endswith(".png") else "tif", array)
    image = rio.read_image(path)
    out = tmp_path / f"mask{rio.suffix_of(path)}"
    rc, lines = _cli(capsys, "predict", "--model", tiny_model, "--input", path, "--output", out, "--device", "cpu")
    assert rc == 0, lines
    mask = rio.read_mask(out)
    assert mask.shape == image.spatial_shape and mask.max() <= 1
    prediction = Predictor.from_path(tiny_model, device="cpu").predict(image.array, is_volume=image.is_volume)
    assert np.isfinite(prediction.probabilities).all() and np.isfinite(prediction.entropy).all()
    np.testing.assert_array_equal(prediction.labels, mask)


# ---------------------------------------------------------- RGBA, grey for RGB, 16-bit and float data


def test_alpha_grey_16bit_and_float_give_the_same_result_as_8bit_rgb(tmp_path, tiny_model):
    predictor = Predictor.from_path(tiny_model, device="cpu")
    grey = RNG.integers(20, 230, (40, 44), dtype=np.uint8)
    rgb = np.stack([grey, np.roll(grey, 3, 0), np.roll(grey, 5, 1)], -1)
    alpha = RNG.integers(0, 256, (40, 44, 1), dtype=np.uint8)

    def probs(name, array, **kw):
        path = tmp_path / name
        if name.endswith(".png"):
            Image.fromarray(array).save(path)
        else:
            tifffile.imwrite(path, array, **kw)
        image = rio.read_image(path)
        return predictor.predict(image.array, is_volume=image.is_volume)

    reference = probs("rgb.png", rgb)
    same = {
        "rgba.png": probs("rgba.png", np.concatenate([rgb, alpha], -1)),
        "rgb16.tif": probs("rgb16.tif", rgb.astype(np.uint16) * 257, photometric="rgb"),
        "rgbfloat.tif": probs("rgbfloat.tif", rgb.astype(np.float32) / 255, photometric="rgb"),
    }
    def assert_same(pred, ref, name):
        np.testing.assert_allclose(pred.probabilities, ref.probabilities, atol=1e-5, err_msg=name)
        clear = (np.abs(ref.probabilities - predictor.threshold) > 1e-4).all(axis=0)  # no ties at the threshold
        np.testing.assert_array_equal(pred.labels[clear], ref.labels[clear], err_msg=name)
        assert clear.mean() > 0.95

    for name, pred in same.items():
        assert_same(pred, reference, name)
    grey_ref = probs("grey rgb.png", np.stack([grey] * 3, -1))  # grey where RGB is expected
    for name, array in {"grey.png": grey, "grey16.png": grey.astype(np.uint16) * 257,
                        "greyfloat.tif": grey.astype(np.float64) / 255 - 0.5}.items():
        assert_same(probs(name, array), grey_ref, name)
    Image.fromarray(grey).convert("LA").save(tmp_path / "grey alpha.png")
    assert_same(predictor.predict(rio.read_image(tmp_path / "grey alpha.png").array), grey_ref, "grey alpha")


def test_predict_cli_writes_masks_for_odd_but_valid_images(tmp_path, capsys, tiny_model):
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a16.tif", RNG.integers(0, 60000, (30, 34), dtype=np.uint16))
    tifffile.imwrite(folder / "f64.tif", RNG.normal(size=(30, 34)))
    Image.fromarray(RNG.integers(0, 255, (30, 34, 4), dtype=np.uint8)).save(folder / "rgba.png")
    Image.fromarray(RNG.integers(0, 255, (30, 34), dtype=np.uint8)).save(folder / "grey.jpg")
    rc, lines = _cli(capsys, "predict", "--model", tiny_model, "--input", folder, "--output", tmp_path / "out",
                     "--device", "cpu")
    assert rc == 0, lines
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != "report.csv")
    assert written == ["a16.tif", "f64.tif", "grey.png", "rgba.png"]
    assert (tmp_path / "out" / "report.csv").read_text().count("\n") == 1 + len(written)  # a row per case
    for name in written:
        assert rio.read_mask(tmp_path / "out" / name).shape == (30, 34)


# ---------------------------------------------------------------------------------- masks that do not fit


def _eval(capsys, model, data, domain, report):
    return _cli(capsys, "evaluate", "--model", model, "--data", data, "--domain", domain, "--device", "cpu",
                "--json", report)


def test_evaluate_refuses_a_mask_of_another_size(tmp_path, capsys, tiny_model):
    data = make_synthetic_domains(tmp_path / "data", domains=("siteA",), cases=2, size=32)
    mask = data / "siteA" / "labels" / "case1.png"
    Image.fromarray(np.zeros((32, 30), np.uint8)).save(mask)
    rc, lines = _eval(capsys, tiny_model, data, "siteA", tmp_path / "r.json")
    assert rc == 2
    line = _one_error_line(lines, mask)
    assert "mask shape (32, 30) differs from image shape (32, 32)" in line
    assert not (tmp_path / "r.json").exists()


def test_evaluate_refuses_mask_values_outside_the_models_labels(tmp_path, capsys, tiny_model):
    data = make_synthetic_domains(tmp_path / "data", domains=("siteA",), cases=2, size=32)
    mask = data / "siteA" / "labels" / "case0.png"
    values = np.zeros((32, 32), np.uint8)
    values[:4, :4] = 2
    Image.fromarray(values).save(mask)
    rc, lines = _eval(capsys, tiny_model, data, "siteA", tmp_path / "r.json")
    assert rc == 2
    assert _one_error_line(lines, mask).endswith(
        "mask values 2 are outside 0..1 (labels: blob); the model's labels do not fit these masks")


def test_training_refuses_masks_outside_the_scheme_and_colour_masks(tmp_path, capsys):
    data = make_synthetic_domains(tmp_path / "data", domains=("siteA", "siteB"), cases=2, size=32)
    mask = data / "siteB" / "labels" / "case1.png"
    Image.fromarray(np.full((32, 32), 3, np.uint8)).save(mask)
    run = tmp_path / "run"
    args = ["train", "--data", data, "--iterations", "1", "--size", "32", "--base-width", "4", "--out", run,
            "--labels", "blob", "--device", "cpu", "--quiet"]
    rc, lines = _cli(capsys, *args)
    assert rc == 2 and "mask values 3 are outside 0..1 (labels: blob)" in _one_error_line(lines, mask)
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0] = 1
    Image.fromarray(colour).save(mask)
    rc, lines = _cli(capsys, *args)
    assert rc == 2 and "differing channels" in _one_error_line(lines, mask)
    assert not run.exists()


# ------------------------------------------------------------------------ empty folders, missing masks


def test_empty_folders(tmp_path, capsys, tiny_model):
    empty = tmp_path / "leer"
    empty.mkdir()
    rc, lines = _cli(capsys, "predict", "--model", tiny_model, "--input", empty, "--output", tmp_path / "o")
    assert rc == 2 and "no readable images" in _one_error_line(lines, empty)
    assert not (tmp_path / "o").exists()
    run = tmp_path / "run"
    train = ["train", "--iterations", "1", "--size", "32", "--out", run, "--device", "cpu", "--quiet", "--data"]
    rc, lines = _cli(capsys, *train, empty)
    assert rc == 2 and _one_error_line(lines, empty).endswith("dataset folder is empty")
    (empty / "siteA" / "images").mkdir(parents=True)
    (empty / "siteA" / "labels").mkdir()
    rc, lines = _cli(capsys, *train, empty)
    assert rc == 2 and _one_error_line(lines, empty / "siteA").endswith("domain folder holds no images")
    rc, lines = _cli(capsys, "evaluate", "--model", tiny_model, "--data", empty, "--domain", "siteA")
    assert rc == 2 and _one_error_line(lines, empty / "siteA").endswith("domain folder holds no images")
    assert not run.exists()


def test_images_without_masks(tmp_path, capsys, tiny_model):
    data = make_synthetic_domains(tmp_path / "data", domains=("siteA", "siteB"), cases=2, size=32)
    (data / "siteA" / "labels" / "case1.png").unlink()
    image = data / "siteA" / "images" / "case1.png"
    run = tmp_path / "run"
    rc, lines = _cli(capsys, "train", "--data", data, "--iterations", "1", "--size", "32", "--base-width", "4",
                     "--out", run, "--device", "cpu", "--quiet")
    assert rc == 2
    assert f"image has no mask: expected {data / 'siteA' / 'labels' / 'case1'}.png" in _one_error_line(lines, image)
    assert not run.exists()
    rc, lines = _eval(capsys, tiny_model, data, "siteA", tmp_path / "r.json")
    assert rc == 2 and "image has no mask" in _one_error_line(lines, image)
    # prediction needs no masks
    rc, lines = _cli(capsys, "predict", "--model", tiny_model, "--input", image.parent, "--output",
                     tmp_path / "pred", "--device", "cpu")
    assert rc == 0 and sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["case0.png", "case1.png", "report.csv"]


# ----------------------------------------------------------------------------- unicode and spaces


def test_train_predict_evaluate_under_unicode_and_space_paths(tmp_path, capsys):
    base = tmp_path / "ダータ set"
    data = make_synthetic_domains(base / "Daten mit Leerzeichen", domains=("site A", "サイトB"), cases=3, size=32)
    for domain in ("site A", "サイトB"):
        for sub in ("images", "labels"):
            (data / domain / sub / "case0.png").rename(data / domain / sub / "画像 0.png")
    run = base / "走る run"
    rc, lines = _cli(capsys, "train", "--data", data, "--iterations", "2", "--size", "32", "--batch", "2",
                     "--base-width", "4", "--out", run, "--device", "cpu", "--quiet", "--val-every", "1")
    assert rc == 0, lines
    model, meta = load_model(run)
    assert meta.domains == ["site A", "サイトB"]
    out = base / "予測 out"
    rc, lines = _cli(capsys, "predict", "--model", run, "--input", data / "サイトB" / "images", "--output", out,
                     "--device", "cpu")
    assert rc == 0, lines
    assert sorted(p.name for p in out.iterdir()) == ["case1.png", "case2.png", "report.csv", "画像 0.png"]
    report = base / "結果 report.json"
    rc, lines = _eval(capsys, run, data, "サイトB", report)
    assert rc == 0, lines
    cases = json.loads(report.read_text(encoding="utf-8"))["cases"]
    assert {c["case"] for c in cases} == {"画像 0", "case1", "case2"}
    _no_temporaries(base)


# ---------------------------------------------------------------------- models that do not fit the data


def _dofe(root: Path) -> Path:
    for split in ("train", "test"):
        for sub in ("image", "mask"):
            (root / "Domain1" / split / "ROIs" / sub).mkdir(parents=True)
        Image.fromarray(RNG.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            root / "Domain1" / split / "ROIs" / "image" / "g0001.png")
        mask = np.full((32, 32), 255, np.uint8)
        mask[8:24, 8:24] = 128
        mask[12:20, 12:20] = 0
        Image.fromarray(mask).save(root / "Domain1" / split / "ROIs" / "mask" / "g0001.png")
    return root


def test_a_vessel_model_is_refused_on_a_disc_cup_dataset(tmp_path, capsys, tiny_model):
    data = _dofe(tmp_path / "dofe")
    rc, lines = _eval(capsys, tiny_model, data, "Domain1", tmp_path / "r.json")
    assert rc == 2
    assert _one_error_line(lines, data).endswith(
        "the model predicts 1 label(s) (blob) but this dataset's masks hold 2 (disc, cup, per the DoFE layout); "
        "evaluate a model trained for these labels")
    # dataset.json declares the labels of a plain domains dataset
    domains = make_synthetic_domains(tmp_path / "dom", domains=("siteA",), cases=2, size=32)
    (domains / "dataset.json").write_text(json.dumps({"labels": {"names": ["disc", "cup"]}}))
    rc, lines = _eval(capsys, tiny_model, domains, "siteA", tmp_path / "r.json")
    assert rc == 2 and "disc, cup, per " in _one_error_line(lines, domains)
    assert not (tmp_path / "r.json").exists()


def _copy_model(src: Path, dst: Path, **changes) -> Path:
    dst.mkdir()
    (dst / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    meta = json.loads((src / "model.json").read_text())
    for dotted, value in changes.items():
        node = meta
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    (dst / "model.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("changes, expected", [
    ({"config__model__in_channels": 1}, "in_channels is 1, but napari-ramseg models take 3 input channels"),
    ({"config__model__in_channels": 4}, "in_channels is 4"),
    ({"config__model__in_channels": "x"}, "in_channels is 'x'"),
    ({"config__labels__names": "vessel"}, "config.labels.names must be a list of label names"),
    ({"config__labels__names": ["a", "a"]}, "repeats a name"),
    ({"config__model__base_width": 10 ** 6}, "model.base_width must be a whole number in 1..256"),
    ({"config__model__depth": 40}, "model.depth must be a whole number in 1..8"),
    ({"config__preprocess__size": 10 ** 6}, "preprocess.size must be a whole number in 16..8192"),
    ({"config__threshold": float("nan")}, "threshold must be a probability"),
    ({"source_domains": "siteA"}, "source_domains must be a list"),
])
def test_hostile_or_mismatched_model_json_is_refused(tmp_path, capsys, tiny_model, changes, expected):
    model = _copy_model(tiny_model, tmp_path / "model", **changes)
    with pytest.raises(RamsegInputError) as err:
        load_model(model)
    assert str(err.value).startswith(f"{model / 'model.json'}: invalid model metadata (") and expected in str(err.value)
    image = _valid_file(tmp_path, "png")
    rc, lines = _cli(capsys, "predict", "--model", model, "--input", image, "--output", tmp_path / "m.png")
    assert rc == 2 and expected in _one_error_line(lines, model / "model.json")
    assert not (tmp_path / "m.png").exists()


def test_weights_that_do_not_fit_model_json_name_the_mismatch(tmp_path, tiny_model):
    meta = ckpt.load_metadata(tiny_model)
    # a consistent one-channel model (weights and json agree) is still refused: it cannot take RGB or 2.5D input
    one = TrainConfig(labels=meta.config.labels, model=ModelConfig(in_channels=1, base_width=4))
    save_model(RamSegNet(one.model, one.labels, 2), ModelMetadata(one, ["a", "b"]), tmp_path / "one")
    with pytest.raises(RamsegInputError, match="in_channels is 1"):
        load_model(tmp_path / "one")
    # weights of a disc/cup model under the blob model.json
    two = TrainConfig(labels=LabelScheme(("disc", "cup")), model=ModelConfig(base_width=4))
    net = RamSegNet(two.model, two.labels, len(meta.domains))
    target = _copy_model(tiny_model, tmp_path / "swap")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(target / "model.safetensors"))
    with pytest.raises(RamsegInputError) as err:
        load_model(target)
    assert str(err.value).startswith(f"{target / 'model.safetensors'}: weights do not match the architecture")
    assert "the weights predict 2 channels, model.json's labels (blob, nested) need 1" in str(err.value)
    # first-layer weights for another channel count
    state = load_file(str(tiny_model / "model.safetensors"))
    state["encoder.0.0.weight"] = state["encoder.0.0.weight"][:, :1].contiguous()
    save_file(state, str(target / "model.safetensors"))
    with pytest.raises(RamsegInputError, match="the weights take 1 input channels, model.json says 3"):
        load_model(target)


# ------------------------------------------------------------------------------ pickles never run


class _Boom:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_pickle_model_via_the_cli_is_refused_without_running_it(tmp_path, tiny_model):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "shared model.pt"
    torch.save({"state_dict": _Boom(marker)}, evil)  # torch's zip format, code in data.pkl
    image = _valid_file(tmp_path, "png")
    proc = _ramseg("predict", "--model", evil, "--input", image, "--output", tmp_path / "m.png", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"ramseg: error: {evil}: pickle-based model files can run arbitrary code when loaded and are refused; "
        "use a napari-ramseg run folder or a .safetensors file with its .json"]
    assert not marker.exists() and not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("suffix", [".pth", ".ckpt", ".pkl", ".bin"])
def test_pickle_suffixes_are_refused_by_the_cli(tmp_path, capsys, suffix):
    marker = tmp_path / "PWNED"
    evil = tmp_path / f"model{suffix}"
    evil.write_bytes(pickle.dumps(_Boom(marker)))
    image = _valid_file(tmp_path, "png")
    for command in (["predict", "--input", image, "--output", tmp_path / "m.png"],
                    ["evaluate", "--data", tmp_path, "--domain", "x"]):
        rc, lines = _cli(capsys, command[0], "--model", evil, *command[1:])
        assert rc == 2 and "pickle-based model files" in _one_error_line(lines, evil)
    assert not marker.exists()


def test_a_pickle_disguised_as_safetensors_in_a_run_folder_is_not_run(tmp_path, capsys, tiny_model):
    marker = tmp_path / "PWNED"
    run = _copy_model(tiny_model, tmp_path / "run")
    torch.save(_Boom(marker), run / "model.safetensors")
    rc, lines = _cli(capsys, "predict", "--model", run, "--input", _valid_file(tmp_path, "png"),
                     "--output", tmp_path / "m.png")
    assert rc == 2 and "unreadable safetensors weights" in _one_error_line(lines, run / "model.safetensors")
    (run / "model.safetensors").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(RamsegInputError, match="unreadable safetensors"):
        load_model(run)
    assert not marker.exists()


# ------------------------------------------------------------------- atomic writes and interruptions


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_json(target, {"v": 1})

    def interrupted(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    with pytest.raises(ValueError):  # NaN is not strict JSON: refused before anything is renamed
        atomic_write_json(target, {"v": float("nan")})
    assert json.loads(target.read_text()) == {"v": 1} and len(list(tmp_path.iterdir())) == 1


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".resume.safetensors.{dead}.k1ll3d.tmp"
    stale.write_bytes(b"half a file")
    alive = tmp_path / f".resume.safetensors.{os.getppid()}.busy.tmp"  # a writer that still runs
    alive.write_bytes(b"in progress")
    other = tmp_path / f".model.json.{dead}.x.tmp"  # another file's temporary: not this write's business
    other.write_bytes(b"x")
    atomic_write(tmp_path / "resume.safetensors", lambda tmp: tmp.write_bytes(b"complete"))
    assert (tmp_path / "resume.safetensors").read_bytes() == b"complete"
    assert not stale.exists() and alive.exists() and other.exists()


def test_stale_temporaries_of_killed_label_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".mask.{dead}.ab12cd_3.tmp.png"
    other = tmp_path / f".mask.{dead}.{dead}.xyz.tmp.png"  # the temporary of "mask.<n>.png", not ours
    for p in (stale, other):
        p.write_bytes(b"partial")
    rio.write_labels(tmp_path / "mask.png", np.zeros((4, 4), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["mask.png", other.name])


def test_interrupted_label_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(path, labels, like):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setitem(rio._WRITERS, ".png", boom)
    with pytest.raises(KeyboardInterrupt):
        rio.write_labels(tmp_path / "mask.png", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command, expected", [
    # what a run folder holds is read from it (tests/test_interrupt.py: one that holds a resume state)
    (["train", "--data", "d", "--out", "my run"], "nothing was written to my run (it stopped before training began)"),
    (["train", "--data", "d"], "nothing was written (it stopped before training began)"),
    (["predict", "--input", "x.png", "--output", "y.png"], "every mask already written is complete"),
    (["evaluate", "--data", "d", "--domain", "A"], "nothing was written"),
])
def test_ctrl_c_exits_130_with_one_line(capsys, monkeypatch, command, expected):
    import napari_ramseg.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, command[0], interrupted)
    rc, lines = _cli(capsys, *command)
    assert rc == 130
    assert len(lines) == 1 and lines[0].startswith("ramseg: interrupted; ") and expected in lines[0]


def test_machine_failures_are_one_line_exit_1(capsys, monkeypatch):
    import napari_ramseg.cli as cli

    for exc in (OSError(28, "No space left on device", "/runs/x/model.safetensors"), MemoryError(),
                RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")):
        def failing(args, exc=exc):
            raise exc

        monkeypatch.setitem(cli.COMMANDS, "predict", failing)
        rc, lines = _cli(capsys, "predict", "--input", "x.png", "--output", "y.png")
        assert rc == 1 and len(lines) == 1 and lines[0].startswith("ramseg: error: "), lines

    def bug(args):
        raise RuntimeError("shape mismatch in conv")  # a real bug keeps its traceback

    monkeypatch.setitem(cli.COMMANDS, "predict", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["predict", "--input", "x.png", "--output", "y.png"])


@pytest.mark.parametrize("name, content, expected", [
    ("resume.json", "{broken", "resume.json: unreadable resume state (Expecting property name"),
    ("resume.json", json.dumps({"iteration": 3}), "resume.json: invalid resume state (missing config, domains"),
    ("resume.safetensors", "garbage", "resume.safetensors: unreadable resume weights"),
])
def test_damaged_resume_state_is_refused_naming_the_file(tmp_path, name, content, expected):
    """``resume.read_resume_state`` validates what ``ramseg train --resume`` will read."""
    from napari_ramseg.core.data.dataset import Sample
    from napari_ramseg.core.training.resume import read_resume_state
    from napari_ramseg.core.training.trainer import Trainer

    run = tmp_path / "run"
    cfg = TrainConfig(model=ModelConfig(base_width=4), iterations=4, device="cpu")
    images = {d: [Sample(np.zeros((3, 32, 32), np.float32), np.zeros((32, 32), np.uint8), d, f"{d}0")]
              for d in ("A", "B")}
    Trainer(cfg, ["A", "B"], images, run_dir=run).save_resume_state()
    assert read_resume_state(run)["iteration"] == 0
    (run / name).write_text(content)
    with pytest.raises(RamsegInputError) as err:
        read_resume_state(run)
    assert str(err.value).startswith(str(run / name)) and expected in str(err.value)
