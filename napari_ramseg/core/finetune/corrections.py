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
rebuilt if it goes missing. What is checked before a case is saved, what its provenance records of the
image and the model, and a case read back are ``correction_case.py``'s.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ... import __version__
from ...errors import RamsegInputError
from ...files import atomic_write_json, temporary_folder
from ...io import ImageData, read_image, read_mask, write_image, write_labels
from ...schema import read_json, validate
from ..labels import LabelScheme
from ..file_schemas import SplitSchema
from .correction_case import (PROVENANCE_NAME, CorrectionCase, as_image_data, check_shapes, check_values,
                              image_digest, json_safe_meta, model_info, read_provenance)

__all__ = ["CorrectionStore", "split_for_order", "SPLIT_RULE"]

SPLIT_NAME = "split.json"
CASES_DIR = "cases"
SPLIT_RULE = ("fixed per image at first save: images are numbered in save order; image 3 and every 5th "
              "image from the 10th on (10, 15, 20, ...) are validation, the rest training; never reassigned")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def split_for_order(order: int) -> str:
    """``"val"`` or ``"train"`` for the ``order``-th distinct image saved (1-based); see SPLIT_RULE."""
    if order < 1:
        raise ValueError("image order starts at 1")
    return "val" if order == 3 or (order >= 10 and order % 5 == 0) else "train"


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return "unknown"


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
        is_rgb, spatial = check_shapes(image, original, final, strokes)
        if is_rgb and image.shape[-1] == 4:
            image = image[..., :3]  # alpha carries nothing the model reads
        model, scheme = model_info(model_path, labels)
        check_values(image, original, final, scheme)
        meta = json_safe_meta(image_meta)
        volume = image.ndim == 3 and not is_rgb
        ext = ".nii.gz" if volume and meta.get("affine") is not None else ".tif"
        digest = image_digest(image)
        safe_name = _SAFE.sub("_", image_name or "image").strip("._-")[:60] or "image"
        self.cases_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            data, entry, revision, seq, case_id = self._next_case(digest, safe_name)
            provenance = {
                "case_id": case_id, "seq": seq, "revision": revision, "split": entry["split"],
                "split_rule": SPLIT_RULE, "image_name": image_name, "image_sha256": digest,
                "image_order": entry["order"], "saved_at": _utc_now(), "who": _user(), "model": model,
                "labels": None if scheme is None else scheme.to_dict(), "is_volume": volume, "is_rgb": is_rgb,
                "image_shape": list(image.shape), "image_dtype": str(image.dtype), "mask_shape": list(spatial),
                "files": {"image": f"image{ext}", "original": f"original{ext}", "final": f"final{ext}"},
                "tags": {"original": "the model's prediction", "final": "the clinician's correction"},
                "changed_pixels": int(np.count_nonzero(original != final)),
                "stroked_pixels": None if strokes is None else int(np.count_nonzero(strokes)),
                "image_meta": meta, "package_version": __version__,
            }
            data["images"][digest] = entry
            data["cases"][case_id] = entry["split"]
            self._write_case(case_id, provenance, data, ext, as_image_data(image, meta, is_rgb), original, final,
                             strokes)
        return case_id

    def _next_case(self, digest: str, safe_name: str) -> tuple[dict[str, Any], dict[str, Any], int, int, str]:
        """(split.json as it is, the image's entry in it (a new image gets the next order and its split),
        the revision, the save sequence number, the case id) of a case about to be saved; under the lock."""
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
        return data, entry, revision, seq, case_id

    def _write_case(self, case_id: str, provenance: dict[str, Any], split: dict[str, Any], ext: str,
                    like: ImageData | None, original: np.ndarray, final: np.ndarray, strokes: np.ndarray | None) -> None:
        """The case's files in a hidden folder, then split.json (the assignment first: a case folder never
        exists without its split), then the folder renamed into place: the case appears at once, or not."""
        tmp = temporary_folder(self.cases_dir, f".tmp-{case_id}-")  # the user's umask, not drwx------
        try:
            write_image(tmp / f"image{ext}", like)  # a lossless copy
            like = like if ext == ".nii.gz" else None  # labels take the NIfTI affine, nothing else
            write_labels(tmp / f"original{ext}", original, like=like)
            write_labels(tmp / f"final{ext}", final, like=like)
            if strokes is not None:
                provenance["files"]["strokes"] = f"strokes{ext}"
                write_labels(tmp / f"strokes{ext}", np.asarray(strokes, np.uint8), like=like)
            atomic_write_json(tmp / PROVENANCE_NAME, provenance)
            split["rule"] = SPLIT_RULE
            atomic_write_json(self.root / SPLIT_NAME, split)
            os.rename(tmp, self.case_dir(case_id))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

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

