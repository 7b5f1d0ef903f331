"""What every image format module of :mod:`napari_ramseg.io` shares: :class:`ImageData`, file names,
the reader and writer registries, and the guards every reader applies."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from napari_ramseg.errors import RamsegInputError

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


def case_names(files: Iterable[str | Path]) -> dict[str, str]:
    """Each file's case name, keyed by its file name: its stem where no other file of the set shares it,
    else the whole file name (``a.png`` and ``a.tif`` are cases ``a.png`` and ``a.tif``, ``b.png`` is ``b``).

    ``files`` are the scans of one folder (their names must differ). The names are unique, depend only
    on the set of names (not on its order, so a rerun names every case the same), and a stem is taken
    as shared when it differs only in letter case, so masks named after the cases stay apart on a
    case-insensitive disk as well.
    """
    names = [Path(f).name for f in files]
    if len(set(names)) != len(names):
        raise ValueError("case names are made from the files of one folder; these repeat a file name")
    cases = {n: stem_of(n) for n in names}
    while True:  # a whole name may equal another file's stem ("a.png" beside "a.png.tif"): settle both
        counts = Counter(c.casefold() for c in cases.values())
        shared = [n for n, c in cases.items() if counts[c.casefold()] > 1 and c != n]
        if not shared:
            return cases
        cases.update((n, n) for n in shared)


# ------------------------------------------------------------------------------------------ registry

Reader = Callable[[Path, bool], ImageData]
Writer = Callable[[Path, np.ndarray, "ImageData | None"], None]
_READERS: dict[str, Reader] = {}
_WRITERS: dict[str, Writer] = {}  # label images
_IMAGE_WRITERS: dict[str, Writer] = {}  # lossless image copies


def _registrar(table: dict[str, Any], doc: str) -> Callable[..., Callable[[Any], Any]]:
    def register(*suffixes: str) -> Callable[[Any], Any]:
        def deco(func: Any) -> Any:
            for s in suffixes:
                table[s] = func
            return func

        return deco

    register.__doc__ = doc
    return register


register_reader = _registrar(_READERS, "Register ``reader(path, as_mask) -> ImageData`` for the given lower-case endings.")
register_writer = _registrar(_WRITERS, "Register ``writer(path, labels, like)`` for the given lower-case endings.")
register_image_writer = _registrar(
    _IMAGE_WRITERS, "Register ``writer(path, image, like)`` for lossless image copies (``io.write_image``).")


def is_supported(path: str | Path) -> bool:
    return suffix_of(path) in _READERS


# ----------------------------------------------------------------------------------- reader guards


def check_claimed_size(shape: Any, itemsize: int, path: Path, kind: str) -> None:
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
def quiet_logger(name: str):
    """Silence a library's own log lines about a broken file; the reader reports it in one line."""
    logger, drop = logging.getLogger(name), _DropAll()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def drop_alpha(array: np.ndarray) -> np.ndarray:
    """``(H, W, 2)`` grey + alpha -> grey; ``(H, W, 4)`` RGBA -> RGB; others unchanged."""
    if array.ndim == 3 and array.shape[-1] == 2:
        return array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 4:
        return array[..., :3]
    return array
