"""A corrections project on disk: every corrected case keeps the model's mask and the clinician's.

Layout (in the spirit of MONAI Label's datastore, where a label carries the tag ``original`` for the
model's prediction and ``final`` for the clinician's correction)::

    <root>/
      split.json                    the fixed train/val assignment (see below)
      cases/<case_id>/
        image.tif | image.nii.gz    the image as it was segmented (volumes with an affine: NIfTI)
        original.tif | .nii.gz      the model's prediction (tag "original")
        final.tif | .nii.gz         the corrected mask (tag "final")
        strokes.tif | .nii.gz       when the mask was refined from strokes: the strokes (core/review/refine.py)
        provenance.json             model (path, model.json SHA-256, version), time, user, shapes, labels

A case folder is assembled under a hidden temporary name and
renamed into place, so a case either exists completely or not at all. Nothing is ever overwritten:
saving the same image again (same pixels) creates a new revision ``<name>-<digest>-r2``; fine-tuning
uses the latest revision of every image.

The validation split is fixed per *image* (all revisions of one image share it) at the moment the
image is first saved, and never reassigned: images are numbered in the order they are first saved,
and image 3 and every 5th image after the 5th (10, 15, 20, ...) are held out for validation, so the
first round with 3 images already has one validation case and the held-out share tends to 20%.
Held-out cases are never trained on, so Dice on them before and after fine-tuning stays comparable
across rounds (the reshuffled validation split of MONAI Label issue #1752 is what this avoids).
The assignment is also stored in every case's ``provenance.json``, from which ``split.json`` is
rebuilt if it goes missing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ... import __version__
from ...errors import RamsegInputError
from ...files import atomic_write_json, file_sha256, temporary_folder
from ...schema import read_json, validate
from ...io import ImageData, read_image, read_mask, write_image, write_labels
from ..models.checkpoint import load_metadata, resolve_model_path
from ..config import LabelScheme
from ..file_schemas import ProvenanceSchema, SplitSchema

__all__ = ["CorrectionStore", "CorrectionCase", "split_for_order", "read_provenance", "SPLIT_RULE"]

SPLIT_NAME = "split.json"
PROVENANCE_NAME = "provenance.json"
CASES_DIR = "cases"
SPLIT_RULE = ("fixed per image at first save: images are numbered in save order; image 3 and every 5th "
              "image from the 10th on (10, 15, 20, ...) are validation, the rest training; never reassigned")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def split_for_order(order: int) -> str:
    """``"val"`` or ``"train"`` for the ``order``-th distinct image saved (1-based); see SPLIT_RULE."""
    if order < 1:
        raise ValueError("image order starts at 1")
    return "val" if order == 3 or (order >= 10 and order % 5 == 0) else "train"


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


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return "unknown"


def _json_safe_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
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


class CorrectionStore:
    """A corrections project folder (created on first save); see the module docstring."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise RamsegInputError("corrections project must be a folder", self.root)

    # -- layout ----------------------------------------------------------------------------------
    @property
    def cases_dir(self) -> Path:
        return self.root / CASES_DIR

    def case_dir(self, case_id: str) -> Path:
        if not case_id or "/" in case_id or "\\" in case_id or case_id.startswith("."):
            raise RamsegInputError(f"not a case id: {case_id!r}", self.root)
        return self.cases_dir / case_id

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the project, so two savers never take the same revision or split slot."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: renames stay atomic; concurrent saves are not serialised
            yield
            return
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- the split -------------------------------------------------------------------------------
    def _read_split(self) -> dict[str, Any]:
        """split.json, validated; rebuilt from the cases' provenance when it is missing or damaged (it
        only repeats what every case's provenance.json records)."""
        path = self.root / SPLIT_NAME
        if path.exists():
            try:
                data = read_json(path, "split")
                validate(SplitSchema, data, "split", path)
                return data
            except RamsegInputError:
                pass
        return self._rebuild_split()

    def _rebuild_split(self) -> dict[str, Any]:
        """split.json from the copies of the assignment in every case's provenance.json."""
        data: dict[str, Any] = {"rule": SPLIT_RULE, "images": {}, "cases": {}}
        for prov in sorted(self._provenances(), key=lambda p: p.get("seq", 0)):
            digest, split = prov.get("image_sha256"), prov.get("split")
            if not digest or split not in ("train", "val"):
                continue
            data["images"].setdefault(digest, {"split": split, "order": prov.get("image_order", 0),
                                               "name": prov.get("image_name", "")})
            data["cases"][prov["case_id"]] = data["images"][digest]["split"]
        return data

    def splits(self) -> dict[str, str]:
        """case_id -> ``"train"`` or ``"val"`` for every saved case."""
        data = self._read_split()
        present = set(self.list_cases())
        return {c: s for c, s in data["cases"].items() if c in present}

    def split_of(self, case_id: str) -> str:
        split = self._read_split()["cases"].get(case_id)
        if split is None:
            split = self.info(case_id).get("split", "train")
        return split

    # -- saving ----------------------------------------------------------------------------------
    def save(self, image: np.ndarray, original: np.ndarray, final: np.ndarray, model_path: str | Path | None,
             image_name: str, image_meta: dict[str, Any] | None = None, *,
             labels: LabelScheme | None = None, strokes: np.ndarray | None = None) -> str:
        """Write one corrected case (image, "original", "final", provenance) and return its case id.

        ``image``: (H, W) grey, (H, W, 3/4) colour or (Z, Y, X) volume; the masks have its spatial
        shape. ``image_meta`` may hold ``affine`` and ``spacing`` (volumes) and any JSON-able notes.
        ``labels`` defaults to the model's label scheme and bounds the mask values. ``strokes``: those the
        final mask was refined from (``core.review.refine``'s format, the masks' shape), kept beside it.
        """
        image = np.asarray(image)
        original = np.asarray(original)
        final = np.asarray(final)
        is_rgb, spatial = self._check_shapes(image, original, final)
        if strokes is not None and np.shape(strokes) != final.shape:
            raise RamsegInputError(f"the strokes {np.shape(strokes)} and the corrected mask {final.shape} differ in shape")
        if is_rgb and image.shape[-1] == 4:
            image = image[..., :3]  # alpha carries nothing the model reads
        model_info, scheme = self._model_info(model_path, labels)
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
        meta = _json_safe_meta(image_meta)
        volume = image.ndim == 3 and not is_rgb
        ext = ".nii.gz" if volume and meta.get("affine") is not None else ".tif"
        digest = image_digest(image)
        safe_name = _SAFE.sub("_", image_name or "image").strip("._-")[:60] or "image"
        self.cases_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            data = self._read_split()
            entry = data["images"].get(digest)
            if entry is None:
                order = len(data["images"]) + 1
                entry = {"split": split_for_order(order), "order": order, "name": safe_name}
            revision = 1 + sum(1 for p in self._provenances() if p.get("image_sha256") == digest)
            seq = 1 + max([int(p.get("seq", 0)) for p in self._provenances()] + [0])
            case_id = f"{safe_name}-{digest[:8]}-r{revision}"
            while self.case_dir(case_id).exists():  # a name taken by an older, differently named revision
                revision += 1
                case_id = f"{safe_name}-{digest[:8]}-r{revision}"
            provenance = {
                "case_id": case_id,
                "seq": seq,
                "revision": revision,
                "split": entry["split"],
                "split_rule": SPLIT_RULE,
                "image_name": image_name,
                "image_sha256": digest,
                "image_order": entry["order"],
                "saved_at": _utc_now(),
                "who": _user(),
                "model": model_info,
                "labels": None if scheme is None else scheme.to_dict(),
                "is_volume": volume,
                "is_rgb": is_rgb,
                "image_shape": list(image.shape),
                "image_dtype": str(image.dtype),
                "mask_shape": list(spatial),
                "files": {"image": f"image{ext}", "original": f"original{ext}", "final": f"final{ext}"},
                "tags": {"original": "the model's prediction", "final": "the clinician's correction"},
                "changed_pixels": int(np.count_nonzero(original != final)),
                "stroked_pixels": None if strokes is None else int(np.count_nonzero(strokes)),
                "image_meta": meta,
                "package_version": __version__,
            }
            tmp = temporary_folder(self.cases_dir, f".tmp-{case_id}-")  # the user's umask, not drwx------
            try:
                like = self._like(image, meta, is_rgb)
                # a lossless copy; the case folder's rename makes the whole case appear at once
                write_image(tmp / f"image{ext}", like)
                like = like if ext == ".nii.gz" else None  # labels take the NIfTI affine, nothing else
                write_labels(tmp / f"original{ext}", original, like=like)
                write_labels(tmp / f"final{ext}", final, like=like)
                if strokes is not None:
                    provenance["files"]["strokes"] = f"strokes{ext}"
                    write_labels(tmp / f"strokes{ext}", np.asarray(strokes, np.uint8), like=like)
                atomic_write_json(tmp / PROVENANCE_NAME, provenance)
                # the assignment first: a case folder never exists without its split
                data["images"][digest] = entry
                data["cases"][case_id] = entry["split"]
                data["rule"] = SPLIT_RULE
                atomic_write_json(self.root / SPLIT_NAME, data)
                os.rename(tmp, self.case_dir(case_id))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return case_id

    @staticmethod
    def _check_shapes(image: np.ndarray, original: np.ndarray, final: np.ndarray) -> tuple[bool, tuple[int, ...]]:
        if original.shape != final.shape:
            raise RamsegInputError(f"the original mask {original.shape} and the corrected mask {final.shape} differ in shape")
        if final.ndim not in (2, 3) or final.size == 0:
            raise RamsegInputError(f"masks must be 2D or 3D, not shape {final.shape}")
        if image.shape == final.shape:
            return False, tuple(final.shape)
        if image.ndim == 3 and final.ndim == 2 and image.shape[:2] == final.shape and image.shape[-1] in (3, 4):
            return True, tuple(final.shape)
        raise RamsegInputError(f"the mask shape {final.shape} does not match the image shape {image.shape}")

    @staticmethod
    def _model_info(model_path: str | Path | None, labels: LabelScheme | None) -> tuple[dict[str, Any] | None, LabelScheme | None]:
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

    @staticmethod
    def _like(image: np.ndarray, meta: dict[str, Any], is_rgb: bool) -> ImageData:
        """The image as io's writers take it: its axes, and for volumes the affine and spacing."""
        affine = meta.get("affine")
        spacing = meta.get("spacing")
        if is_rgb or image.ndim == 2:
            return ImageData(array=image, axes="YXC" if is_rgb else "YX")
        return ImageData(array=image, affine=None if affine is None else np.asarray(affine, dtype=np.float64),
                         spacing=None if spacing is None else tuple(float(s) for s in spacing), axes="ZYX")

    # -- reading ---------------------------------------------------------------------------------
    def _provenances(self) -> Iterator[dict[str, Any]]:
        """Every case's provenance; a case whose provenance.json is missing or damaged is refused by
        name (read_provenance), never left out of a round without a word."""
        if not self.cases_dir.is_dir():
            return
        for folder in sorted(self.cases_dir.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            yield read_provenance(folder)

    def list_cases(self) -> list[str]:
        """Case ids in the order they were saved."""
        return [p["case_id"] for p in sorted(self._provenances(), key=lambda p: int(p.get("seq", 0)))]

    def __len__(self) -> int:
        return len(self.list_cases())

    def info(self, case_id: str) -> dict[str, Any]:
        """The provenance of one case, without loading its images."""
        folder = self.case_dir(case_id)
        if not folder.is_dir():
            raise RamsegInputError(f"no saved case {case_id!r}", self.root)
        return read_provenance(folder)

    def load(self, case_id: str) -> CorrectionCase:
        """Read one case back from disk."""
        prov = self.info(case_id)
        folder = self.case_dir(case_id)
        files = prov["files"]  # plain names inside the case's folder (ProvenanceSchema)
        # the reader drops length-1 axes; the recorded shape puts them back
        arrays = {}
        for key, shape in (("image", prov["image_shape"][:2] + [3] if prov["is_rgb"] else prov["image_shape"]),
                           ("original", prov["mask_shape"]), ("final", prov["mask_shape"])):
            path = folder / files[key]
            array = read_image(path).array if key == "image" else read_mask(path)
            if array.size != int(np.prod(shape)):
                raise RamsegInputError(f"holds shape {array.shape}, but the case's provenance.json records "
                                       f"{tuple(shape)}", path)
            arrays[key] = array.reshape(shape)
        strokes = None
        if files.get("strokes"):
            strokes = read_mask(folder / files["strokes"]).reshape(prov["mask_shape"])
        return CorrectionCase(case_id, self.split_of(case_id), arrays["image"], arrays["original"], arrays["final"],
                              prov, strokes)

    def latest_cases(self, split: str | None = None) -> list[str]:
        """The latest revision of every image (in save order), optionally of one split only."""
        latest: dict[str, dict[str, Any]] = {}
        for prov in sorted(self._provenances(), key=lambda p: int(p.get("seq", 0))):
            latest[prov.get("image_sha256", prov["case_id"])] = prov
        splits = self._read_split()["cases"]
        out = sorted(latest.values(), key=lambda p: int(p.get("seq", 0)))
        return [p["case_id"] for p in out if split is None or splits.get(p["case_id"], p.get("split")) == split]

    def find_image(self, image: np.ndarray) -> list[str]:
        """Case ids (all revisions, in save order) of this exact image."""
        digest = image_digest(np.asarray(image))
        return [p["case_id"] for p in sorted(self._provenances(), key=lambda p: int(p.get("seq", 0)))
                if p.get("image_sha256") == digest]

