"""NIfTI (nibabel): volumes in ``(Z, Y, X)`` with spacing, affine and header kept for the writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ramseg.errors import RamsegInputError, one_line

from ._base import ImageData, check_claimed_size, register_image_writer, register_reader, register_writer


@register_reader(".nii", ".nii.gz")
def _read_nifti(path: Path, as_mask: bool) -> ImageData:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        proxy = img.dataobj
        scaled = getattr(proxy, "slope", 1.0) != 1.0 or getattr(proxy, "inter", 0.0) != 0.0
        itemsize = 8 if scaled else np.dtype(img.get_data_dtype()).itemsize  # scaling makes floats
        check_claimed_size(img.shape, itemsize, path, "NIfTI")
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
    _check_geometry(path, affine, [("qform", qform, qcode), ("sform", sform, scode)])
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


def _check_geometry(path: Path, affine: np.ndarray, coded: list) -> None:
    """Refuse a header whose voxel-to-world transform is not a finite, invertible matrix: the image would
    be segmented, and writing its mask (which keeps the header's transforms) would then fail."""
    for name, matrix, code in [("affine", affine, None), *coded]:
        if matrix is None or (code is not None and int(code) <= 0):
            continue  # an uncoded qform / sform is not used
        matrix = np.asarray(matrix, dtype=np.float64)
        if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
            what = name if code is None else f"{name} (code {int(code)})"
            raise RamsegInputError(f"NIfTI geometry is degenerate: its {what} is not a finite, invertible transform "
                                   f"(zero or NaN voxel sizes or directions); repair the header", path)


@register_writer(".nii", ".nii.gz")
@register_image_writer(".nii", ".nii.gz")
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
