"""The layout registry, and the RAM-DSIR prostate package (saml-npy) on a small generated copy."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from napari_ramseg.cli import build_parser, main
from napari_ramseg.core.data import dataset as D
from napari_ramseg.core.data import layouts
from napari_ramseg.core.labels import PROSTATE
from napari_ramseg.errors import RamsegInputError


def make_prostate_npy(root: Path, domains=("Domain1", "Domain2", "Domain3"), slices: int = 4, size: int = 40,
                      seed: int = 0) -> Path:
    """``<root>/DomainK/{image,mask}/<slice>.npy`` as the paper's package holds them: H x W x 3 float
    slices in [-1, 1] (a slice and its neighbours), H x W class-index masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for d, domain in enumerate(domains):
        (root / domain / "image").mkdir(parents=True, exist_ok=True)
        (root / domain / "mask").mkdir(parents=True, exist_ok=True)
        for i in range(slices):
            r = size // 6 + i
            mask = ((yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= r * r).astype(np.uint8)
            grey = 0.2 * d + 0.5 * mask + rng.normal(0, 0.1, (size, size))
            image = np.stack([grey, grey + 0.05, grey - 0.05], axis=-1)
            image = (2 * (image - image.min()) / (image.max() - image.min()) - 1).astype(np.float32)
            np.save(root / domain / "image" / f"Case{d}{i:02d}_slice_{i}.npy", image)
            np.save(root / domain / "mask" / f"Case{d}{i:02d}_slice_{i}.npy", mask.astype(np.int64))
    return root


@pytest.fixture()
def prostate_npy(tmp_path) -> Path:
    return make_prostate_npy(tmp_path / "prostate")


# ------------------------------------------------------------------------------------------ registry


def test_the_registry_is_the_one_list_of_formats():
    assert layouts.FORMATS == tuple(layouts.LAYOUTS) and "saml-npy" in layouts.FORMATS
    assert D.FORMATS == layouts.FORMATS
    for name, cls in layouts.LAYOUTS.items():
        layout = layouts.get(name)
        assert isinstance(layout, cls) and layout.name == name and layout.pattern
        assert layout.pattern in layouts.layouts_help()
    sub = build_parser()._subparsers._group_actions[0].choices  # the CLI's --format reads the registry
    for command in ("train", "evaluate"):
        fmt = next(a for a in sub[command]._actions if "--format" in a.option_strings)
        assert list(fmt.choices) == ["auto", *layouts.FORMATS]
    with pytest.raises(ValueError, match="format must be 'auto' or one of"):
        layouts.get("nifti-zoo")


def test_a_case_carries_its_layout(prostate_npy, tmp_path):
    ds = D.discover(prostate_npy)
    assert {c.layout for c in ds.cases} == {"saml-npy"}
    s = D.load_sample(ds.cases[0], ds.labels)  # no format passed along
    assert s.image.shape == (3, 40, 40) and s.mask.shape == (40, 40)
    assert D.Case(Path("a.png"), None, "A", "a").layout == "domains"  # hand-made cases: the native layout


# ---------------------------------------------------------------------------------------- saml-npy


def test_detect_and_discover(prostate_npy):
    assert D.detect_format(prostate_npy) == "saml-npy"
    ds = D.discover(prostate_npy)
    assert ds.format == "saml-npy" and ds.labels == PROSTATE and ds.splits_from is None
    assert ds.domains == ["Domain1", "Domain2", "Domain3"] and len(ds) == 12
    assert [c.name for c in ds.by_domain()["Domain2"]] == [f"Case1{i:02d}_slice_{i}" for i in range(4)]
    assert all(c.mask is not None and c.mask.parent.name == "mask" and c.split is None for c in ds.cases)
    assert D.declared_labels(prostate_npy, "saml-npy") == (PROSTATE, "the saml-npy layout")
    assert D.expand_slices(ds.cases) == ds.cases  # every file is one slice already
    ds = D.discover(prostate_npy, "saml-npy", ["Domain3", "Domain1"])
    assert ds.domains == ["Domain3", "Domain1"]


def test_loading_slices(prostate_npy):
    ds = D.discover(prostate_npy, domains=["Domain1"])
    case = ds.cases[1]
    raw_mask = np.load(case.mask)
    samples = D.load_samples(ds.cases, ds.labels)
    assert len(samples) == 4
    s = samples[1]
    assert s.image.dtype == np.float32 and s.image.shape == (3, 40, 40) and -1 <= s.image.min() <= s.image.max() <= 1
    np.testing.assert_array_equal(s.mask, raw_mask)
    assert s.mask.dtype == np.uint8 and s.slice_index is None and s.domain == "Domain1"
    # channels stay the three slices (not averaged, not reordered)
    assert not np.allclose(s.image[0], s.image[2])
    # a mask with the second prostate zone (2) counts it as prostate, as the saml layout does
    two = raw_mask.copy()
    two[two == 1] = 2
    np.save(case.mask, two)
    np.testing.assert_array_equal(D.load_sample(case, ds.labels).mask, raw_mask)
    # integer images work too
    np.save(case.image, (np.load(case.image) * 100 + 100).astype(np.uint16))
    assert D.load_sample(case, ds.labels).image.shape == (3, 40, 40)


def test_bad_files_are_one_line_naming_the_file(prostate_npy, tmp_path):
    d1 = prostate_npy / "Domain1"
    first = sorted((d1 / "image").iterdir())[0]
    mask = d1 / "mask" / first.name

    with pytest.raises(RamsegInputError, match="this is a single domain of .npy slices"):
        D.detect_format(d1)
    np.save(mask, np.zeros((40, 41), np.uint8))
    with pytest.raises(RamsegInputError, match=r"mask shape \(40, 41\) does not match"):
        D.load_sample(D.discover(prostate_npy).cases[0], PROSTATE)
    np.save(mask, np.full((40, 40), 7, np.uint8))
    with pytest.raises(D.MaskLabelsError, match=r"mask values 7 are outside 0..1"):
        D.load_sample(D.discover(prostate_npy).cases[0], PROSTATE)
    np.save(mask, np.full((40, 40), 0.5, np.float32))
    with pytest.raises(RamsegInputError, match="non-integer values"):
        D.load_sample(D.discover(prostate_npy).cases[0], PROSTATE)
    np.save(mask, np.zeros((40, 40), np.uint8))

    np.save(first, np.zeros((5, 40, 40), np.float32))  # channels-first: not the package's layout
    with pytest.raises(RamsegInputError, match=rf"{first.name}: expected an H x W x 3 slice"):
        D.load_sample(D.discover(prostate_npy).cases[0], PROSTATE)
    first.write_bytes(first.read_bytes()[:60])  # truncated
    with pytest.raises(RamsegInputError, match=rf"{first.name}: cannot read NumPy image"):
        D.load_sample(D.discover(prostate_npy).cases[0], PROSTATE)
    with open(first, "wb") as fh:  # an object array would need unpickling: refused, never run
        np.lib.format.write_array(fh, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RamsegInputError, match=rf"{first.name}: cannot read NumPy image"):
        D.load_sample(D.discover(prostate_npy).cases[0], PROSTATE)
    first.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(RamsegInputError, match=rf"{first.name}: cannot read NumPy image"):
        D.load_sample(D.discover(prostate_npy).cases[0], PROSTATE)

    mask.unlink()
    with pytest.raises(RamsegInputError, match=rf"{first.name}: image has no mask: expected .*mask.*\.npy"):
        D.discover(prostate_npy)
    assert D.discover(prostate_npy, require_masks=False).cases[0].mask is None
    np.save(d1 / "mask" / "ghost.npy", np.zeros((4, 4), np.uint8))
    with pytest.raises(RamsegInputError, match=r"ghost.npy: mask has no image"):
        D.discover(prostate_npy, require_masks=False)


def test_train_and_evaluate_through_the_cli(prostate_npy, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(prostate_npy), "--format", "saml-npy", "--target", "Domain3",
                 "--iterations", "2", "--size", "32", "--batch", "4", "--base-width", "4", "--val-every", "2",
                 "--device", "cpu", "--precision", "fp32", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "model.json").read_text())
    assert meta["source_domains"] == ["Domain1", "Domain2"] and meta["label_scheme"]["names"] == ["prostate"]
    assert meta["data"]["format"] == "saml-npy" and meta["data"]["target_domain"] == "Domain3"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(prostate_npy), "--domain", "Domain3",
                 "--format", "saml-npy", "--device", "cpu", "--precision", "fp32"]) == 0
    assert capsys.readouterr().out.startswith("prostate: dice ")
