from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_ramseg.core.data import dataset as D
from napari_ramseg.core.labels import LabelScheme, OPTIC_DISC_CUP, PROSTATE, VESSELS
from napari_ramseg.errors import RamsegInputError

RNG = np.random.default_rng(0)


def _save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_domains(root: Path, spec: dict[str, list[str]], size=(12, 10), max_label=1, img_ext=".png") -> Path:
    """<root>/<domain>/images/<case><ext> + labels/<case>.png with values 0..max_label."""
    for domain, names in spec.items():
        for name in names:
            img = RNG.integers(0, 256, (*size, 3), dtype=np.uint8)
            _save_png(root / domain / "images" / f"{name}{img_ext}", img)
            mask = np.zeros(size, np.uint8)
            mask[2:6, 2:6] = max_label
            mask[3:5, 3:5] = 255 if max_label == 255 else 1
            _save_png(root / domain / "labels" / f"{name}.png", mask)
    return root


def make_saml(root: Path, sites: dict[str, list[str]], shape=(10, 8, 4)) -> Path:
    """<root>/<site>/<case>.nii.gz + <case>_segmentation.nii.gz (nibabel order X, Y, Z)."""
    for site, cases in sites.items():
        (root / site).mkdir(parents=True, exist_ok=True)
        for i, case in enumerate(cases):
            vol = RNG.random(shape).astype(np.float32) * 100
            seg = np.zeros(shape, np.uint8)
            seg[2:6, 2:5, 1:3] = 1
            seg[3, 3, 2] = 2
            nib.save(nib.Nifti1Image(vol, np.diag([0.6, 0.6, 3.0, 1])), root / site / f"{case}.nii.gz")
            seg_name = f"{case}_Segmentation.nii.gz" if i % 2 else f"{case}_segmentation.nii.gz"
            nib.save(nib.Nifti1Image(seg, np.diag([0.6, 0.6, 3.0, 1])), root / site / seg_name)
    return root


# --------------------------------------------------------------------------------------- detection


def test_detect_format_real(shared_data):
    assert D.detect_format(shared_data / "vessels") == "domains"
    assert D.detect_format(shared_data / "fundus") == "domains"
    assert D.detect_format(shared_data / "fundus_dofe_layout") == "dofe"


def test_detect_format_saml_and_errors(tmp_path):
    assert D.detect_format(make_saml(tmp_path / "saml", {"RUNMC": ["Case00"]})) == "saml"
    with pytest.raises(RamsegInputError, match="nope: dataset folder not found"):
        D.detect_format(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RamsegInputError, match="empty: dataset folder is empty"):
        D.detect_format(tmp_path / "empty")
    (tmp_path / "odd" / "x").mkdir(parents=True)
    with pytest.raises(RamsegInputError, match="no known dataset layout"):
        D.detect_format(tmp_path / "odd")
    make_domains(tmp_path / "dom", {"A": ["a"]})
    with pytest.raises(RamsegInputError, match="single domain folder"):
        D.detect_format(tmp_path / "dom" / "A")


# ----------------------------------------------------------------------------------------- domains


def test_discover_real_vessels(shared_data):
    ds = D.discover(shared_data / "vessels", domains=["STARE"])
    assert ds.format == "domains" and ds.domains == ["STARE"] and len(ds) == 18
    assert ds.labels == LabelScheme(("label_1",), "nested")  # inferred from the masks
    ds = D.discover(shared_data / "vessels", labels=VESSELS)  # no mask scan with an explicit scheme
    assert ds.domains == ["CHASE_DB1", "HRF", "STARE"] and len(ds.by_domain()["HRF"]) == 42
    assert len(ds.by_domain()["CHASE_DB1"]) == 28
    assert all(c.mask is not None and c.mask.parent.name == "labels" for c in ds.cases)  # fov/ ignored
    hrf = ds.by_domain()["HRF"][0]
    assert hrf.image.suffix == ".jpg" and hrf.mask.name == f"{hrf.name}.png"
    s = D.load_sample(ds.by_domain()["STARE"][0], ds.labels, ds.format)
    assert s.image.shape == (3, 605, 700) and s.image.dtype == np.float32 and s.mask.dtype == np.uint8
    assert set(np.unique(s.mask)) == {0, 1}


def test_discover_domains_synthetic(tmp_path):
    root = make_domains(tmp_path / "d", {"B": ["b2", "b1"], "A": ["a1"]}, max_label=2)
    (root / "A" / "fov").mkdir()
    _save_png(root / "A" / "fov" / "a1.png", np.ones((12, 10), np.uint8))
    ds = D.discover(root)
    assert ds.domains == ["A", "B"] and [c.name for c in ds.cases] == ["a1", "b1", "b2"]
    assert ds.labels == LabelScheme(("label_1", "label_2"), "nested")
    assert all(c.split is None for c in ds.cases)
    ds = D.discover(root, domains=["B", "A"], labels=OPTIC_DISC_CUP)
    assert ds.domains == ["B", "A"] and ds.labels == OPTIC_DISC_CUP
    assert [c.domain for c in ds.cases] == ["B", "B", "A"]
    with pytest.raises(RamsegInputError, match=r"domain 'C' not found; available: A, B"):
        D.discover(root, domains=["C"])


def test_dataset_json(tmp_path):
    root = make_domains(tmp_path / "d", {"A": ["a1", "a2", "a3"], "B": ["b1"]}, max_label=2)
    spec = {
        "labels": {"names": ["disc", "cup"], "kind": "nested"},
        "splits": {"train": ["A/a1"], "val": ["A/a2"], "test": ["A/a3"]},
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    ds = D.discover(root, split=None)
    assert ds.labels == OPTIC_DISC_CUP and ds.splits_from == "dataset.json"
    assert {c.key: c.split for c in ds.cases} == {"A/a1": "train", "A/a2": "val", "A/a3": "test", "B/b1": None}
    assert [c.key for c in D.discover(root).cases] == ["A/a1", "A/a2", "B/b1"]
    assert [c.key for c in D.discover(root, split="test").cases] == ["A/a3"]
    train, val = D.split_train_val(ds.cases, 0.5, seed=0)
    assert [c.key for c in val] == ["A/a2"] and [c.key for c in train] == ["A/a1", "B/b1"]

    (root / "dataset.json").write_text(json.dumps({"splits": {"train": ["A/zzz"]}}))
    with pytest.raises(RamsegInputError, match=r"dataset.json: .*'A/zzz'"):
        D.discover(root)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(RamsegInputError, match="dataset.json: not valid JSON"):
        D.discover(root)
    (root / "dataset.json").write_text(json.dumps({"labels": {"names": ["p"], "kind": "weird"}}))
    with pytest.raises(RamsegInputError, match="dataset.json: bad \"labels\""):
        D.discover(root)


def test_pairing_errors(tmp_path):
    root = make_domains(tmp_path / "d", {"A": ["a1", "a2"]})
    (root / "A" / "labels" / "a2.png").unlink()
    with pytest.raises(RamsegInputError, match=r"a2.png: image has no mask"):
        D.discover(root)
    ds = D.discover(root, require_masks=False)
    assert [c.mask is None for c in ds.cases] == [False, True]
    assert D.load_sample(ds.cases[1], VESSELS).mask is None

    _save_png(root / "A" / "labels" / "ghost.png", np.zeros((12, 10), np.uint8))
    with pytest.raises(RamsegInputError, match=r"ghost.png: mask has no image"):
        D.discover(root, require_masks=False)
    (root / "A" / "labels" / "ghost.png").unlink()

    Image.fromarray(np.zeros((12, 10), np.uint8)).save(root / "A" / "labels" / "a2.jpg")
    with pytest.raises(RamsegInputError, match=r"a2.jpg: masks must be PNG, TIFF or NIfTI"):
        D.discover(root)
    (root / "A" / "labels" / "a2.jpg").unlink()

    _save_png(root / "A" / "images" / "a1.tif", np.zeros((12, 10), np.uint8))
    with pytest.raises(RamsegInputError, match="two image files share the name 'a1'"):
        D.discover(root, require_masks=False)


def test_load_sample_validation(tmp_path):
    root = make_domains(tmp_path / "d", {"A": ["ok", "small", "bad", "nan"]})
    _save_png(root / "A" / "labels" / "small.png", np.zeros((5, 5), np.uint8))
    bad = np.zeros((12, 10), np.uint8)
    bad[0, 0], bad[0, 1] = 3, 7
    _save_png(root / "A" / "labels" / "bad.png", bad)
    (root / "A" / "images" / "nan.png").unlink()
    img = np.ones((12, 10), np.float32)
    img[1, 1] = np.nan
    tifffile.imwrite(root / "A" / "images" / "nan.tif", img)
    ds = D.discover(root, labels=VESSELS)
    cases = {c.name: c for c in ds.cases}

    s = D.load_sample(cases["ok"], ds.labels, ds.format)
    assert s.image.shape == (3, 12, 10) and s.mask.shape == (12, 10) and s.domain == "A" and s.name == "ok"
    assert -1 <= s.image.min() and s.image.max() <= 1

    with pytest.raises(RamsegInputError) as err:
        D.load_sample(cases["small"], ds.labels, ds.format)
    msg = str(err.value)
    assert "small.png" in msg and str(cases["small"].image) in msg and "(5, 5)" in msg and "(12, 10)" in msg

    with pytest.raises(RamsegInputError, match=r"bad.png: mask values 3, 7 are outside 0..1"):
        D.load_sample(cases["bad"], ds.labels, ds.format)
    with pytest.raises(RamsegInputError, match=r"nan.tif: image contains NaN or Inf values"):
        D.load_sample(cases["nan"], ds.labels, ds.format)


def test_binary_255_masks_read_as_one(tmp_path):
    root = make_domains(tmp_path / "d", {"A": ["a"]}, max_label=255)
    ds = D.discover(root)
    assert ds.labels.num_classes == 1
    assert set(np.unique(D.load_sample(ds.cases[0], ds.labels).mask)) == {0, 1}


def test_unicode_and_space_paths(tmp_path):
    root = make_domains(tmp_path / "Daten mit Leerzeichen ü", {"Domäne 眼": ["Fall 1", "Fall 2"]})
    ds = D.discover(root)
    assert ds.domains == ["Domäne 眼"] and [c.name for c in ds.cases] == ["Fall 1", "Fall 2"]
    assert D.load_sample(ds.cases[0], ds.labels).mask.shape == (12, 10)


# -------------------------------------------------------------------------------------------- DoFE


def test_dofe_real_conversion(shared_data):
    root = shared_data / "fundus_dofe_layout"
    ds = D.discover(root)
    assert ds.format == "dofe" and ds.labels == OPTIC_DISC_CUP and ds.domains == ["Domain1", "Domain3", "Domain4"]
    assert len(ds) == 3 and all(c.split == "train" for c in ds.cases)
    assert len(D.discover(root, split="test")) == 3 and len(D.discover(root, split=None)) == 6
    case = ds.cases[0]
    raw = np.asarray(Image.open(case.mask))[..., 0]
    s = D.load_sample(case, ds.labels, ds.format)
    assert s.image.shape == (3, 800, 800) and s.mask.shape == (800, 800)
    np.testing.assert_array_equal(s.mask == 0, raw == 255)
    np.testing.assert_array_equal(s.mask == 1, raw == 128)
    np.testing.assert_array_equal(s.mask == 2, raw == 0)
    assert (s.mask == 2).any() and (s.mask == 1).any()
    # nested scheme: the cup lies inside the disc
    disc = s.mask >= 1
    assert disc.sum() > (s.mask == 2).sum()


def test_dofe_synthetic_missing_mask(tmp_path):
    roi = tmp_path / "dofe" / "Domain2" / "train" / "ROIs"
    _save_png(roi / "image" / "x.png", np.zeros((4, 4, 3), np.uint8))
    (roi / "mask").mkdir()
    with pytest.raises(RamsegInputError, match=r"x.png: image has no mask"):
        D.discover(tmp_path / "dofe")


# -------------------------------------------------------------------------------------------- SAML


def test_saml_synthetic(tmp_path):
    root = make_saml(tmp_path / "saml", {"RUNMC": ["Case00", "Case01"], "BMC": ["Case00"]})
    ds = D.discover(root)
    assert ds.format == "saml" and ds.labels == PROSTATE and ds.domains == ["BMC", "RUNMC"]
    assert [(c.domain, c.name) for c in ds.cases] == [("BMC", "Case00"), ("RUNMC", "Case00"), ("RUNMC", "Case01")]
    assert ds.cases[2].mask.name == "Case01_Segmentation.nii.gz"
    samples = D.load_volume_samples(ds.cases[0], ds.labels)
    assert len(samples) == 4 and [s.slice_index for s in samples] == [0, 1, 2, 3]
    assert samples[0].image.shape == (3, 8, 10) and samples[0].mask.shape == (8, 10)
    assert all(set(np.unique(s.mask)) <= {0, 1} for s in samples)  # label 2 counts as 1
    assert samples[2].mask[3, 3] == 1
    # slices of 2.5D: channel 1 is the slice itself, channel 0 the previous (clamped)
    np.testing.assert_array_equal(samples[0].image[0], samples[0].image[1])
    np.testing.assert_array_equal(samples[1].image[0], samples[0].image[1])

    sliced = D.expand_slices(ds.cases)
    assert len(sliced) == 12 and sliced[5].slice_index == 1 and sliced[5].name == "Case00"
    one = D.load_sample(sliced[1], ds.labels, ds.format)
    np.testing.assert_array_equal(one.image, samples[1].image)
    np.testing.assert_array_equal(one.mask, samples[1].mask)
    assert len(D.load_samples(ds.cases, ds.labels, ds.format)) == 12
    with pytest.raises(RamsegInputError, match="3D volume"):
        D.load_sample(ds.cases[0], ds.labels, ds.format)

    (root / "BMC" / "Case00_segmentation.nii.gz").unlink()
    with pytest.raises(RamsegInputError, match=r"Case00.nii.gz: volume has no mask"):
        D.discover(root)
    (root / "BMC" / "Case00.nii.gz").unlink()
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), root / "BMC" / "Case05_segmentation.nii.gz")
    with pytest.raises(RamsegInputError, match=r"Case05_segmentation.nii.gz: segmentation has no image"):
        D.discover(root)


def test_saml_real_volume(shared_data, tmp_path):
    src = shared_data / "prostate_volume"
    if not (src / "Case00.nii.gz").exists():
        pytest.skip("Case00 not available")
    site = tmp_path / "saml" / "PROMISE12"
    site.mkdir(parents=True)
    for f in ("Case00.nii.gz", "Case00_segmentation.nii.gz"):
        shutil.copy(src / f, site / f)
    ds = D.discover(tmp_path / "saml")
    samples = D.load_volume_samples(ds.cases[0], ds.labels)
    assert len(samples) == 64 and samples[0].image.shape == (3, 128, 128)
    assert sum(int(s.mask.sum()) for s in samples) > 0


def test_volume_mask_mismatch(tmp_path):
    root = make_saml(tmp_path / "saml", {"S": ["Case00"]})
    nib.save(nib.Nifti1Image(np.zeros((10, 8, 3), np.uint8), np.eye(4)), root / "S" / "Case00_segmentation.nii.gz")
    ds = D.discover(root)
    with pytest.raises(RamsegInputError, match=r"Case00_segmentation.nii.gz: mask shape \(3, 8, 10\) does not match"):
        D.load_volume_samples(ds.cases[0], ds.labels)


# ------------------------------------------------------------------------------------------- splits


def _cases(spec: dict[str, int]) -> list[D.Case]:
    return [
        D.Case(Path(f"/x/{d}/{i}.png"), None, d, f"case{i:02d}") for d, n in spec.items() for i in range(n)
    ]


def test_split_train_val_deterministic():
    cases = _cases({"A": 10, "B": 5, "C": 1})
    train, val = D.split_train_val(cases, 0.2, seed=3)
    assert val == D.split_train_val(cases, 0.2, seed=3)[1]
    assert {c.key for c in val} == {c.key for c in D.split_train_val(list(reversed(cases)), 0.2, seed=3)[1]}
    by = {d: [c for c in val if c.domain == d] for d in "ABC"}
    assert len(by["A"]) == 2 and len(by["B"]) == 1 and by["C"] == []
    assert len(train) + len(val) == len(cases) and not {c.key for c in train} & {c.key for c in val}
    seeds = {frozenset(c.key for c in D.split_train_val(cases, 0.2, seed=s)[1]) for s in range(6)}
    assert len(seeds) > 1
    assert D.split_train_val(cases, 0.0, seed=0) == (cases, [])
    with pytest.raises(ValueError):
        D.split_train_val(cases, 1.0)


def test_split_identical_across_processes():
    code = (
        "from pathlib import Path; from napari_ramseg.core.data import dataset as D;"
        "cases=[D.Case(Path('x'),None,d,f'c{i}') for d in ('A','Bee') for i in range(9)];"
        "print(sorted(c.key for c in D.split_train_val(cases,0.3,7)[1]))"
    )
    outs = set()
    for hashseed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert len(outs) == 1


def test_split_keeps_volume_slices_together_and_drops_test():
    assert D.expand_slices([]) == []
    vols = [D.Case(Path("v"), None, "S", f"Case{i}", None, j) for i in range(4) for j in range(3)]
    vols.append(D.Case(Path("t"), None, "S", "CaseT", "test"))
    train, val = D.split_train_val(vols, 0.25, seed=0)
    assert len(val) == 3 and len({c.name for c in val}) == 1
    assert {c.name for c in train}.isdisjoint({c.name for c in val})
    assert all(c.split != "test" for c in train + val)
