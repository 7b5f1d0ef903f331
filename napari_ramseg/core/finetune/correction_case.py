"""One corrected case: what is checked before it is saved, what its provenance.json records of the image
and the model, and the case read back (:class:`CorrectionCase`).

The project that numbers, splits and keeps the cases is ``corrections.CorrectionStore``; its layout and
split rule are described there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RamsegInputError
from ...files import file_sha256
from ...io import ImageData
from ...schema import read_json, validate
from ..labels import LabelScheme
from ..file_schemas import ProvenanceSchema
from ..models.checkpoint import load_metadata, resolve_model_path

__all__ = ["CorrectionCase", "PROVENANCE_NAME", "read_provenance", "image_digest", "check_shapes", "check_values",
           "model_info", "json_safe_meta", "as_image_data"]

PROVENANCE_NAME = "provenance.json"


@dataclass
class CorrectionCase:
    """One saved case, loaded: the image as segmented, the model's mask and the corrected mask."""

    case_id: str
    split: str
    image: np.ndarray
    original: np.ndarray
    final: np.ndarray
    provenance: dict[str, Any]
    strokes: np.ndarray | None = None  # the strokes the final mask was refined from, if it was

    @property
    def is_volume(self) -> bool:
        return bool(self.provenance.get("is_volume"))

    @property
    def affine(self) -> np.ndarray | None:
        affine = self.provenance.get("image_meta", {}).get("affine")
        return None if affine is None else np.asarray(affine, dtype=np.float64)


def read_provenance(folder: Path) -> dict[str, Any]:
    """A case folder's provenance.json, validated (``file_schemas.ProvenanceSchema``): the one place it
    is read. A missing or damaged file is refused naming it, with what to do."""
    path = Path(folder) / PROVENANCE_NAME
    try:
        data = read_json(path, "correction provenance")
        validate(ProvenanceSchema, data, "correction provenance", path)
        if data["case_id"] != path.parent.name:
            raise RamsegInputError(f"invalid correction provenance (case_id {data['case_id']!r} is not its "
                                   f"folder's name)", path)
    except RamsegInputError as exc:
        raise RamsegInputError(f"{exc.problem}; this corrected case cannot be used: repair the file, or move "
                               f"the case folder out of the project", exc.path) from None
    return data


def image_digest(image: np.ndarray) -> str:
    """SHA-256 of an image's pixels, dtype and shape: the identity of "the same image"."""
    array = np.ascontiguousarray(image)
    h = hashlib.sha256()
    h.update(f"{array.dtype.str}|{array.shape}|".encode())
    h.update(memoryview(array).cast("B"))
    return h.hexdigest()


# ---------------------------------------------------------------------------- before a case is saved


def check_shapes(image: np.ndarray, original: np.ndarray, final: np.ndarray,
                 strokes: np.ndarray | None = None) -> tuple[bool, tuple[int, ...]]:
    """(is the image colour, the masks' spatial shape); RamsegInputError when the masks, the strokes and
    the image do not fit together."""
    if original.shape != final.shape:
        raise RamsegInputError(f"the original mask {original.shape} and the corrected mask {final.shape} differ in shape")
    if final.ndim not in (2, 3) or final.size == 0:
        raise RamsegInputError(f"masks must be 2D or 3D, not shape {final.shape}")
    if image.shape == final.shape:
        is_rgb = False
    elif image.ndim == 3 and final.ndim == 2 and image.shape[:2] == final.shape and image.shape[-1] in (3, 4):
        is_rgb = True
    else:
        raise RamsegInputError(f"the mask shape {final.shape} does not match the image shape {image.shape}")
    if strokes is not None and np.shape(strokes) != final.shape:
        raise RamsegInputError(f"the strokes {np.shape(strokes)} and the corrected mask {final.shape} differ in shape")
    return is_rgb, tuple(final.shape)


def check_values(image: np.ndarray, original: np.ndarray, final: np.ndarray, scheme: LabelScheme | None) -> None:
    """Whole, non-negative class numbers in both masks, none beyond the model's labels in the corrected one,
    and a finite image; RamsegInputError saying what to change otherwise."""
    for name, mask in (("original", original), ("final", final)):
        if mask.dtype.kind not in "biu" and not (mask.dtype.kind == "f" and np.array_equal(mask, np.round(mask))):
            raise RamsegInputError(f"the {name} mask must hold whole class numbers, not {mask.dtype} values")
        if mask.size and mask.min() < 0:
            raise RamsegInputError(f"the {name} mask holds negative values")
    if scheme is not None and final.size and int(final.max()) > scheme.num_classes:
        names = ", ".join(f"{i} {n}" for i, n in enumerate(scheme.names, start=1))
        raise RamsegInputError(
            f"the corrected mask uses label {int(final.max())}, but the model knows only labels 1..{scheme.num_classes} "
            f"({names}); repaint with those labels")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise RamsegInputError("the image contains NaN or Inf values")


# ---------------------------------------------------------------------------- what provenance.json records


def model_info(model_path: str | Path | None, labels: LabelScheme | None) -> tuple[dict[str, Any] | None, LabelScheme | None]:
    """(the model's entry of provenance.json, the label scheme the masks are bounded by): ``labels``, else
    the model's own; (None, ``labels``) without a model."""
    if model_path is None:
        return None, labels
    _, meta_path = resolve_model_path(model_path)
    metadata = load_metadata(model_path)
    raw = read_json(meta_path, "model metadata")  # validated by load_metadata above
    finetune = raw.get("finetune") or {}
    info = {
        "path": str(Path(model_path).resolve()),
        "model_json_sha256": file_sha256(meta_path),
        "package_version": raw.get("package_version"),
        "version": finetune.get("version"),
        "round": finetune.get("round", 0),
        "source_domains": list(metadata.domains),
    }
    return info, labels or metadata.config.labels


def json_safe_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON-serialisable part of an image's metadata (affine and spacing as lists)."""
    out: dict[str, Any] = {}
    for key, value in (meta or {}).items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Path):
            value = str(value)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def as_image_data(image: np.ndarray, meta: dict[str, Any], is_rgb: bool) -> ImageData:
    """The image as io's writers take it: its axes, and for volumes the affine and spacing."""
    affine = meta.get("affine")
    spacing = meta.get("spacing")
    if is_rgb or image.ndim == 2:
        return ImageData(array=image, axes="YXC" if is_rgb else "YX")
    return ImageData(array=image, affine=None if affine is None else np.asarray(affine, dtype=np.float64),
                     spacing=None if spacing is None else tuple(float(s) for s in spacing), axes="ZYX")
