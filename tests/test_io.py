from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_ramseg import io as rio
from napari_ramseg.errors import RamsegInputError


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


# ------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "name, suffix, stem",
    [
        ("a.png", ".png", "a"),
        ("Case00.NII.GZ", ".nii.gz", "Case00"),
        ("x.y.nii", ".nii", "x.y"),
        ("img.TIFF", ".tiff", "img"),
        ("noext", "", "noext"),
        (".nii.gz", ".gz", ".nii"),
    ],
)
def test_suffix_and_stem(name, suffix, stem):
    assert rio.suffix_of(name) == suffix
    assert rio.stem_of(name) == stem


def test_supported_suffixes():
    assert set(rio.SUPPORTED_IMAGE_SUFFIXES) == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii", ".nii.gz"}


def test_versioned_path(tmp_path):
    p = tmp_path / "pred.nii.gz"
    assert rio.versioned_path(p) == p
    p.write_bytes(b"x")
    assert rio.versioned_path(p) == tmp_path / "pred_v2.nii.gz"
    (tmp_path / "pred_v2.nii.gz").write_bytes(b"x")
    assert rio.versioned_path(p) == tmp_path / "pred_v3.nii.gz"
    q = tmp_path / "mask.png"
    q.write_bytes(b"x")
    assert rio.versioned_path(q).name == "mask_v2.png"


# ----------------------------------------------------------------------------------------- reading


def test_png_grey_rgb_rgba_la_palette(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 7, np.uint8)], axis=-1)

    d = rio.read_image(_png(tmp_path / "g.png", grey))
    assert d.array.shape == (5, 7) and d.array.dtype == np.uint8 and d.axes == "YX"
    np.testing.assert_array_equal(d.array, grey)

    d = rio.read_image(_png(tmp_path / "c.png", rgb))
    assert d.axes == "YXC" and d.is_rgb and d.spatial_shape == (5, 7)
    np.testing.assert_array_equal(d.array, rgb)

    d = rio.read_image(_png(tmp_path / "a.png", rgba))
    assert d.array.shape == (5, 7, 3)
    np.testing.assert_array_equal(d.array, rgb)

    Image.fromarray(grey).convert("LA").save(tmp_path / "la.png")
    d = rio.read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(d.array, grey)

    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    d = rio.read_image(tmp_path / "p.png")
    assert d.array.shape == (5, 7, 3) and d.array.dtype == np.uint8
    # masks stored as palette PNGs keep their indices
    idx = rio.read_mask(tmp_path / "p.png")
    np.testing.assert_array_equal(idx, np.asarray(pal))


def test_png_16bit_and_jpeg(tmp_path):
    a16 = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "a16.png")
    d = rio.read_image(tmp_path / "a16.png")
    assert d.array.dtype == np.uint16
    np.testing.assert_array_equal(d.array, a16)

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=95)
    d = rio.read_image(tmp_path / "x.jpg")
    assert d.array.shape == (8, 8, 3) and abs(int(d.array[..., 0].mean()) - 200) < 5


def test_tiff_shapes(tmp_path):
    rng = np.random.default_rng(1)
    grey16 = rng.integers(0, 60000, (6, 5), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", grey16)
    d = rio.read_image(tmp_path / "g.tif")
    assert d.axes == "YX" and d.array.dtype == np.uint16
    np.testing.assert_array_equal(d.array, grey16)

    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "c.tiff", rgb, photometric="rgb")
    d = rio.read_image(tmp_path / "c.tiff")
    assert d.axes == "YXC"
    np.testing.assert_array_equal(d.array, rgb)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    d = rio.read_image(tmp_path / "planar.tif")
    assert d.axes == "YXC"
    np.testing.assert_array_equal(d.array, rgb)

    stack = rng.random((4, 6, 5)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    d = rio.read_image(tmp_path / "s.tif")
    assert d.axes == "ZYX" and d.array.dtype == np.float32
    np.testing.assert_array_equal(d.array, stack)

    tifffile.imwrite(tmp_path / "4d.tif", np.zeros((2, 3, 6, 5), np.uint8), photometric="minisblack")
    with pytest.raises(RamsegInputError, match="4d.tif.*4D"):
        rio.read_image(tmp_path / "4d.tif")


def test_nifti_orientation_and_float(tmp_path):
    data = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)  # nibabel (X, Y, Z)
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    affine[:3, 3] = [10, -20, 5]
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "v.nii.gz")
    d = rio.read_image(tmp_path / "v.nii.gz")
    assert d.array.shape == (3, 5, 4) and d.axes == "ZYX" and d.array.dtype == np.float32
    np.testing.assert_array_equal(d.array, data.transpose(2, 1, 0))
    assert d.spacing == pytest.approx((2.0, 0.7, 0.5))
    np.testing.assert_allclose(d.affine, affine)
    assert d.header["format"] == "nifti"
    import json

    json.dumps(d.header)  # plain JSON


def test_nifti_4d_refused_singleton_squeezed(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3, 2), np.int16), np.eye(4)), tmp_path / "t.nii.gz")
    with pytest.raises(RamsegInputError) as err:
        rio.read_image(tmp_path / "t.nii.gz")
    assert "t.nii.gz" in str(err.value) and "4D" in str(err.value) and "\n" not in str(err.value)

    nib.save(nib.Nifti1Image(np.ones((4, 5, 3, 1), np.int16), np.eye(4)), tmp_path / "s.nii")
    d = rio.read_image(tmp_path / "s.nii")
    assert d.array.shape == (3, 5, 4) and d.array.dtype == np.int16


@pytest.mark.parametrize("name", ["cut.png", "cut.nii.gz", "cut.tif", "cut.jpg"])
def test_truncated_files_refused(tmp_path, name):
    src = tmp_path / ("full" + rio.suffix_of(name))
    rng = np.random.default_rng(2)
    if name.endswith(".nii.gz"):
        nib.save(nib.Nifti1Image(rng.random((32, 32, 16)).astype(np.float32), np.eye(4)), src)
    elif name.endswith(".tif"):
        tifffile.imwrite(src, rng.integers(0, 255, (64, 64), dtype=np.uint8))
    else:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(src)
    blob = src.read_bytes()
    (tmp_path / name).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RamsegInputError) as err:
        rio.read_image(tmp_path / name)
    msg = str(err.value)
    assert name in msg and "\n" not in msg
    assert err.value.path == str(tmp_path / name)


def test_bad_inputs(tmp_path):
    with pytest.raises(RamsegInputError, match="missing.png: file not found"):
        rio.read_image(tmp_path / "missing.png")
    (tmp_path / "a.bmp").write_bytes(b"BM")
    with pytest.raises(RamsegInputError, match=r"a\.bmp: unsupported file type '\.bmp'"):
        rio.read_image(tmp_path / "a.bmp")
    (tmp_path / "garbage.png").write_bytes(b"not a png at all")
    with pytest.raises(RamsegInputError, match="garbage.png"):
        rio.read_image(tmp_path / "garbage.png")
    with pytest.raises(RamsegInputError, match="folder"):
        rio.read_image(tmp_path)
    with pytest.warns(UserWarning):
        tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 5), np.uint8))
    with pytest.raises(RamsegInputError, match="empty.tif"):
        rio.read_image(tmp_path / "empty.tif")


def test_unicode_and_space_paths(tmp_path):
    folder = tmp_path / "Ordner mit Leerzeichen ü 眼底"
    folder.mkdir()
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for name in ["bild ä.png", "bild ä.tif", "bild ä.nii.gz"]:
        out = rio.write_labels(folder / name, arr)
        assert out.exists()
        np.testing.assert_array_equal(rio.read_mask(out), arr)


# ------------------------------------------------------------------------------------------ masks


def test_read_mask_collapses_equal_rgb_and_refuses_colour(tmp_path):
    m = np.array([[0, 1], [2, 1]], np.uint8)
    _png(tmp_path / "rgb.png", np.stack([m] * 3, -1))
    out = rio.read_mask(tmp_path / "rgb.png")
    assert out.shape == (2, 2) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, m)
    colour = np.stack([m, m, m + 1], -1)
    _png(tmp_path / "colour.png", colour)
    with pytest.raises(RamsegInputError, match="colour.png.*differing channels"):
        rio.read_mask(tmp_path / "colour.png")


def test_read_mask_float_nifti(tmp_path):
    nib.save(nib.Nifti1Image(np.array([[[0.0], [1.0]], [[2.0], [0.0]]], np.float32), np.eye(4)), tmp_path / "m.nii.gz")
    out = rio.read_mask(tmp_path / "m.nii.gz")
    assert out.dtype == np.uint8 and out.shape == (1, 2, 2)
    nib.save(nib.Nifti1Image(np.full((2, 2, 1), 0.5, np.float32), np.eye(4)), tmp_path / "h.nii.gz")
    with pytest.raises(RamsegInputError, match="h.nii.gz.*non-integer"):
        rio.read_mask(tmp_path / "h.nii.gz")


# ----------------------------------------------------------------------------------------- writing


def test_png_tiff_round_trip_and_no_overwrite(tmp_path):
    labels = np.random.default_rng(3).integers(0, 3, (9, 11)).astype(np.int64)
    for name in ["l.png", "l.tif"]:
        p = rio.write_labels(tmp_path / name, labels)
        back = rio.read_mask(p)
        assert back.dtype == np.uint8
        np.testing.assert_array_equal(back, labels)
        with pytest.raises(FileExistsError, match=name):
            rio.write_labels(p, labels)
        rio.write_labels(p, labels * 0, overwrite=True)
        assert rio.read_mask(p).max() == 0
    big = np.full((3, 3), 300, np.uint16)
    np.testing.assert_array_equal(rio.read_mask(rio.write_labels(tmp_path / "b.png", big)), big)
    # no temp files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png", "l.png", "l.tif"]


def test_write_refusals(tmp_path):
    with pytest.raises(RamsegInputError, match="PNG can hold only 2D"):
        rio.write_labels(tmp_path / "v.png", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(RamsegInputError, match="x.bmp"):
        rio.write_labels(tmp_path / "x.bmp", np.zeros((2, 3), np.uint8))
    like = rio.ImageData(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        rio.write_labels(tmp_path / "x.png", np.zeros((3, 3), np.uint8), like=like)
    assert not list(tmp_path.iterdir())


def test_tiff_stack_round_trip_keeps_spacing(tmp_path):
    labels = np.random.default_rng(4).integers(0, 2, (5, 6, 7)).astype(np.uint8)
    like = rio.ImageData(np.zeros((5, 6, 7), np.float32), spacing=(3.0, 0.5, 0.25), axes="ZYX")
    p = rio.write_labels(tmp_path / "stack.tif", labels, like=like)
    d = rio.read_image(p)
    assert d.axes == "ZYX"
    np.testing.assert_array_equal(d.array, labels)
    assert d.spacing == pytest.approx((3.0, 0.5, 0.25))


def test_nifti_round_trip_synthetic(tmp_path):
    data = np.random.default_rng(5).random((6, 5, 4)).astype(np.float32)
    affine = np.array([[0, 0, 2.5, 3], [0, -0.8, 0, 4], [0.9, 0, 0, -7], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "img.nii")
    img = rio.read_image(tmp_path / "img.nii")
    labels = (img.array > 0.5).astype(np.uint8)
    labels[0, 0, 0] = 2
    out = rio.write_labels(tmp_path / "seg.nii.gz", labels, like=img)
    saved = nib.load(out)
    assert saved.shape == data.shape and saved.get_data_dtype() == np.uint8
    np.testing.assert_allclose(saved.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), labels.T)
    np.testing.assert_array_equal(rio.read_mask(out), labels)


def test_nifti_round_trip_real_volume(shared_data, tmp_path):
    src = shared_data / "prostate_volume" / "Case00.nii.gz"
    if not src.exists():
        pytest.skip("Case00 not available")
    img = rio.read_image(src)
    ref = nib.load(src)
    assert img.array.shape == tuple(reversed(ref.shape)) == (64, 128, 128)
    assert img.spacing == pytest.approx(tuple(reversed(ref.header.get_zooms())))
    seg = rio.read_mask(shared_data / "prostate_volume" / "Case00_segmentation.nii.gz")
    assert seg.shape == img.array.shape and set(np.unique(seg)) <= {0, 1}
    out = rio.write_labels(tmp_path / "Case00_pred.nii.gz", seg, like=img)
    saved = nib.load(out)
    np.testing.assert_allclose(saved.affine, ref.affine, atol=1e-5)
    assert saved.header.get_qform(coded=True)[1] == ref.header.get_qform(coded=True)[1]
    assert saved.header.get_zooms() == pytest.approx(ref.header.get_zooms())
    np.testing.assert_array_equal(rio.read_mask(out), seg)
    np.testing.assert_array_equal(
        np.asarray(saved.dataobj), np.asarray(nib.load(shared_data / "prostate_volume" / "Case00_segmentation.nii.gz").dataobj)
    )


@pytest.mark.parametrize("shape,axes,dtype", [((9, 7), "YX", np.uint8), ((9, 7, 3), "YXC", np.uint16),
                                              ((3, 9, 7), "ZYX", np.float32), ((4, 9, 7), "ZYX", np.int16)])
def test_write_image_round_trip(tmp_path, shape, axes, dtype):
    rng = np.random.default_rng(1)
    image = (rng.random(shape) * 1000).astype(dtype)
    path = rio.write_image(tmp_path / "copy.tif", rio.ImageData(image, axes=axes))
    back = rio.read_image(path)
    assert back.axes == axes and back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, image)
    with pytest.raises(FileExistsError, match="already exists"):
        rio.write_image(path, image)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_write_image_nifti_keeps_the_affine(tmp_path):
    volume = np.arange(3 * 5 * 4, dtype=np.float32).reshape(3, 5, 4)
    affine = np.array([[0.5, 0, 0, 10], [0, 0.6, 0, -4], [0, 0, 3.0, 2], [0, 0, 0, 1]])
    path = rio.write_image(tmp_path / "vol.nii.gz", rio.ImageData(volume, affine=affine, axes="ZYX"))
    back = rio.read_image(path)
    np.testing.assert_array_equal(back.array, volume)
    np.testing.assert_allclose(back.affine, affine)
    with pytest.raises(RamsegInputError, match="NIfTI holds grey images"):
        rio.write_image(tmp_path / "rgb.nii.gz", rio.ImageData(np.zeros((4, 4, 3), np.uint8), axes="YXC"))
    with pytest.raises(RamsegInputError, match="cannot write an image as '.jpg'"):
        rio.write_image(tmp_path / "x.jpg", np.zeros((4, 4), np.uint8))
