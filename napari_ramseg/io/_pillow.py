"""PNG and JPEG (Pillow): reading images and masks, writing palette PNG labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ramseg.errors import RamsegInputError, one_line

from ._base import ImageData, check_claimed_size, drop_alpha, register_reader, register_writer, suffix_of


EXIF_ORIENTATION = 0x0112


@register_reader(".png", ".jpg", ".jpeg")
def _read_pillow(path: Path, as_mask: bool) -> ImageData:
    from PIL import Image, ImageOps

    kind = "PNG" if suffix_of(path) == ".png" else "JPEG"
    try:
        with Image.open(path) as im:
            bands = len(im.getbands()) if im.mode not in ("I;16", "I;16B", "I;16L", "I", "F") else 4
            check_claimed_size((im.size[1], im.size[0]), bands, path, kind)
            im.load()
            orientation = int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
            if orientation != 1:  # as displayed: a mask drawn on what the user sees lines up with it
                im = ImageOps.exif_transpose(im)
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
                array = drop_alpha(np.asarray(im))
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
                     header={"format": kind.lower(), "mode": mode, "exif_orientation": orientation})


@register_writer(".png")
def _write_png(path: Path, labels: np.ndarray, like: ImageData | None) -> None:
    """8-bit labels as a palette PNG: the pixel values stay the class indices (``read_mask`` gives them
    back), and any viewer shows the classes in colour instead of a black 0/1 image. Labels above 255
    stay 16-bit grey, which a palette cannot hold."""
    from PIL import Image

    from ..palette import png_palette

    image = Image.fromarray(labels)
    if labels.dtype == np.uint8:
        image.putpalette(png_palette())  # "L" -> "P", indices unchanged
    image.save(path, format="PNG")
