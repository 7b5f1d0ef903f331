"""The one place that brings any image to the network's channels and intensity range.

Training, validation, the CLI and the napari widgets all call these functions, so a model sees the
same input whatever the file format:

- :func:`normalize_intensity`: robust per-image (per-volume for MRI) min-max between the
  ``config.NORMALIZATION`` percentiles (0.5 and 99.5), over all channels together, mapped to [-1, 1]
  and clipped. If those percentiles coincide (e.g. a mostly-black image) the full min-max is used;
  a constant image becomes all zeros.
- :func:`to_model_channels`: a 2D image ``(H, W)`` / ``(H, W, C)`` -> ``(C_in, H, W)`` float32.
- :func:`volume_to_slices_25d`: a volume ``(Z, Y, X)`` -> 2.5D slices ``(Z, 3, Y, X)`` float32, with
  slices ``j-1, j, j+1`` as channels (edges repeat themselves), normalised over the whole volume; the
  only place 2.5D slices are built (``infer.Predictor.prepare`` uses it for one slice).

Resizing to the model's scale is not done here (see ``PreprocessConfig``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_ramseg.core.config import NORMALIZATION

__all__ = ["normalize_intensity", "to_model_channels", "volume_to_slices_25d", "NONFINITE_MESSAGE"]

NONFINITE_MESSAGE = "image contains NaN or Inf values"


def normalize_intensity(array: np.ndarray) -> np.ndarray:
    """Percentile min-max of the whole array to [-1, 1], as float32 (same shape).

    Raises ``ValueError(NONFINITE_MESSAGE)`` for NaN/Inf; callers turn it into a RamsegInputError
    naming the file.
    """
    array = np.asarray(array)
    if array.size == 0:
        raise ValueError("image is empty")
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"image pixel type {array.dtype} is not supported")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(NONFINITE_MESSAGE)
    low_p, high_p = NORMALIZATION["low_percentile"], NORMALIZATION["high_percentile"]
    out_lo, out_hi = NORMALIZATION["range"]
    lo, hi = _percentiles(array, (low_p, high_p))
    if not hi > lo:
        lo, hi = float(array.min()), float(array.max())
        if not hi > lo:
            return np.zeros(array.shape, dtype=np.float32)
    span = hi - lo
    wide = array.dtype.itemsize > 4 or not np.isfinite(np.float32(span)) or np.float32(span) == 0
    work = np.float64 if wide else np.float32
    out = array.astype(work, copy=True)
    out -= work(lo)
    out /= work(span)  # divide (not multiply by 1/span): a tiny span must not overflow to inf
    out *= work(out_hi - out_lo)
    out += work(out_lo)
    np.clip(out, out_lo, out_hi, out=out)
    return out.astype(np.float32, copy=False)


def _percentiles(array: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    """``np.percentile`` (linear method); exact and much faster via a histogram for 8/16-bit images."""
    if array.dtype in (np.uint8, np.uint16):
        counts = np.bincount(array.ravel(), minlength=2)
        cdf = np.cumsum(counts)
        n = int(cdf[-1])
        out = []
        for p in q:
            pos = p / 100.0 * (n - 1)
            i = int(np.floor(pos))
            a = int(np.searchsorted(cdf, i, side="right"))  # value of the i-th order statistic
            b = int(np.searchsorted(cdf, min(i + 1, n - 1), side="right"))
            out.append(a + (pos - i) * (b - a))
        return float(out[0]), float(out[1])
    lo, hi = np.percentile(array, q)
    return float(lo), float(hi)


def to_model_channels(image: np.ndarray, in_channels: int = 3) -> np.ndarray:
    """A 2D image -> ``(in_channels, H, W)`` float32 in [-1, 1].

    Accepts ``(H, W)`` grey (repeated to every channel), ``(H, W, 1)``, ``(H, W, 2)`` grey + alpha
    (alpha dropped), ``(H, W, 3)`` RGB and ``(H, W, 4)`` RGBA (alpha dropped); uint8, uint16 or float.
    With ``in_channels=1`` a colour image becomes the mean of its channels.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        c = image.shape[-1]
        if c == 1 or c == 2:
            image = image[..., 0]
        elif c == 4:
            image = image[..., :3]
        elif c != 3:
            raise ValueError(f"expected (H, W) or (H, W, 1-4) channels-last image, not shape {image.shape}")
    elif image.ndim != 2:
        raise ValueError(f"expected a 2D image (H, W) or (H, W, C), not shape {image.shape}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, not {in_channels}")
    if in_channels == 1 and image.ndim == 3:
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise ValueError(NONFINITE_MESSAGE)
        image = image.mean(axis=-1, dtype=np.float64)
    norm = normalize_intensity(image)
    if norm.ndim == 2:
        out = np.broadcast_to(norm, (in_channels, *norm.shape))
    else:
        out = np.moveaxis(norm, -1, 0)
    return np.ascontiguousarray(out, dtype=np.float32)


def volume_to_slices_25d(volume: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
    """``(Z, Y, X)`` -> ``(Z, 3, Y, X)`` float32: channels are slices ``j-1, j, j+1`` (clamped).

    The one place 2.5D slices are made. The intensity normalisation is over the whole volume, also
    when ``indices`` asks for only some slices (then ``(len(indices), 3, Y, X)``, in that order)."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a volume (Z, Y, X), not shape {volume.shape}")
    norm = normalize_intensity(volume)
    z = norm.shape[0]
    j = np.arange(z) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if j.size and (j.min() < 0 or j.max() >= z):
        raise ValueError(f"slice index outside 0..{z - 1}: {j.tolist()}")
    prev, nxt = np.clip(j - 1, 0, z - 1), np.clip(j + 1, 0, z - 1)
    return np.ascontiguousarray(np.stack([norm[prev], norm[j], norm[nxt]], axis=1), dtype=np.float32)
