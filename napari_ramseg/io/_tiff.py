"""TIFF (tifffile): 2D images, colour, stacks with ImageJ spacing; label and lossless image writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_ramseg.errors import RamsegInputError, one_line

from ._base import (ImageData, check_claimed_size, drop_alpha, quiet_logger, register_image_writer, register_reader,
                    register_writer)


MAX_TIFF_PAGES = 2048  # slices of a volume; series detection costs ~0.25 s at this count on a quiet CPU


@register_reader(".tif", ".tiff")
def _read_tiff(path: Path, as_mask: bool) -> ImageData:
    import tifffile

    try:
        with quiet_logger("tifffile"), tifffile.TiffFile(path) as tif:
            # Index the whole IFD chain first (tifffile stops at loops and bad offsets there); going
            # straight to ``series`` can walk a corrupt chain without end (found by fuzzing). Its length
            # is cheap; finding the series is not: it grows with the square of the pages (100,000 pages
            # of 1x1 pixels, 24 MB, took minutes), so the pages, and with them the series, are capped first.
            pages = len(tif.pages)
            if pages > MAX_TIFF_PAGES:
                raise RamsegInputError(f"TIFF holds {pages} pages; at most {MAX_TIFF_PAGES} are read (a volume of "
                                       "more slices: save it as NIfTI)", path)
            if not tif.series:
                raise RamsegInputError("TIFF holds no image", path)
            series = tif.series[0]
            check_claimed_size(series.shape, np.dtype(series.dtype).itemsize, path, "TIFF")
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

    # the shape as stored, less colour samples: a mask written for this image takes it back (a (10, 1, 1)
    # stack, which tifffile reads as a 10 x 1 plane, gets a (10, 1, 1) mask, not a (10, 1) one)
    stored = [int(n) for a, n in zip(axes, array.shape) if a != "S"]
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
        array = drop_alpha(array)
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
        header={"format": "tiff", "axes": axes, "stored_shape": stored},
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


@register_writer(".tif", ".tiff")
def _write_tiff(path: Path, labels: np.ndarray, like: ImageData | None) -> None:
    import tifffile

    kwargs: dict[str, Any] = {"photometric": "minisblack", "compression": "zlib"}
    stored = (like.header or {}).get("stored_shape") if like is not None else None
    if stored and tuple(stored) != labels.shape and int(np.prod(stored)) == labels.size and len(stored) <= 3:
        # the image file's own shape (singleton axes the reader dropped), stored as tifffile stores a shape
        tifffile.imwrite(path, labels.reshape(stored), **kwargs)
        return
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


@register_image_writer(".tif", ".tiff")
def _write_tiff_image(path: Path, image: np.ndarray, like: ImageData | None) -> None:
    # zlib keeps the copy lossless and small; colour is stored as RGB samples so readers show it as such
    import tifffile

    rgb = like is not None and like.is_rgb
    tifffile.imwrite(path, image, photometric="rgb" if rgb else "minisblack", compression="zlib")
