"""DICOM series in: geometry kept (against the NIfTI it was made from), the one-line refusals, the
napari reader, labels as NIfTI and DICOM-SEG in the series' geometry, ``ramseg predict`` on a folder."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import write_dicom_series
from napari_ramseg import io as rio
from napari_ramseg.errors import RamsegInputError
from napari_ramseg.io import _dicom

pydicom = pytest.importorskip("pydicom")


def _oblique_affine(spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    """A RAS affine rotated about two axes (columns: x, y, z voxel steps)."""
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def _volume(shape=(6, 10, 12), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(np.uint16)


def _one_line(info) -> str:
    text = str(info.value)
    assert "\n" not in text and isinstance(info.value, RamsegInputError)
    return text


# ---------------------------------------------------------------------------------------- geometry


def test_promise12_volume_round_trips_through_a_shuffled_series(shared_data, tmp_path):
    """Slices written in shuffled order (file names and InstanceNumber say nothing) read back as the
    NIfTI volume they came from: same voxels, spacing and affine; labels land in the same world space."""
    import nibabel as nib

    src = rio.read_image(shared_data / "prostate_volume" / "Case00.nii.gz")
    volume = np.round(src.array).astype(np.uint16)  # DICOM stores integers; the NIfTI holds whole floats
    order = np.random.default_rng(0).permutation(len(volume))
    write_dicom_series(tmp_path / "series", volume, src.affine, order=order)
    image = rio.read_image(tmp_path / "series")
    np.testing.assert_array_equal(image.array, volume)
    np.testing.assert_allclose(image.spacing, src.spacing, rtol=1e-6)
    np.testing.assert_allclose(image.affine, src.affine, atol=1e-6)
    assert image.is_volume and image.header == {"format": "dicom"}  # nothing else of the header travels

    labels = (volume > np.percentile(volume, 95)).astype(np.uint8)
    saved = nib.load(rio.write_labels(tmp_path / "labels.nii.gz", labels, like=image))
    np.testing.assert_allclose(saved.affine, src.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(saved.dataobj).T, labels)


@pytest.mark.parametrize("flip", [False, True], ids=["along-normal", "against-normal"])
def test_oblique_series_keeps_its_world_geometry(tmp_path, flip):
    volume = _volume()
    affine = _oblique_affine()
    if flip:  # slices stepping against the slice normal: the reader sorts along it, so z runs the other way
        affine[:3, 2] *= -1
    write_dicom_series(tmp_path / "s", volume, affine, order=np.random.default_rng(1).permutation(len(volume)))
    image = rio.read_image(tmp_path / "s")
    expected, expected_affine = volume, affine
    if flip:
        reverse = np.eye(4)
        reverse[2, 2], reverse[2, 3] = -1, len(volume) - 1
        expected, expected_affine = volume[::-1], affine @ reverse
    np.testing.assert_array_equal(image.array, expected)
    np.testing.assert_allclose(image.affine, expected_affine, atol=1e-6)
    np.testing.assert_allclose(image.spacing, (2.5, 0.8, 0.7), rtol=1e-6)
    # the same voxel sits at the same world position either way
    k, j, i = 4, 7, 3
    world = expected_affine @ [i, j, k, 1]
    kk = len(volume) - 1 - k if flip else k
    assert expected[k, j, i] == volume[kk, j, i]
    np.testing.assert_allclose(world, affine @ [i, j, kk, 1], atol=1e-6)


def _testdata(name: str):
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)  # the wheel ships these; never the network
    if path is None:
        pytest.skip(f"pydicom test file {name} not installed")
    return path


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_RLE.dcm", "CT_small.dcm"])
def test_pydicom_test_files_read_as_one_slice_volumes(tmp_path, name):
    from pydicom.pixels import apply_modality_lut

    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(_testdata(name), folder / name)
    ds = pydicom.dcmread(_testdata(name))
    for path in (folder, folder / name):  # the folder, or its one file
        image = rio.read_image(path)
        assert image.array.shape == (1, ds.Rows, ds.Columns)
        np.testing.assert_array_equal(image.array[0], apply_modality_lut(ds.pixel_array, ds))  # CT: Hounsfield
        assert image.spacing[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])
        lps_origin = np.diag([-1, -1, 1]) @ image.affine[:3, 3]
        np.testing.assert_allclose(lps_origin, [float(v) for v in ds.ImagePositionPatient], atol=1e-6)
    if name == "CT_small.dcm":
        assert image.array.dtype == np.int16 and image.array.min() < 0  # the modality LUT gives signed HU


# ---------------------------------------------------------------------------------------- refusals


def test_several_series_are_named_and_any_one_can_be_chosen(tmp_path):
    volume = _volume()
    write_dicom_series(tmp_path / "mixed", volume, _oblique_affine(), series_uid="1.2.3.4", description="T2 AX",
                       number=3, names="a{:03d}.dcm")
    write_dicom_series(tmp_path / "mixed", volume[:4] + 1, np.diag([1.0, 1.0, 3.0, 1.0]), series_uid="1.2.3.5",
                       description="DWI", number=7, names="b{:03d}.dcm")
    with pytest.raises(RamsegInputError) as info:
        rio.read_image(tmp_path / "mixed")
    text = _one_line(info)
    assert "2 DICOM series" in text and "--series" in text
    assert "1.2.3.4 (#3 'T2 AX', 6 files)" in text and "1.2.3.5 (#7 'DWI', 4 files)" in text
    np.testing.assert_array_equal(_dicom.read_series(tmp_path / "mixed", series="1.2.3.5").array, volume[:4] + 1)
    np.testing.assert_array_equal(_dicom.read_series(tmp_path / "mixed", series="3").array, volume)
    np.testing.assert_array_equal(rio.read_image(tmp_path / "mixed" / "b002.dcm").array, volume[:4] + 1)  # a file
    with pytest.raises(RamsegInputError, match="no series has the SeriesInstanceUID or number '9'"):
        _dicom.read_series(tmp_path / "mixed", series="9")


def test_series_in_subfolders_are_listed_by_folder(tmp_path):
    write_dicom_series(tmp_path / "study" / "t2", _volume(), _oblique_affine(), description="T2")
    write_dicom_series(tmp_path / "study" / "adc", _volume((3, 10, 12)), _oblique_affine(), description="ADC")
    with pytest.raises(RamsegInputError, match=r"in t2/.*|in adc/.*"):
        rio.read_image(tmp_path / "study")
    assert rio.read_image(tmp_path / "study" / "adc").array.shape == (3, 10, 12)  # its subfolder chooses it


def test_missing_duplicate_and_unevenly_spaced_slices_are_refused(tmp_path):
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    files = write_dicom_series(tmp_path / "missing", _volume(), affine)
    files[2].unlink()
    with pytest.raises(RamsegInputError) as info:
        rio.read_image(tmp_path / "missing")
    assert "missing slices: a gap of 6.00 mm" in _one_line(info) and "about 1 missing" in str(info.value)

    files = write_dicom_series(tmp_path / "duplicate", _volume(), affine)
    shutil.copy(files[3], tmp_path / "duplicate" / "copy.dcm")
    with pytest.raises(RamsegInputError) as info:
        rio.read_image(tmp_path / "duplicate")
    assert "duplicate slices" in _one_line(info) and "copy.dcm" in str(info.value)

    files = write_dicom_series(tmp_path / "uneven", _volume(), affine)
    ds = pydicom.dcmread(files[3])
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 1.0  # 3 mm steps, one of 4 and one of 2
    ds.save_as(files[3])
    with pytest.raises(RamsegInputError) as info:
        rio.read_image(tmp_path / "uneven")
    assert "uneven slice spacing (2.000 to 4.000 mm)" in _one_line(info)


def test_mixed_orientations_and_sizes_are_refused(tmp_path):
    files = write_dicom_series(tmp_path / "s", _volume(), _oblique_affine())
    ds = pydicom.dcmread(files[1])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.save_as(files[1])
    with pytest.raises(RamsegInputError, match="differ in orientation") as info:
        rio.read_image(tmp_path / "s")
    _one_line(info)


def test_undecodable_pixel_data_is_one_line(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG2MPML, RLELossless

    files = write_dicom_series(tmp_path / "s", _volume((3, 10, 12)), np.eye(4))
    for uid, payload in ((MPEG2MPML, b"\x00\x00\x01\xb3 not a real stream"), (RLELossless, b"\x07garbage!")):
        ds = pydicom.dcmread(files[1])
        ds.file_meta.TransferSyntaxUID = uid
        ds.PixelData = encapsulate([payload + b"\x00" * (len(payload) % 2)])
        ds["PixelData"].is_undefined_length = True
        ds["PixelData"].VR = "OB"
        ds.save_as(files[1])
        with pytest.raises(RamsegInputError) as info:
            rio.read_image(tmp_path / "s")
        text = _one_line(info)
        assert "cannot decode the pixel data" in text and files[1].name in text and uid.name in text


def test_a_folder_without_dicom_is_still_a_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RamsegInputError, match="is a folder, not an image file"):
        rio.read_image(tmp_path)
    with pytest.raises(RamsegInputError, match="not a mask"):
        write_dicom_series(tmp_path / "s", _volume((2, 4, 4)), np.eye(4))
        rio.read_mask(tmp_path / "s")


# ------------------------------------------------------------------------------------- napari, out


def test_napari_reader_opens_a_series_folder_with_its_geometry(tmp_path):
    from napari_ramseg.plugin import layer_meta as lm
    from napari_ramseg.plugin import napari_io

    volume, affine = _volume(), _oblique_affine()
    write_dicom_series(tmp_path / "case7", volume, affine, order=[5, 2, 0, 1, 4, 3])
    assert napari_io.get_dicom_reader(str(tmp_path / "case7")) is napari_io.read_dicom_layers
    assert napari_io.get_dicom_reader(str(tmp_path)) is napari_io.read_dicom_layers  # subfolders count
    (tmp_path / "empty").mkdir()
    assert napari_io.get_dicom_reader(str(tmp_path / "empty")) is None
    assert napari_io.get_dicom_reader("image.png") is None
    [(data, meta, kind)] = napari_io.read_dicom_layers(str(tmp_path / "case7"))
    assert kind == "image" and meta["name"] == "case7"
    np.testing.assert_array_equal(data, volume)
    assert meta["scale"] == pytest.approx((2.5, 0.8, 0.7))
    np.testing.assert_allclose(meta["metadata"][lm.AFFINE], affine, atol=1e-6)
    assert "Test^Phantom" not in repr(meta) and "TEST0001" not in repr(meta)  # no patient field in the layer


def test_napari_reader_opens_every_series_of_a_mixed_folder(tmp_path):
    from napari_ramseg.plugin import napari_io

    write_dicom_series(tmp_path / "mixed", _volume(), np.eye(4), number=3, names="a{:03d}.dcm")
    write_dicom_series(tmp_path / "mixed", _volume((4, 10, 12)), np.eye(4), number=7, names="b{:03d}.dcm")
    layers = napari_io.read_dicom_layers(str(tmp_path / "mixed"))
    assert sorted(meta["name"] for _, meta, _ in layers) == ["mixed series 3", "mixed series 7"]


def test_labels_as_dicom_seg_reference_the_series(tmp_path):
    hd = pytest.importorskip("highdicom")
    volume = _volume()
    files = write_dicom_series(tmp_path / "s", volume, _oblique_affine(), order=[3, 1, 0, 5, 2, 4])
    image = rio.read_image(tmp_path / "s")
    labels = np.zeros(volume.shape, np.uint8)
    labels[1:4, 2:6, 3:8] = 1
    labels[2, 3:5, 4:6] = 2
    rio.write_labels(tmp_path / "seg.dcm", labels, like=image)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.number_of_segments == 2
    by_position = {float(pydicom.dcmread(f).ImagePositionPatient[2]): pydicom.dcmread(f).SOPInstanceUID for f in files}
    for k in range(len(volume)):  # each source slice's segment 1 is labels >= 1 at that slice
        z = (np.diag([-1, -1, 1, 1]) @ image.affine @ [0, 0, k, 1])[2]
        uid = by_position[min(by_position, key=lambda p: abs(p - z))]
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], segment_numbers=[1, 2],
                                                   ignore_spatial_locations=True)
        np.testing.assert_array_equal(pixels[0, ..., 0], labels[k] == 1)
        np.testing.assert_array_equal(pixels[0, ..., 1], labels[k] == 2)


def test_ramseg_predict_on_a_dicom_folder_writes_nifti_in_the_series_geometry(tiny_model, tmp_path, capsys):
    import nibabel as nib

    from napari_ramseg.cli import main

    volume, affine = _volume((5, 32, 40)), _oblique_affine()
    write_dicom_series(tmp_path / "series", volume, affine, order=[4, 0, 3, 1, 2])
    out = tmp_path / "masks"
    assert main(["predict", "--model", str(tiny_model), "--input", str(tmp_path / "series"),
                 "--output", str(out), "--device", "cpu", "--precision", "fp32"]) == 0
    saved = nib.load(out / "series.nii.gz")
    assert saved.shape == (40, 32, 5)
    np.testing.assert_allclose(saved.affine, affine, atol=1e-5)

    write_dicom_series(tmp_path / "series", volume[:3], np.eye(4), number=8, names="x{:03d}.dcm")
    assert main(["predict", "--model", str(tiny_model), "--input", str(tmp_path / "series"),
                 "--output", str(tmp_path / "one.nii.gz"), "--device", "cpu"]) == 2
    assert "2 DICOM series" in capsys.readouterr().err
    assert main(["predict", "--model", str(tiny_model), "--input", str(tmp_path / "series"), "--series", "8",
                 "--output", str(tmp_path / "one.nii.gz"), "--device", "cpu"]) == 0
    assert nib.load(tmp_path / "one.nii.gz").shape == (40, 32, 3)


def test_the_manifest_offers_the_dicom_reader_for_folders_and_dcm_files_only(tmp_path):
    npe2 = pytest.importorskip("npe2")
    write_dicom_series(tmp_path / "series", _volume(), np.eye(4))
    manager = npe2.PluginManager.instance()
    manager.discover()

    def ours(path) -> bool:
        return any(r.command == "napari-ramseg.get_dicom_reader" for r in manager.iter_compatible_readers([str(path)]))

    assert ours(tmp_path / "series") and ours(tmp_path / "series" / "slice000.dcm")
    assert not ours(tmp_path / "image.png")  # never in the way of other files
    [(data, meta, _)] = npe2.read([str(tmp_path / "series")], plugin_name="napari-ramseg", stack=False)
    assert data.shape == (6, 10, 12) and meta["name"] == "series"
