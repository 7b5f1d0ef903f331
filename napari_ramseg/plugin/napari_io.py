"""napari's side of ``io.py``: the NIfTI and DICOM readers and the label writers declared in ``napari.yaml``.

The reader puts the voxel spacing into the layer ``scale`` (and ``metadata["spacing"]``) and the affine
(plus the plain-JSON header that :func:`napari_ramseg.io.write_labels` understands) into
``layer.metadata`` (keys: ``layer_meta``); the writers read them back from the layer's ``metadata``
so that saved labels land in the source volume's world space.
Bad files never raise into napari: they become a one-line notification.

napari's builtin reader also claims ``*.nii``, ``*.dcm``... (and fails on them), so napari would ask
the user which reader to take at every File > Open. :func:`prefer_our_readers` records napari-ramseg as
the reader for every pattern ``napari.yaml`` declares, in napari's own preference
(``settings.plugins.extension2reader``, Preferences > Plugins), without replacing a choice the user has
made. It runs when a napari-ramseg reader is first taken, a dock is opened or the sample is loaded.
(``viewer.open(path)`` from a script means napari's builtin reader by napari's default argument;
``viewer.open(path, plugin=None)`` follows the preference, ``plugin="napari-ramseg"`` names ours.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import layer_meta as lm
from ..errors import RamsegInputError
from ..io import ImageData, read_image, stem_of, suffix_of, write_labels

PLUGIN = "napari-ramseg"
NIFTI_SUFFIXES = (".nii", ".nii.gz")
LayerData = tuple  # (data, meta, layer_type)

# napari's null-layer sentinel: "the reader handled this path and there is nothing to add". Returning
# it after a failed read stops napari from raising a second, less helpful "no reader returned data".
_NOTHING_TO_ADD: list[LayerData] = [(None,)]


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def declared_reader_patterns() -> list[str]:
    """Every filename pattern the readers of ``napari.yaml`` declare, in order."""
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(Path(__file__).parents[1] / "napari.yaml")
    return [pattern for reader in manifest.contributions.readers or [] for pattern in reader.filename_patterns]


def prefer_our_readers() -> list[str]:
    """napari-ramseg as napari's preferred reader for each declared pattern the user has not given a
    reader of their own choice (module docstring); returns the patterns newly set."""
    try:
        from napari.settings import get_settings

        plugins = get_settings().plugins
        current = dict(plugins.extension2reader)
        new = {pattern: PLUGIN for pattern in declared_reader_patterns() if pattern not in current}
        if new:
            plugins.extension2reader = {**current, **new}
    except Exception as exc:  # an unreadable settings file must not stop a reader or a dock
        import logging

        logging.getLogger(__name__).warning("cannot record napari-ramseg as the reader preference: %s", exc)
        return []
    return list(new)


def _paths(path: str | Sequence[str]) -> list[str]:
    return [str(path)] if isinstance(path, (str, Path)) else [str(p) for p in path]


def get_nifti_reader(path: str | Sequence[str]) -> Callable[..., list[LayerData]] | None:
    """The reader for ``.nii`` / ``.nii.gz`` paths, or None for anything else (npe2 reader contract)."""
    paths = _paths(path)
    if not paths or not all(suffix_of(p) in NIFTI_SUFFIXES for p in paths):
        return None
    prefer_our_readers()  # taken once: napari stops asking for every pattern of ours
    return read_nifti_layers


def read_nifti_layers(path: str | Sequence[str], stack: bool = False) -> list[LayerData]:
    """One Image layer per NIfTI file, with spacing as ``scale`` and the affine in ``metadata``."""
    layers: list[LayerData] = []
    for p in _paths(path):
        try:
            layers.append(nifti_layer_data(p))
        except RamsegInputError as exc:
            _notify_error(str(exc))
    return layers or _NOTHING_TO_ADD


def nifti_layer_data(path: str | Path) -> LayerData:
    """``(data, meta, "image")`` for one NIfTI file; raises RamsegInputError for bad files."""
    image = read_image(path)
    if suffix_of(path) not in NIFTI_SUFFIXES:
        raise RamsegInputError("not a NIfTI file", path)
    return image_layer_data(image, stem_of(path), path)


def get_dicom_reader(path: str | Sequence[str]) -> Callable[..., list[LayerData]] | None:
    """The reader for a folder holding a DICOM series, or ``.dcm`` files (each stands for its series)."""
    from ..io import _dicom

    paths = _paths(path)
    if not paths:
        return None
    for p in paths:
        if not (suffix_of(p) in _dicom.DICOM_SUFFIXES or (Path(p).is_dir() and _dicom.holds_dicom(p))):
            return None
    prefer_our_readers()
    return read_dicom_layers


def read_dicom_layers(path: str | Sequence[str], stack: bool = False) -> list[LayerData]:
    """One Image layer per DICOM series: a folder of several series opens every one (the user keeps the one
    wanted); a series that cannot be read becomes a notification. Layers are named after the folder and the
    SeriesNumber, never after header fields that describe the patient or study."""
    from ..io import _dicom

    layers: list[LayerData] = []
    for p in _paths(path):
        try:
            if Path(p).is_dir():
                found = _dicom.find_series(p)
                if not found:
                    raise RamsegInputError("no DICOM image files in this folder", p)
                for series in found:
                    label = series.number or series.uid[-8:]
                    name = Path(p).name if len(found) == 1 else f"{Path(p).name} series {label}"
                    try:
                        layers.append(image_layer_data(_dicom.read_series(p, series=series.uid), name, p))
                    except RamsegInputError as exc:
                        _notify_error(str(exc))
            else:
                layers.append(image_layer_data(read_image(p), Path(p).parent.name, p))
        except RamsegInputError as exc:
            _notify_error(str(exc))
    return layers or _NOTHING_TO_ADD


def image_layer_data(image: ImageData, name: str, path: str | Path) -> LayerData:
    """``(data, meta, "image")`` for a volume or image read by io, its geometry in the layer (module docstring)."""
    meta: dict[str, Any] = {
        "name": name,
        "metadata": {
            lm.AFFINE: None if image.affine is None else np.asarray(image.affine).tolist(),
            lm.NIFTI_HEADER: image.header,
            lm.SOURCE_PATH: str(path),
        },
    }
    if image.spacing is not None:
        meta["scale"] = tuple(float(s) for s in image.spacing)
        meta["metadata"][lm.SPACING] = list(meta["scale"])
    limits = percentile_contrast_limits(image.array)
    if limits is not None:
        meta["contrast_limits"] = limits
    return image.array, meta, "image"


def percentile_contrast_limits(array: np.ndarray, low: float = 0.5, high: float = 99.5,
                               max_samples: int = 2_000_000) -> tuple[float, float] | None:
    """Display limits from the ``low``..``high`` percentiles, as the model's normalisation uses.

    MRI and CT intensities have long bright tails (a 0-9634 scan whose 99.5th percentile is 1678),
    so napari's default min..max makes the anatomy nearly black. Big volumes are sampled evenly.
    None when the image is flat (napari's own limits are then as good as any).
    """
    flat = np.asarray(array).reshape(-1)
    if flat.size == 0 or flat.dtype.kind not in "uif":
        return None
    if flat.size > max_samples:
        flat = flat[:: flat.size // max_samples]
    flat = flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat
    if flat.size == 0:
        return None
    lo, hi = (float(v) for v in np.percentile(flat, (low, high)))
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    return (lo, hi) if hi > lo else None


def like_from_layer_meta(data: np.ndarray, meta: dict[str, Any]) -> ImageData:
    """An :class:`ImageData` stand-in for the source image, rebuilt from a layer's attributes.

    Only geometry is needed (``write_labels`` checks the shape and takes affine, spacing and header),
    so the array is a zero-copy broadcast of the labels' shape.
    """
    shape = tuple(np.shape(data))
    layer_meta = meta.get("metadata") or {}
    affine = layer_meta.get(lm.AFFINE)
    header = layer_meta.get(lm.NIFTI_HEADER)
    scale = meta.get("scale")
    spacing = tuple(float(s) for s in scale) if scale is not None and len(scale) == len(shape) else None
    return ImageData(
        array=np.broadcast_to(np.zeros((), dtype=np.uint8), shape),
        spacing=spacing,
        affine=None if affine is None else np.asarray(affine, dtype=np.float64),
        header=header if isinstance(header, dict) else None,
        path=layer_meta.get(lm.SOURCE_PATH),
        axes="ZYX" if len(shape) == 3 else "YX",
    )


def _write(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    labels = np.asarray(data)
    try:
        like = like_from_layer_meta(labels, meta)
        # overwrite=True is deliberate: napari's save dialog has already asked the user to confirm
        # replacing an existing file, and a writer contribution has no way to ask again. Everywhere
        # else in napari-ramseg (CLI, fine-tune project folders) an existing file is never replaced.
        written = write_labels(path, labels, like=like, overwrite=True)
    except (RamsegInputError, ValueError, OSError) as exc:
        _notify_error(str(exc))
        return []
    return [str(written)]


def write_labels_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Labels layer as NIfTI, restoring the source volume's affine from ``metadata``."""
    return _write(path, data, meta)


def write_labels_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Labels layer as TIFF (a 3D stack keeps its spacing as ImageJ metadata)."""
    return _write(path, data, meta)


def write_labels_png(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a 2D Labels layer as an 8/16-bit PNG class-index image."""
    return _write(path, data, meta)
