"""napari_io: the NIfTI reader and label writers; the sample data; the npe2 manifest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_ramseg.plugin import napari_io

OBLIQUE = np.array([[0.0, -0.8, 0.1, 12.0],
                    [1.2, 0.0, 0.0, -30.5],
                    [0.0, 0.05, 2.5, 7.25],
                    [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture
def synthetic_nifti(tmp_path) -> Path:
    """A 6 x 20 x 24 (Z, Y, X) volume with an oblique affine and spacing (x 1.2, y ~0.8, z ~2.5)."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    data_xyz = rng.normal(100, 20, (24, 20, 6)).astype(np.float32)
    data_xyz[6:18, 5:15, 1:5] += 200
    path = tmp_path / "scan.nii.gz"
    img = nib.Nifti1Image(data_xyz, OBLIQUE)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def test_reader_refuses_other_files():
    assert napari_io.get_nifti_reader("image.png") is None
    assert napari_io.get_nifti_reader(["a.nii.gz", "b.tif"]) is None
    assert napari_io.get_nifti_reader("a.NII.GZ") is napari_io.read_nifti_layers


def test_reader_puts_spacing_in_scale_and_affine_in_metadata(synthetic_nifti):
    import nibabel as nib

    reader = napari_io.get_nifti_reader(str(synthetic_nifti))
    [(data, meta, kind)] = reader(str(synthetic_nifti))
    assert kind == "image" and meta["name"] == "scan"
    assert data.shape == (6, 20, 24)  # (Z, Y, X)
    zooms = nib.load(str(synthetic_nifti)).header.get_zooms()
    np.testing.assert_allclose(meta["scale"], zooms[::-1], rtol=1e-5)
    np.testing.assert_allclose(meta["metadata"]["affine"], OBLIQUE)
    assert meta["metadata"]["nifti_header"]["format"] == "nifti"
    assert meta["metadata"]["source_path"] == str(synthetic_nifti)
    np.testing.assert_allclose(meta["metadata"]["spacing"], meta["scale"])  # written where the docks read it


def test_mri_opens_with_percentile_contrast_not_min_max(tmp_path, make_napari_viewer):
    """A long bright tail (as in MRI) must not push the anatomy into the bottom of the grey range."""
    import nibabel as nib

    rng = np.random.default_rng(1)
    data_xyz = rng.normal(600, 150, (32, 32, 8)).clip(0).astype(np.float32)
    data_xyz[0, 0, :] = 9634.0  # a few hot voxels
    path = tmp_path / "mri.nii.gz"
    nib.save(nib.Nifti1Image(data_xyz, np.eye(4)), str(path))
    [(data, meta, _)] = napari_io.read_nifti_layers(str(path))
    lo, hi = meta["contrast_limits"]
    np.testing.assert_allclose((lo, hi), np.percentile(data, (0.5, 99.5)), rtol=1e-5)
    assert hi < 2000 < float(data.max())
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-ramseg")
    np.testing.assert_allclose(layer.contrast_limits, (lo, hi), rtol=1e-5)


def test_flat_volume_keeps_napari_contrast():
    assert napari_io.percentile_contrast_limits(np.zeros((3, 4, 4), np.float32)) is None
    assert napari_io.percentile_contrast_limits(np.full((3, 4, 4), np.nan, np.float32)) is None


def test_corrupt_nifti_is_a_notification_not_a_crash(tmp_path, notifications):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 definitely not a volume")
    layers = napari_io.read_nifti_layers(str(bad))
    assert layers == [(None,)]  # napari's "nothing to add", so napari raises nothing on top
    [message] = notifications()
    assert "broken.nii.gz" in message and "NIfTI" in message and "\n" not in message


def test_nifti_writer_restores_the_affine(synthetic_nifti, tmp_path):
    import nibabel as nib

    [(data, meta, _)] = napari_io.read_nifti_layers(str(synthetic_nifti))
    labels = (data > 200).astype(np.uint8)
    out = tmp_path / "labels.nii.gz"
    assert napari_io.write_labels_nifti(str(out), labels, meta) == [str(out)]
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, OBLIQUE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(saved.dataobj).T, labels)
    # the save dialog already confirmed overwriting: a second save replaces the file
    assert napari_io.write_labels_nifti(str(out), labels * 0, meta) == [str(out)]
    assert np.asarray(nib.load(str(out)).dataobj).max() == 0


def test_nifti_writer_without_affine_uses_the_scale(tmp_path):
    import nibabel as nib

    out = tmp_path / "drawn.nii"
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 2, 3] = 2
    assert napari_io.write_labels_nifti(str(out), labels, {"scale": (2.0, 0.5, 0.25), "metadata": {}}) == [str(out)]
    np.testing.assert_allclose(nib.load(str(out)).header.get_zooms(), (0.25, 0.5, 2.0))


def test_tiff_and_png_writers(tmp_path, notifications):
    from napari_ramseg.io import read_mask

    labels = np.zeros((6, 7), np.int32)
    labels[2:4, 1:5] = 1
    for writer, name in ((napari_io.write_labels_tiff, "m.tif"), (napari_io.write_labels_png, "m.png")):
        out = tmp_path / name
        assert writer(str(out), labels, {"metadata": {}}) == [str(out)]
        np.testing.assert_array_equal(read_mask(out), labels)
    # a 3D label volume cannot be a PNG: a plain notification and nothing written
    assert napari_io.write_labels_png(str(tmp_path / "v.png"), np.zeros((2, 3, 3), np.uint8), {}) == []
    assert not (tmp_path / "v.png").exists()
    assert any("PNG can hold only 2D" in m for m in notifications())


def test_real_prostate_volume_round_trip(shared_data, tmp_path):
    import nibabel as nib

    case = shared_data / "prostate_volume" / "Case00.nii.gz"
    if not case.exists():
        pytest.skip(f"{case} not available")
    [(data, meta, _)] = napari_io.read_nifti_layers(str(case))
    source = nib.load(str(case))
    assert data.shape == source.shape[::-1]
    np.testing.assert_allclose(meta["scale"], source.header.get_zooms()[::-1], rtol=1e-5)
    lo, hi = meta["contrast_limits"]  # from percentiles: the prostate is not nearly black
    assert hi < 0.5 * float(data.max())
    out = tmp_path / "Case00_labels.nii.gz"
    labels = (data > np.percentile(data, 90)).astype(np.uint8)
    napari_io.write_labels_nifti(str(out), labels, meta)
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-5)
    assert saved.shape == source.shape


def test_sample_data_is_small_credited_and_loads():
    from napari_ramseg.plugin.sample import SAMPLE_DIR, fundus_with_vessels

    total = sum(p.stat().st_size for p in SAMPLE_DIR.iterdir() if p.is_file())
    assert total < 1_000_000
    readme = (SAMPLE_DIR / "README.md").read_text()
    assert "Budai" in readme and "CC0" in readme
    (image, image_meta, image_kind), (mask, mask_meta, mask_kind) = fundus_with_vessels()
    assert image_kind == "image" and image.shape == (584, 876, 3) and image.dtype == np.uint8
    assert mask_kind == "labels" and mask.shape == (584, 876) and set(np.unique(mask)) == {0, 1}
    assert image_meta["name"] == "HRF fundus 01_h" and mask_meta["name"] == "vessels (expert)"
    assert 0.05 < mask.mean() < 0.2  # the vessel tree survived the downscaling


def test_manifest_validates():
    npe2 = shutil.which("npe2") or str(Path(sys.executable).parent / "npe2")
    result = subprocess.run([npe2, "validate", "napari-ramseg"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.gui
def test_nifti_open_segment_save_keeps_affine(make_napari_viewer, synthetic_nifti, tiny_model, tmp_path):
    """Open through napari, segment with the tiny model, save through napari: same world space."""
    import nibabel as nib

    from napari_ramseg.plugin.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    [layer] = viewer.open(str(synthetic_nifti), plugin="napari-ramseg")
    np.testing.assert_allclose(layer.scale, nib.load(str(synthetic_nifti)).header.get_zooms()[::-1], rtol=1e-5)
    widget = SegmentWidget(viewer)
    widget.set_model(tiny_model)
    widget.image_combo.set_layer(layer)
    widget.segment(run_sync=True)
    labels = viewer.layers["scan segmentation"]
    assert labels.data.shape == layer.data.shape
    np.testing.assert_allclose(labels.scale, layer.scale)
    out = tmp_path / "scan_labels.nii.gz"
    written = labels.save(str(out), plugin="napari-ramseg")
    assert Path(written[0]) == out
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, OBLIQUE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(saved.dataobj).T, labels.data)
