"""Reading images and masks, writing label images and images. No Qt or napari here: the engine imports it.

One module per format (``_pillow``: PNG/JPEG, ``_tiff``, ``_nifti``, ``_dicom``) registers a reader per file
ending (``_READERS``, in the spirit of nnU-Net's image readers), label writers (``_WRITERS``) and
lossless image writers (``_IMAGE_WRITERS``); :func:`read_image`, :func:`write_labels` and
:func:`write_image` pick them by :func:`suffix_of`. Every write is atomic through
:mod:`napari_ramseg.files`. A new format is one module here and one import line below.

Array conventions (every reader returns these):

- 2D grey: ``(H, W)``; 2D colour: ``(H, W, 3)`` (alpha dropped; palette, CMYK, ... converted to RGB;
  grey + alpha becomes grey).
- 3D volumes: ``(Z, Y, X)``, slices along axis 0. NIfTI data is transposed from nibabel's
  ``(X, Y, Z)``; ``spacing`` is ``(z, y, x)`` from the header zooms and ``affine`` is the file's
  original 4x4 affine, so :func:`write_labels` can put the labels back in the same world space.
- The dtype is kept (uint8, uint16, float...). A PNG or JPEG with an EXIF orientation is turned as it
  is displayed (images and masks alike), so a mask follows the image a user sees; ``header`` records it.

Every bad-input problem raises :class:`~napari_ramseg.errors.RamsegInputError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ramseg.errors import RamsegInputError
from napari_ramseg.files import atomic_write  # also imported from here by bench scripts written before files.py

# the format modules register their readers and writers on import; this order is the order of
# SUPPORTED_IMAGE_SUFFIXES in messages
from . import _pillow, _tiff, _nifti, _dicom  # noqa: F401, E402  isort: skip
from ._base import (  # noqa: F401  (the registries stay reachable as io._READERS... for tests)
    _IMAGE_WRITERS,
    _READERS,
    _WRITERS,
    MAX_IMAGE_BYTES,
    ImageData,
    case_names,
    is_supported,
    register_image_writer,
    register_reader,
    register_writer,
    stem_of,
    suffix_of,
)

__all__ = [
    "ImageData",
    "SUPPORTED_IMAGE_SUFFIXES",
    "SUPPORTED_LABEL_SUFFIXES",
    "suffix_of",
    "stem_of",
    "case_names",
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
    "register_image_writer",
]

def _read(path: str | Path, as_mask: bool) -> ImageData:
    path = Path(path)
    if not path.exists():
        raise RamsegInputError("file not found", path)
    if path.is_dir():
        if _dicom.holds_dicom(path):  # a DICOM series is a folder of slices
            return _dicom.read_dicom_path(path, as_mask)
        raise RamsegInputError("is a folder, not an image file", path)
    if not path.is_file():  # a FIFO, socket or device named like an image would block or never end
        raise RamsegInputError("is not a regular file", path)
    suffix = suffix_of(path)
    reader = _READERS.get(suffix)
    if suffix in _dicom.DICOM_SUFFIXES:
        reader = _dicom.read_dicom_path
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
    """Read a PNG, JPEG, TIFF or NIfTI file, or a DICOM series (its folder or one of its files), into an
    :class:`ImageData` (see the module conventions; a folder of several series: ``_dicom.read_series``)."""
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
    if path.is_dir():  # before "already exists": --overwrite cannot replace a folder, so never suggest it
        raise RamsegInputError("is a folder; give a file name", path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pick a new name (e.g. {versioned_path(path).name})")
    atomic_write(path, lambda tmp: writer(tmp, labels, like), suffix=suffix)
    return path


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
    if path.is_dir():
        raise RamsegInputError("is a folder; give a file name", path)
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
