"""The keys napari-ramseg reads and writes in napari's ``layer.metadata``: one name each.

Written by the NIfTI reader (``napari_io``), the sample data and the docks; read by the docks, the
label writers and the corrections they save. Plain strings, no Qt and no napari, so every layer
(and ``core``, for the ``image_meta`` a correction keeps) can use them.

Image layers
    ``AFFINE``: the 4 x 4 voxel-to-world matrix as nested lists (NIfTI reader), or None.
    ``NIFTI_HEADER``: the plain-JSON header that ``io.write_labels`` understands.
    ``SPACING``: the voxel spacing in array order ((z, y, x) or (y, x)); the reader also sets it as the
    layer's ``scale``.
    ``SOURCE_PATH``: the file the layer was read from. ``SOURCE``: a sample's credit line.
Labels layers made by the Segment dock
    ``MODEL``: the model folder or file that made the prediction (``model_of`` also reads the older
    ``LEGACY_MODEL``); ``DEVICE``: where it ran; ``CLASS_NAMES``: {"1": name, ...};
    ``ORIGINAL``: the prediction as made, saved as a correction's "original"; ``MEASURES``: the case's
    clinical measures (``core/evaluation/measures.measure_case``: sizes, the optic disc's vCDR and horizontal CDR,
    rim, cup inside the disc) and, for a whole fundus photograph, where the disc was found (``roi``).
Strokes layers (the Correct dock's, ``widgets/_strokes.py``)
    ``STROKES``: the name of the prediction layer the strokes refine; layer pickers skip these.
Preview layers (mixup and restoration previews, captions)
    ``PREVIEW``: True; layer pickers skip these. ``SOURCE_LAYER``: the image they were made from.
    ``PREVIEW_GROUP``: which preview a layer belongs to (``"mixup: <image>"``, ``"restoration preview"``);
    each group has a place of its own on the canvas (``widgets/_placement.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

AFFINE = "affine"
NIFTI_HEADER = "nifti_header"
SPACING = "spacing"
SOURCE_PATH = "source_path"
SOURCE = "source"

MODEL = "model"
LEGACY_MODEL = "ramseg_model"
DEVICE = "device"
CLASS_NAMES = "class_names"
ORIGINAL = "ramseg_original"
MEASURES = "measures"

STROKES = "ramseg_strokes"

PREVIEW = "ramseg_preview"
SOURCE_LAYER = "source_layer"
PREVIEW_GROUP = "ramseg_preview_group"

GEOMETRY = (AFFINE, NIFTI_HEADER, SPACING, SOURCE_PATH)  # what a layer made from an image keeps of it


def geometry_of(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The image's geometry keys (``GEOMETRY``) present in ``metadata``."""
    metadata = metadata or {}
    return {key: metadata[key] for key in GEOMETRY if key in metadata}


def model_of(metadata: Mapping[str, Any] | None) -> str | None:
    """The model that made a Labels layer's prediction, if its metadata says."""
    metadata = metadata or {}
    model = metadata.get(MODEL) or metadata.get(LEGACY_MODEL)
    return str(model) if model else None


def spacing_of(metadata: Mapping[str, Any] | None, ndim: int) -> tuple[float, ...] | None:
    """``SPACING`` as floats when it has one entry per axis of an ``ndim``-D array; None otherwise."""
    spacing = (metadata or {}).get(SPACING)
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        return None
    return values if len(values) == ndim else None
