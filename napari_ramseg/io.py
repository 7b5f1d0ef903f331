"""Reading images and masks, writing label images and images. No Qt or napari here: the engine imports it.

One reader per file ending, kept in a registry (``_READERS``) in the spirit of nnU-Net's image
readers; :func:`read_image` picks the reader by :func:`suffix_of`. Label writers sit in a second
registry (``_WRITERS``, :func:`write_labels`); :func:`write_image` writes lossless copies of images.
Every write is atomic through :mod:`napari_ramseg.files`.

Array conventions (every reader returns these):

- 2D grey: ``(H, W)``; 2D colour: ``(H, W, 3)`` (alpha dropped; palette, CMYK, ... converted to RGB;
  grey + alpha becomes grey).
- 3D volumes: ``(Z, Y, X)``, slices along axis 0. NIfTI data is transposed from nibabel's
  ``(X, Y, Z)``; ``spacing`` is ``(z, y, x)`` from the header zooms and ``affine`` is the file's
  original 4x4 affine, so :func:`write_labels` can put the labels back in the same world space.
- The dtype is kept (uint8, uint16, float...). Pixels are returned in stored order (no EXIF rotation),
  so an image and its mask always line up.

Every bad-input problem raises :class:`~napari_ramseg.errors.RamsegInputError` naming the file.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from napari_ramseg.errors import RamsegInputError, one_line
from napari_ramseg.files import atomic_write  # also imported from here by bench scripts written before files.py

__all__ = [
    "ImageData",
    "SUPPORTED_IMAGE_SUFFIXES",
    "SUPPORTED_LABEL_SUFFIXES",
    "suffix_of",
    "stem_of",
    "is_supported",
    "read_image",
    "read_mask",
    "write_labels",
    "write_image",
    "as_index_array",
    "versioned_path",
    "MAX_IMAGE_BYTES",
    "register_reader",
    "register_writer",
]

_DOUBLE_SUFFIXES = (".nii.gz",)

# A header may claim any size; a few hundred hostile bytes must not make a reader allocate and fill
# tens of gigabytes. Images whose decoded pixels would exceed this are refused before decoding.
MAX_IMAGE_BYTES = 2 << 30


@dataclass
class ImageData:
    """An image as read from disk.

    ``axes`` says how to read ``array``: ``"YX"`` (grey), ``"YXC"`` (RGB) or ``"ZYX"`` (volume).
    ``header`` is a plain-JSON subset of the file's metadata (for NIfTI: qform/sform and their codes,
    zooms, units, original shape and dtype) that :func:`write_labels` uses to restore it.
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    header: dict | None = None
    path: str | None = None
    axes: str | None = None

    def __post_init__(self) -> None:
        if self.axes is None:
            if self.array.ndim == 2:
                self.axes = "YX"
            elif self.array.ndim == 3 and self.array.shape[-1] == 3 and self.affine is None:
                self.axes = "YXC"
            else:
                self.axes = "ZYX"

    @property
    def is_rgb(self) -> bool:
        return self.axes == "YXC"

    @property
    def is_volume(self) -> bool:
        return self.axes == "ZYX"

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the colour axis: ``(H, W)`` or ``(Z, Y, X)``."""
        return tuple(self.array.shape[:2]) if self.is_rgb else tuple(self.array.shape)


# --------------------------------------------------------------------------------------------- names


def suffix_of(path: str | Path) -> str:
    """Lower-case file ending, with ``.nii.gz`` kept whole: ``"a.NII.GZ" -> ".nii.gz"``."""
    name = Path(path).name.lower()
    for double in _DOUBLE_SUFFIXES:
        if name.endswith(double) and len(name) > len(double):
            return double
    return Path(name).suffix


def stem_of(path: str | Path) -> str:
    """File name without its (possibly double) ending: ``"Case00.nii.gz" -> "Case00"``."""
    name = Path(path).name
    suffix = suffix_of(path)
    return name[: len(name) - len(suffix)] if suffix else name


# ------------------------------------------------------------------------------------------ registry

Reader = Callable[[Path, bool], ImageData]
Writer = Callable[[Path, np.ndarray, "ImageData | None"], None]
_READERS: dict[str, Reader] = {}
_WRITERS: dict[str, Writer] = {}


def register_reader(*suffixes: str) -> Callable[[Reader], Reader]:
    """Register ``reader(path, as_mask) -> ImageData`` for the given lower-case endings."""

    def deco(func: Reader) -> Reader:
        for s in suffixes:
            _READERS[s] = func
        return func

    return deco


def register_writer(*suffixes: str) -> Callable[[Writer], Writer]:
    """Register ``writer(path, labels, like)`` for the given lower-case endings."""

    def deco(func: Writer) -> Writer:
        for s in suffixes:
            _WRITERS[s] = func
        return func

    return deco


def is_supported(path: str | Path) -> bool:
    return suffix_of(path) in _READERS


# ---------------------------------------------------------------------------------------- readers


def _check_claimed_size(shape: Any, itemsize: int, path: Path, kind: str) -> None:
    """Refuse a header whose image would take more than MAX_IMAGE_BYTES once decoded."""
    try:
        dims = [int(n) for n in shape]
    except (TypeError, ValueError):
        return  # the reader will fail on its own
    nbytes = max(int(itemsize), 1)
    for n in dims:
        nbytes *= max(n, 0)
    if nbytes > MAX_IMAGE_BYTES:
        raise RamsegInputError(
            f"{kind} header claims {tuple(dims)} pixels ({nbytes / 2**30:.1f} GiB decoded); images over "
            f"{MAX_IMAGE_BYTES / 2**30:.0f} GiB are refused (corrupt header, or split the image)",
            path,
        )


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Silence a library's own log lines about a broken file; the reader reports it in one line."""
    logger, drop = logging.getLogger(name), _DropAll()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _drop_alpha(array: np.ndarray) -> np.ndarray:
    """``(H, W, 2)`` grey + alpha -> grey; ``(H, W, 4)`` RGBA -> RGB; others unchanged."""
    if array.ndim == 3 and array.shape[-1] == 2:
        return array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 4:
        return array[..., :3]
    return array


@register_reader(".png", ".jpg", ".jpeg")
def _read_pillow(path: Path, as_mask: bool) -> ImageData:
    from PIL import Image

    kind = "PNG" if suffix_of(path) == ".png" else "JPEG"
    try:
        with Image.open(path) as im:
            bands = len(im.getbands()) if im.mode not in ("I;16", "I;16B", "I;16L", "I", "F") else 4
            _check_claimed_size((im.size[1], im.size[0]), bands, path, kind)
            im.load()
            mode = im.mode
            if kind == "PNG" and getattr(im, "n_frames", 1) > 1:
                raise RamsegInputError(f"animated {kind} with several frames is not supported", path)
            if mode == "1":
                array = np.asarray(im, dtype=np.uint8)  # 0 / 1
            elif mode == "P" and as_mask:
                array = np.asarray(im)  # palette masks: the index is the class
            elif mode in ("P", "PA"):
                rgb = im.convert("RGB")
                array = np.asarray(rgb)
                if np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2]):
                    array = array[..., 0]  # grey palette
            elif mode in ("L", "I", "F") or mode.startswith("I;16"):
                array = np.asarray(im)
            elif mode in ("LA", "La"):
                array = np.asarray(im.convert("L"))
            elif mode in ("RGB", "RGBA", "RGBa", "RGBX"):
                array = _drop_alpha(np.asarray(im))
            else:  # CMYK, YCbCr, LAB, HSV, ...
                array = np.asarray(im.convert("RGB"))
    except RamsegInputError:
        raise
    except FileNotFoundError:
        raise RamsegInputError("file not found", path) from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib/struct errors...
        raise RamsegInputError(f"cannot read {kind} (truncated or corrupt?): {one_line(exc, 200, typed=False)}", path) from None
    # native byte order (16-bit PNGs can come back big-endian)
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    return ImageData(array=array, path=str(path), axes="YXC" if array.ndim == 3 else "YX",
                     header={"format": kind.lower(), "mode": mode})


@register_reader(".tif", ".tiff")
def _read_tiff(path: Path, as_mask: bool) -> ImageData:
    import tifffile

    try:
        with _quiet_logger("tifffile"), tifffile.TiffFile(path) as tif:
            # Index the whole IFD chain first (tifffile stops at loops and bad offsets there); going
            # straight to ``series`` can walk a corrupt chain without end (found by fuzzing).
            len(tif.pages)
            if not tif.series:
                raise RamsegInputError("TIFF holds no image", path)
            series = tif.series[0]
            _check_claimed_size(series.shape, np.dtype(series.dtype).itemsize, path, "TIFF")
            _check_tiff_segments(tif.pages[0], path)
            array = np.asarray(series.asarray())
            axes = str(series.axes)
            spacing = _tiff_spacing(tif)
    except RamsegInputError:
        raise
    except FileNotFoundError:
        raise RamsegInputError("file not found", path) from None
    except Exception as exc:
        raise RamsegInputError(f"cannot read TIFF (truncated or corrupt?): {one_line(exc, 200, typed=False)}", path) from None
    if array.size == 0 or len(axes) != array.ndim:  # tifffile gives up on broken pages with an empty array
        raise RamsegInputError(
            f"cannot read TIFF (truncated or corrupt?): no pixel data (shape {array.shape}, axes {axes!r})", path
        )

    # drop singleton axes other than the image plane
    keep = [i for i, (a, n) in enumerate(zip(axes, array.shape)) if n != 1 or a in "YX"]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if array.ndim == 3 and axes[0] == "S" and array.shape[0] in (2, 3, 4):  # planar colour
        array = np.moveaxis(array, 0, -1)
        axes = axes[1:] + "S"
    if array.ndim == 2:
        out_axes = "YX"
    elif array.ndim == 3 and axes.endswith("S"):
        if array.shape[-1] not in (2, 3, 4):
            raise RamsegInputError(f"TIFF with {array.shape[-1]} samples per pixel is not supported", path)
        array = _drop_alpha(array)
        out_axes = "YXC" if array.ndim == 3 else "YX"
    elif array.ndim == 3:
        out_axes = "ZYX"
    elif array.ndim == 4 and axes.endswith("S"):
        raise RamsegInputError(f"3D colour stacks are not supported (shape {array.shape})", path)
    else:
        raise RamsegInputError(
            f"{array.ndim}D data is not supported (shape {array.shape}, axes {axes}); expected 2D or a 3D stack",
            path,
        )
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    return ImageData(
        array=array,
        spacing=spacing if out_axes == "ZYX" else None,
        path=str(path),
        axes=out_axes,
        header={"format": "tiff", "axes": axes},
    )


def _check_tiff_segments(page: Any, path: Path) -> None:
    """Refuse a page whose strip/tile layout needs far more segments than its offset table lists.

    A corrupt width or tile size can ask tifffile to decode hundreds of thousands of missing tiles
    one by one (seconds per read for a 438-byte file, found by fuzzing); a valid file lists one
    offset per segment.
    """
    try:
        expected = int(np.prod(page.chunked))
        listed = len(page.dataoffsets)
    except Exception:
        return
    if expected > 4096 and expected > listed:
        raise RamsegInputError(
            f"cannot read TIFF (truncated or corrupt?): its layout needs {expected} strips or tiles but the file "
            f"lists {listed}", path)


def _tiff_spacing(tif: Any) -> tuple[float, float, float] | None:
    """(z, y, x) from ImageJ metadata (``spacing``) and the resolution tags, when the file has them."""
    meta = tif.imagej_metadata
    if not meta or "spacing" not in meta:
        return None
    try:
        tags = tif.pages[0].tags
        xnum, xden = tags["XResolution"].value
        ynum, yden = tags["YResolution"].value
        return (float(meta["spacing"]), float(yden) / float(ynum), float(xden) / float(xnum))
    except Exception:
        return None


@register_reader(".nii", ".nii.gz")
def _read_nifti(path: Path, as_mask: bool) -> ImageData:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        proxy = img.dataobj
        scaled = getattr(proxy, "slope", 1.0) != 1.0 or getattr(proxy, "inter", 0.0) != 0.0
        itemsize = 8 if scaled else np.dtype(img.get_data_dtype()).itemsize  # scaling makes floats
        _check_claimed_size(img.shape, itemsize, path, "NIfTI")
        data = np.asanyarray(proxy)
        hdr = img.header
        zooms = [float(z) for z in hdr.get_zooms()]
        qform, qcode = hdr.get_qform(coded=True)
        sform, scode = hdr.get_sform(coded=True)
        units = list(hdr.get_xyzt_units())
        descrip = hdr["descrip"].tobytes().split(b"\0")[0].decode("latin-1") if "descrip" in hdr else ""
        affine = np.array(img.affine, dtype=np.float64)
    except RamsegInputError:
        raise
    except FileNotFoundError:
        raise RamsegInputError("file not found", path) from None
    except Exception as exc:  # ImageFileError, EOFError, zlib.error, gzip.BadGzipFile, ...
        raise RamsegInputError(f"cannot read NIfTI (truncated or corrupt?): {one_line(exc, 200, typed=False)}", path) from None
    if data.dtype.fields is not None or data.dtype.kind not in "biuf":
        raise RamsegInputError(f"NIfTI data type {data.dtype} is not supported (expected a scalar image)", path)
    original_shape = tuple(int(n) for n in data.shape)
    # a trailing singleton 4th (5th...) dimension is harmless: squeeze it
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise RamsegInputError(
            f"{data.ndim}D NIfTI is not supported (shape {original_shape}); give one 3D volume", path
        )
    if data.ndim < 2:
        raise RamsegInputError(f"NIfTI with shape {original_shape} is not an image", path)
    # (X, Y, Z) -> (Z, Y, X); (X, Y) -> (Y, X); big-endian files (old scanners) to native byte order
    array = np.ascontiguousarray(data.T, dtype=data.dtype.newbyteorder("="))
    spacing = tuple(reversed(zooms[: data.ndim]))
    header = {
        "format": "nifti",
        "shape": list(original_shape),
        "dtype": str(data.dtype),
        "zooms": zooms,
        "qform_code": int(qcode),
        "sform_code": int(scode),
        "qform": None if qform is None else np.asarray(qform).tolist(),
        "sform": None if sform is None else np.asarray(sform).tolist(),
        "xyzt_units": units,
        "descrip": descrip,
    }
    return ImageData(array=array, spacing=spacing, affine=affine, header=header, path=str(path),
                     axes="ZYX" if array.ndim == 3 else "YX")


def _read(path: str | Path, as_mask: bool) -> ImageData:
    path = Path(path)
    if not path.exists():
        raise RamsegInputError("file not found", path)
    if path.is_dir():
        raise RamsegInputError("is a folder, not an image file", path)
    if not path.is_file():  # a FIFO, socket or device named like an image would block or never end
        raise RamsegInputError("is not a regular file", path)
    suffix = suffix_of(path)
    reader = _READERS.get(suffix)
    if reader is None:
        supported = ", ".join(SUPPORTED_IMAGE_SUFFIXES)
        raise RamsegInputError(f"unsupported file type {suffix or '(no ending)'!r}; supported: {supported}", path)
    data = reader(path, as_mask)
    if data.array.size == 0:
        raise RamsegInputError(f"image is empty (shape {data.array.shape})", path)
    if data.array.dtype.kind not in "biuf":
        raise RamsegInputError(f"pixel type {data.array.dtype} is not supported", path)
    return data


def read_image(path: str | Path) -> ImageData:
    """Read a PNG, JPEG, TIFF or NIfTI file into an :class:`ImageData` (see the module conventions)."""
    return _read(path, as_mask=False)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a class-index mask: ``(H, W)`` or ``(Z, Y, X)`` unsigned integers.

    An RGB(A) mask whose three channels are equal collapses to one channel (DoFE stores masks as
    RGB); a colour mask with differing channels is refused. Palette PNGs give their indices. Float
    masks must hold whole non-negative numbers. The result is uint8 when the values fit, else uint16.
    """
    data = _read(path, as_mask=True)
    array = data.array
    if data.is_rgb:
        if not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])):
            raise RamsegInputError(
                "mask is a colour image with differing channels; masks must be class-index images "
                "(one value per class, e.g. 0 background, 1, 2, ...)",
                path,
            )
        array = array[..., 0]
    return as_index_array(array, path)


def as_index_array(array: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """A mask array as class indices: uint8 when the values fit, else uint16; RamsegInputError naming
    ``path`` for NaN, fractions or negatives. For masks that come from elsewhere than a file reader."""
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise RamsegInputError("mask contains NaN or Inf values", path)
        if not np.array_equal(array, np.round(array)):
            raise RamsegInputError("mask holds non-integer values; expected class indices", path)
    lo, hi = (array.min(), array.max())
    if lo < 0:
        raise RamsegInputError(f"mask holds negative values (min {lo}); expected class indices", path)
    if hi > np.iinfo(np.uint16).max:
        raise RamsegInputError(f"mask value {hi} is too large for a class index", path)
    dtype = np.uint8 if hi <= 255 else np.uint16
    return np.ascontiguousarray(array, dtype=dtype) if array.dtype != dtype else np.ascontiguousarray(array)


SUPPORTED_IMAGE_SUFFIXES: tuple[str, ...] = tuple(_READERS)


# ---------------------------------------------------------------------------------------- writers


@register_writer(".nii", ".nii.gz")
def _write_nifti(path: Path, labels: np.ndarray, like: ImageData | None) -> None:
    import nibabel as nib

    header = (like.header or {}) if like is not None else {}
    if like is not None and like.affine is not None:
        affine = np.asarray(like.affine, dtype=np.float64)
    else:
        affine = np.eye(4)
        spacing = like.spacing if like is not None else None
        if spacing is not None and len(spacing) == labels.ndim:
            for i, s in enumerate(reversed(spacing)):
                affine[i, i] = float(s)
    img = nib.Nifti1Image(np.ascontiguousarray(labels.T), affine)
    if header.get("format") == "nifti":
        sform = np.asarray(header["sform"]) if header.get("sform") is not None else affine
        qform = np.asarray(header["qform"]) if header.get("qform") is not None else affine
        img.header.set_sform(sform, code=int(header.get("sform_code", 2)))
        img.header.set_qform(qform, code=int(header.get("qform_code", 0)))
        units = header.get("xyzt_units") or ["unknown", "unknown"]
        img.header.set_xyzt_units(*units)
    else:
        img.header.set_sform(affine, code=2)
        img.header.set_qform(affine, code=1)
        if like is not None and like.spacing is not None:
            img.header.set_xyzt_units("mm")
    img.header.set_data_dtype(labels.dtype)
    nib.save(img, str(path))


@register_writer(".tif", ".tiff")
def _write_tiff(path: Path, labels: np.ndarray, like: ImageData | None) -> None:
    import tifffile

    kwargs: dict[str, Any] = {"photometric": "minisblack", "compression": "zlib"}
    if labels.ndim == 3:
        kwargs["imagej"] = True
        kwargs.pop("compression")  # ImageJ reads only uncompressed hyperstacks reliably
        meta: dict[str, Any] = {"axes": "ZYX"}
        spacing = like.spacing if like is not None else None
        if spacing is not None and len(spacing) == 3:
            meta["spacing"] = float(spacing[0])
            kwargs["resolution"] = (1.0 / float(spacing[2]), 1.0 / float(spacing[1]))
        kwargs["metadata"] = meta
    tifffile.imwrite(path, labels, **kwargs)


@register_writer(".png")
def _write_png(path: Path, labels: np.ndarray, like: ImageData | None) -> None:
    """8-bit labels as a palette PNG: the pixel values stay the class indices (``read_mask`` gives them
    back), and any viewer shows the classes in colour instead of a black 0/1 image. Labels above 255
    stay 16-bit grey, which a palette cannot hold."""
    from PIL import Image

    from .palette import png_palette

    image = Image.fromarray(labels)
    if labels.dtype == np.uint8:
        image.putpalette(png_palette())  # "L" -> "P", indices unchanged
    image.save(path, format="PNG")


SUPPORTED_LABEL_SUFFIXES: tuple[str, ...] = tuple(_WRITERS)


def _label_dtype(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind == "b":
        return labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
            raise ValueError("labels must hold whole numbers (class indices)")
    elif labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, not {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must not be negative")
    hi = labels.max() if labels.size else 0
    if hi > np.iinfo(np.uint16).max:
        raise ValueError(f"label value {hi} does not fit in uint16")
    return labels.astype(np.uint8 if hi <= 255 else np.uint16)


def write_labels(
    path: str | Path, labels: np.ndarray, like: ImageData | None = None, overwrite: bool = False
) -> Path:
    """Write a label image (``(H, W)`` or ``(Z, Y, X)``) as NIfTI, TIFF or PNG; returns the path.

    NIfTI takes ``like.affine`` (and the qform/sform codes of ``like.header``) so the labels overlay
    the source volume; data go back to nibabel's ``(X, Y, Z)`` order. PNG holds only 2D labels.
    The write is atomic (:func:`atomic_write`). An existing file
    raises ``FileExistsError`` unless ``overwrite`` (see :func:`versioned_path`).
    """
    path = Path(path)
    suffix = suffix_of(path)
    writer = _WRITERS.get(suffix)
    if writer is None:
        raise RamsegInputError(
            f"cannot write labels as {suffix or '(no ending)'!r}; use one of {', '.join(SUPPORTED_LABEL_SUFFIXES)}",
            path,
        )
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 2D or 3D array, not shape {labels.shape}")
    if suffix == ".png" and labels.ndim != 2:
        raise RamsegInputError(
            f"PNG can hold only 2D labels, these are 3D {labels.shape}; save as .nii.gz or .tif", path
        )
    if like is not None and tuple(like.spatial_shape) != tuple(labels.shape):
        raise ValueError(f"labels shape {labels.shape} does not match the image shape {like.spatial_shape}")
    labels = _label_dtype(labels)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pick a new name (e.g. {versioned_path(path).name})")
    if path.is_dir():
        raise RamsegInputError("is a folder; give a file name", path)
    atomic_write(path, lambda tmp: writer(tmp, labels, like), suffix=suffix)
    return path


def _write_tiff_image(path: Path, image: np.ndarray, like: ImageData | None) -> None:
    # zlib keeps the copy lossless and small; colour is stored as RGB samples so readers show it as such
    import tifffile

    rgb = like is not None and like.is_rgb
    tifffile.imwrite(path, image, photometric="rgb" if rgb else "minisblack", compression="zlib")


_IMAGE_WRITERS: dict[str, Writer] = {".tif": _write_tiff_image, ".tiff": _write_tiff_image,
                                     ".nii": _write_nifti, ".nii.gz": _write_nifti}


def write_image(path: str | Path, image: np.ndarray | ImageData, overwrite: bool = False) -> Path:
    """Write a lossless copy of an image as TIFF or NIfTI, atomically; returns the path.

    ``image`` is an array (``(H, W)`` grey, ``(H, W, 3)`` RGB, ``(Z, Y, X)`` volume; read as
    :class:`ImageData` reads it) or an :class:`ImageData`, whose ``affine``/``spacing`` a NIfTI file
    keeps (so :func:`read_image` gives the same array and affine back). The dtype is kept. An existing
    file raises ``FileExistsError`` unless ``overwrite``.
    """
    path = Path(path)
    like = image if isinstance(image, ImageData) else ImageData(array=np.asarray(image))
    suffix = suffix_of(path)
    writer = _IMAGE_WRITERS.get(suffix)
    if writer is None:
        raise RamsegInputError(
            f"cannot write an image as {suffix or '(no ending)'!r}; use one of {', '.join(_IMAGE_WRITERS)}", path)
    array = like.array
    if array.size == 0 or array.dtype.kind not in "biuf":
        raise ValueError(f"image must be a non-empty numeric array, not {array.dtype} of shape {array.shape}")
    if suffix in (".nii", ".nii.gz") and like.is_rgb:
        raise RamsegInputError(f"NIfTI holds grey images and volumes, this is colour {array.shape}; save as .tif", path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pick a new name (e.g. {versioned_path(path).name})")
    atomic_write(path, lambda tmp: writer(tmp, array, like), suffix=suffix)
    return path


def versioned_path(path: str | Path) -> Path:
    """``path`` if it is free, else ``name_v2.ext``, ``name_v3.ext``, ... (``.nii.gz`` kept whole)."""
    path = Path(path)
    if not path.exists():
        return path
    suffix = suffix_of(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    n = 2
    while True:
        candidate = path.with_name(f"{stem}_v{n}{suffix}")
        if not candidate.exists():
            return candidate
        n += 1
