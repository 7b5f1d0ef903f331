"""The corrections project: cases saved with provenance, read back, never overwritten; a fixed split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_ramseg.core.labels import LabelScheme
from napari_ramseg.core.finetune.corrections import CorrectionStore, split_for_order
from napari_ramseg.errors import RamsegInputError

BLOB = LabelScheme(("blob",))


def _case(seed: int, shape=(20, 24), rgb=True):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (*shape, 3) if rgb else shape, dtype=np.uint8)
    original = (rng.random(shape) > 0.6).astype(np.uint8)
    final = original.copy()
    final[:4] = 1
    return image, original, final


def test_saved_case_reloads_with_provenance(tmp_path, tiny_model):
    store = CorrectionStore(tmp_path / "project")
    image, original, final = _case(0)
    case_id = store.save(image, original, final, tiny_model, "scan 01.png", {"note": "left eye", "bad": object()})
    folder = tmp_path / "project" / "cases" / case_id
    assert sorted(p.name for p in folder.iterdir()) == ["final.tif", "image.tif", "original.tif", "provenance.json"]
    case = CorrectionStore(tmp_path / "project").load(case_id)  # a fresh store: only the disk counts
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.original, original)
    np.testing.assert_array_equal(case.final, final)
    prov = case.provenance
    meta = json.loads((tiny_model / "model.json").read_text())
    import hashlib

    assert prov["model"]["model_json_sha256"] == hashlib.sha256((tiny_model / "model.json").read_bytes()).hexdigest()
    assert prov["model"]["path"] == str(tiny_model.resolve())
    assert prov["model"]["package_version"] == meta["package_version"]
    assert prov["labels"] == {"names": ["blob"], "kind": "nested"}
    assert prov["image_name"] == "scan 01.png" and prov["who"] and prov["saved_at"].endswith("+00:00")
    assert prov["image_shape"] == [20, 24, 3] and prov["mask_shape"] == [20, 24]
    assert prov["changed_pixels"] == int((original != final).sum())
    assert prov["image_meta"] == {"note": "left eye"}  # what JSON cannot hold is left out
    assert set(prov["tags"]) == {"original", "final"}
    assert not [p for p in (tmp_path / "project" / "cases").iterdir() if p.name.startswith(".")]


def test_volume_with_affine_is_saved_as_nifti(tmp_path):
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(5, 16, 12)).astype(np.float32)
    mask = (volume > 0.5).astype(np.uint8)
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    store = CorrectionStore(tmp_path)
    case_id = store.save(volume, mask, mask, None, "prostate", {"affine": affine}, labels=BLOB)
    assert (tmp_path / "cases" / case_id / "final.nii.gz").exists()
    case = store.load(case_id)
    assert case.is_volume
    np.testing.assert_allclose(case.image, volume)
    np.testing.assert_array_equal(case.final, mask)
    np.testing.assert_allclose(case.affine, affine)
    import nibabel as nib

    np.testing.assert_allclose(nib.load(str(tmp_path / "cases" / case_id / "final.nii.gz")).affine, affine)


def test_saving_again_makes_a_new_revision(tmp_path):
    store = CorrectionStore(tmp_path)
    image, original, final = _case(2)
    first = store.save(image, original, final, None, "a", labels=BLOB)
    better = final.copy()
    better[-3:] = 0
    second = store.save(image, original, better, None, "a", labels=BLOB)
    assert first != second and second.endswith("-r2")
    np.testing.assert_array_equal(store.load(first).final, final)  # never overwritten
    np.testing.assert_array_equal(store.load(second).final, better)
    assert store.list_cases() == [first, second]
    assert store.latest_cases() == [second]
    assert store.find_image(image) == [first, second]


def test_split_is_fixed_per_image_and_never_reassigned(tmp_path):
    assert [split_for_order(n) for n in range(1, 16)] == (
        ["train", "train", "val"] + ["train"] * 6 + ["val"] + ["train"] * 4 + ["val"])
    store = CorrectionStore(tmp_path)
    ids = [store.save(*_case(10 + i), None, f"img{i}", labels=BLOB) for i in range(4)]
    before = store.splits()
    assert [before[c] for c in ids] == ["train", "train", "val", "train"]
    # a revision of the held-out image stays held out; more images do not move earlier ones
    image, original, final = _case(12)
    revision = store.save(image, original, np.zeros_like(final), None, "img2", labels=BLOB)
    more = [store.save(*_case(20 + i), None, f"more{i}", labels=BLOB) for i in range(7)]
    after = store.splits()
    assert all(after[c] == before[c] for c in ids)
    assert after[revision] == "val"
    assert after[more[-2]] == "val" and after[more[-1]] == "train"  # images 10 and 11
    assert store.latest_cases("val") == [revision, more[-2]]
    # split.json lost: rebuilt identically from the copies in provenance.json
    (tmp_path / "split.json").unlink()
    assert CorrectionStore(tmp_path).splits() == after


def test_bad_corrections_are_refused_with_plain_messages(tmp_path, tiny_model):
    store = CorrectionStore(tmp_path)
    image, original, final = _case(3)
    with pytest.raises(RamsegInputError, match="does not match the image"):
        store.save(image, original[:10], final[:10], tiny_model, "x")
    with pytest.raises(RamsegInputError, match="differ in shape"):
        store.save(image, original, final[:10], tiny_model, "x")
    with pytest.raises(RamsegInputError, match="label 2.*1..1 \\(1 blob\\)"):
        store.save(image, original, final * 2, tiny_model, "x")
    bad = image.astype(np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(RamsegInputError, match="NaN"):
        store.save(bad, original, final, tiny_model, "x")
    with pytest.raises(RamsegInputError, match="model not found"):
        store.save(image, original, final, tmp_path / "missing-model", "x")
    assert store.list_cases() == []
