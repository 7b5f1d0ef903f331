"""Dataset layouts -> cases -> loaded samples.

Three layouts are read (DESIGN.md, "Data formats the engine reads"); :func:`detect_format` tells them
apart and :func:`discover` lists their cases:

``domains`` (native)
    ``<root>/<domain>/images/<case>.<png|jpg|jpeg|tif|tiff|nii|nii.gz>`` with the mask at
    ``<root>/<domain>/labels/<case>.<png|tif|tiff|nii|nii.gz>``. Other subfolders (``fov/``...) are
    ignored. Masks are class-index images (0 background, 1..K); binary masks stored as 0/255 are read
    as 0/1. Optional ``<root>/dataset.json``::

        {
          "labels": {"names": ["disc", "cup"], "kind": "nested"},
          "splits": {"train": ["<domain>/<case>", ...], "val": [...], "test": [...]}
        }

    ``labels.kind`` is ``"nested"`` (default) or ``"exclusive"`` (see ``config.LabelScheme``).
    ``splits`` is optional; its keys are ``train``, ``val`` and ``test``, its entries
    ``"<domain>/<case stem>"``. Cases not listed stay unassigned (``split=None``) and count as training
    data. Without ``dataset.json`` the scheme is nested with names ``label_1 .. label_K``, K being the
    largest mask value found.
``dofe`` (DoFE fundus packaging)
    ``<root>/DomainK/{train,test}/ROIs/{image,mask}/<case>.png``; masks hold 255 background,
    128 disc rim, 0 cup, converted (with DoFE's own thresholds: >200, 51..200, <=50) to
    0 background, 1 disc rim, 2 cup under ``OPTIC_DISC_CUP``. The folder gives the split.
``saml`` (SAML multi-site prostate)
    ``<root>/<site>/<case>.nii.gz`` with ``<case>_segmentation.nii.gz`` (any capitalisation);
    mask label 2 counts as 1, scheme ``PROSTATE``.

Volumes: :func:`discover` yields one :class:`Case` per volume (``slice_index=None``).
:func:`load_volume_samples` turns a volume case into one 2.5D :class:`Sample` per slice, and
:func:`expand_slices` turns volume cases into one case per slice (``slice_index`` set) that
:func:`load_sample` can load one at a time (with a small per-process volume cache).
:func:`load_samples` loads any list of cases, expanding volumes.

Splits: ``discover(split="train")`` (the default) returns every case that is not test data
(``train``, ``val`` and unassigned); ``split="test"`` only test cases; ``split=None`` all.
:func:`split_train_val` then holds out validation cases per domain, deterministically.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np

from napari_ramseg import io as rio
from napari_ramseg.core.config import OPTIC_DISC_CUP, PROSTATE, LabelScheme
from napari_ramseg.core.preprocess import to_model_channels, volume_to_slices_25d
from napari_ramseg.errors import RamsegInputError

__all__ = [
    "FORMATS",
    "Case",
    "Sample",
    "Dataset",
    "detect_format",
    "discover",
    "convert_mask",
    "load_sample",
    "load_volume_samples",
    "load_samples",
    "expand_slices",
    "split_train_val",
    "cases_checksum",
]

Format = Literal["domains", "dofe", "saml"]
FORMATS: tuple[str, ...] = ("domains", "dofe", "saml")
SPLITS: tuple[str, ...] = ("train", "val", "test")
MASK_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".nii.gz", ".nii")
_SEG_RE = re.compile(r"^(?P<case>.+?)_segmentation$", re.IGNORECASE)
_MAX_INFERRED_LABELS = 64


@dataclass
class Case:
    """One image (2D, or a whole volume when ``slice_index`` is None) and its mask."""

    image: Path
    mask: Path | None
    domain: str
    name: str
    split: str | None = None
    slice_index: int | None = None

    @property
    def key(self) -> str:
        """``"<domain>/<name>"``, the form used by ``dataset.json`` splits."""
        return f"{self.domain}/{self.name}"


@dataclass
class Sample:
    """A loaded case: ``image`` (3, H, W) float32 in [-1, 1], ``mask`` (H, W) uint8 class indices."""

    image: np.ndarray
    mask: np.ndarray | None
    domain: str
    name: str
    slice_index: int | None = None
    spacing: tuple[float, ...] | None = None  # (z, y, x) of this sample's pixel grid, for volume slices with one


@dataclass
class Dataset:
    format: str
    root: Path
    labels: LabelScheme
    cases: list[Case]
    domains: list[str]
    splits_from: str | None = None  # "dataset.json", "folders" or None
    extra: dict = field(default_factory=dict)

    def by_domain(self) -> dict[str, list[Case]]:
        out: dict[str, list[Case]] = {d: [] for d in self.domains}
        for case in self.cases:
            out.setdefault(case.domain, []).append(case)
        return out

    def __len__(self) -> int:
        return len(self.cases)


# ------------------------------------------------------------------------------------ folder helpers


def _visible(p: Path) -> bool:
    return not (p.name.startswith(".") or p.name.startswith("__"))


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and _visible(p)), key=lambda p: p.name)


def _child_dir(parent: Path | None, name: str) -> Path | None:
    """``parent/name`` if it is a folder, matching the name case-insensitively when needed."""
    if parent is None or not parent.is_dir():
        return None
    exact = parent / name
    if exact.is_dir():
        return exact
    for p in parent.iterdir():
        if p.is_dir() and p.name.lower() == name.lower():
            return p
    return None


def _files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and _visible(p)), key=lambda p: p.name)


def _is_dofe_domain(d: Path) -> bool:
    return any(_child_dir(_child_dir(d, s), "ROIs") is not None for s in ("train", "test"))


def _is_saml_site(d: Path) -> bool:
    return any(
        rio.suffix_of(f) in (".nii", ".nii.gz") and _SEG_RE.match(rio.stem_of(f)) for f in _files(d)
    )


def _has_nifti(d: Path) -> bool:
    return any(rio.suffix_of(f) in (".nii", ".nii.gz") for f in _files(d))


def _is_domains_domain(d: Path) -> bool:
    return _child_dir(d, "images") is not None


_LAYOUTS_HELP = (
    "expected <root>/<domain>/images/<case>.png with <root>/<domain>/labels/<case>.png, "
    "or DoFE <root>/DomainK/{train,test}/ROIs/{image,mask}/*.png, "
    "or SAML <root>/<site>/<case>.nii.gz with <case>_segmentation.nii.gz"
)


def _check_root(root: Path) -> None:
    if not root.exists():
        raise RamsegInputError("dataset folder not found", root)
    if not root.is_dir():
        raise RamsegInputError("is a file; give the dataset folder", root)


def detect_format(root: str | Path) -> str:
    """``"domains"``, ``"dofe"`` or ``"saml"``; RamsegInputError when no layout fits."""
    root = Path(root)
    _check_root(root)
    subdirs = _subdirs(root)
    if not subdirs and not _files(root):
        raise RamsegInputError("dataset folder is empty", root)
    if any(_is_dofe_domain(d) for d in subdirs):
        return "dofe"
    if any(_is_saml_site(d) for d in subdirs):
        return "saml"
    if any(_is_domains_domain(d) for d in subdirs):
        return "domains"
    if _is_domains_domain(root):
        raise RamsegInputError(
            "this is a single domain folder (it holds images/); give the folder above it, which holds one folder per domain",
            root,
        )
    if _is_dofe_domain(root):
        raise RamsegInputError("this is a single DoFE domain; give the folder that holds Domain1, Domain2, ...", root)
    if _is_saml_site(root):
        raise RamsegInputError("this is a single SAML site; give the folder that holds one folder per site", root)
    raise RamsegInputError(f"no known dataset layout: {_LAYOUTS_HELP}", root)


def _list_domains(root: Path, fmt: str) -> list[str]:
    # a SAML site is any folder with NIfTI files, so a site whose masks are all missing is reported
    test = {"domains": _is_domains_domain, "dofe": _is_dofe_domain, "saml": _has_nifti}[fmt]
    return [d.name for d in _subdirs(root) if test(d)]


# --------------------------------------------------------------------------------------- pairing


def _index(folder: Path, suffixes: Sequence[str], role: str) -> tuple[dict[str, Path], list[Path]]:
    """stem -> file for files with a supported ending; also the files skipped for their type."""
    found: dict[str, Path] = {}
    skipped: list[Path] = []
    for f in _files(folder):
        suffix = rio.suffix_of(f)
        if suffix not in suffixes:
            skipped.append(f)
            continue
        stem = rio.stem_of(f)
        if stem in found:
            raise RamsegInputError(
                f"two {role} files share the name {stem!r}: {found[stem].name} and {f.name}; keep one", folder
            )
        found[stem] = f
    return found, skipped


def _pair(
    img_dir: Path,
    mask_dir: Path | None,
    domain: str,
    split: str | None,
    require_masks: bool,
    mask_hint: str,
) -> list[Case]:
    images, skipped_images = _index(img_dir, rio.SUPPORTED_IMAGE_SUFFIXES, "image")
    masks: dict[str, Path] = {}
    if mask_dir is not None:
        masks, skipped_masks = _index(mask_dir, MASK_SUFFIXES, "mask")
        for f in skipped_masks:
            if rio.suffix_of(f) in rio.SUPPORTED_IMAGE_SUFFIXES:  # e.g. a JPEG mask
                raise RamsegInputError(
                    f"masks must be PNG, TIFF or NIfTI ({rio.suffix_of(f)} is lossy or not a label format)", f
                )
    for stem, m in masks.items():
        if stem not in images:
            near = [f.name for f in skipped_images if rio.stem_of(f) == stem]
            hint = f" ({near[0]} has an unsupported file type)" if near else ""
            raise RamsegInputError(f"mask has no image: expected {img_dir / stem}.<ext>{hint}", m)
    cases = []
    for stem in sorted(images):
        mask = masks.get(stem)
        if mask is None and require_masks:
            raise RamsegInputError(f"image has no mask: expected {mask_hint.format(stem=stem)}", images[stem])
        cases.append(Case(image=images[stem], mask=mask, domain=domain, name=stem, split=split))
    return cases


def _domains_cases(root: Path, domain: str, require_masks: bool) -> list[Case]:
    ddir = root / domain
    img_dir = _child_dir(ddir, "images")
    lbl_dir = _child_dir(ddir, "labels")
    assert img_dir is not None
    hint = str((lbl_dir or ddir / "labels") / "{stem}") + ".png (or .tif, .nii.gz)"
    return _pair(img_dir, lbl_dir, domain, None, require_masks, hint)


def _dofe_cases(root: Path, domain: str, require_masks: bool) -> list[Case]:
    cases: list[Case] = []
    for split in ("train", "test"):
        roi = _child_dir(_child_dir(root / domain, split), "ROIs")
        if roi is None:
            continue
        img_dir = _child_dir(roi, "image")
        mask_dir = _child_dir(roi, "mask")
        if img_dir is None:
            raise RamsegInputError("DoFE folder has no image/ subfolder", roi)
        hint = str((mask_dir or roi / "mask") / "{stem}") + ".png"
        cases += _pair(img_dir, mask_dir, domain, split, require_masks, hint)
    return cases


def _saml_cases(root: Path, domain: str, require_masks: bool) -> list[Case]:
    site = root / domain
    images: dict[str, Path] = {}
    segs: dict[str, Path] = {}
    for f in _files(site):
        if rio.suffix_of(f) not in (".nii", ".nii.gz"):
            continue
        stem = rio.stem_of(f)
        m = _SEG_RE.match(stem)
        target, key = (segs, m.group("case")) if m else (images, stem)
        if key in target:
            raise RamsegInputError(f"two files for case {key!r}: {target[key].name} and {f.name}", site)
        target[key] = f
    for key, seg in segs.items():
        if key not in images:
            raise RamsegInputError(f"segmentation has no image: expected {site / key}.nii.gz", seg)
    cases = []
    for key in sorted(images):
        seg = segs.get(key)
        if seg is None and require_masks:
            raise RamsegInputError(f"volume has no mask: expected {site / key}_segmentation.nii.gz", images[key])
        cases.append(Case(image=images[key], mask=seg, domain=domain, name=key, split=None))
    return cases


# ----------------------------------------------------------------------------------- dataset.json


def _read_dataset_json(root: Path) -> dict | None:
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RamsegInputError(f"not valid JSON: {rio._why(exc)}", path) from None
    if not isinstance(spec, dict):
        raise RamsegInputError("must hold a JSON object", path)
    out: dict = {"path": path}
    if "labels" in spec:
        lab = spec["labels"]
        try:
            if isinstance(lab, list):
                lab = {"names": lab}
            names = lab["names"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("labels.names must be a list of strings")
            out["labels"] = LabelScheme(tuple(names), lab.get("kind", "nested"))
        except (KeyError, TypeError, ValueError) as exc:
            raise RamsegInputError(
                f'bad "labels" ({exc}); expected {{"names": ["disc", "cup"], "kind": "nested" | "exclusive"}}', path
            ) from None
    if "splits" in spec:
        splits = spec["splits"]
        if not isinstance(splits, dict) or any(k not in SPLITS for k in splits):
            raise RamsegInputError(f'"splits" must be an object with keys among {list(SPLITS)}', path)
        assigned: dict[str, str] = {}
        for key, entries in splits.items():
            if not isinstance(entries, list):
                raise RamsegInputError(f'splits.{key} must be a list of "<domain>/<case>"', path)
            for entry in entries:
                if not isinstance(entry, str) or entry.count("/") != 1:
                    raise RamsegInputError(f'split entry {entry!r} must read "<domain>/<case>"', path)
                if entry in assigned and assigned[entry] != key:
                    raise RamsegInputError(f"case {entry!r} is in two splits ({assigned[entry]}, {key})", path)
                assigned[entry] = key
        out["splits"] = assigned
    return out


def _apply_splits(cases: list[Case], assigned: dict[str, str], domains: Iterable[str], path: Path) -> None:
    by_key = {c.key: c for c in cases}
    selected = set(domains)
    for entry, split in assigned.items():
        domain = entry.split("/", 1)[0]
        if domain not in selected:
            continue
        case = by_key.get(entry)
        if case is None:
            raise RamsegInputError(f"split {split!r} names case {entry!r}, which does not exist", path)
        case.split = split


# ---------------------------------------------------------------------------------------- discover


def discover(
    root: str | Path,
    format: str = "auto",
    domains: Sequence[str] | None = None,
    *,
    labels: LabelScheme | None = None,
    require_masks: bool = True,
    split: str | None = "train",
) -> Dataset:
    """List the cases of a dataset folder (see the module docstring for layouts and splits).

    ``domains`` picks domains (in the given order); ``labels`` overrides the label scheme;
    ``split`` is ``"train"`` (everything but test data), ``"test"`` or None (all).
    """
    root = Path(root)
    _check_root(root)
    if format == "auto":
        fmt = detect_format(root)
    elif format in FORMATS:
        fmt = format
    else:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, not {format!r}")
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, not {split!r}")
    available = _list_domains(root, fmt)
    if not available:
        raise RamsegInputError(f"no {fmt} domain folders found: {_LAYOUTS_HELP}", root)
    if domains:
        chosen = list(dict.fromkeys(domains))
        for d in chosen:
            if d not in available:
                raise RamsegInputError(f"domain {d!r} not found; available: {', '.join(available)}", root)
    else:
        chosen = available
    spec = _read_dataset_json(root)
    reader = {"domains": _domains_cases, "dofe": _dofe_cases, "saml": _saml_cases}[fmt]
    cases: list[Case] = []
    for d in chosen:
        found = reader(root, d, require_masks)
        if not found:
            raise RamsegInputError("domain folder holds no images", root / d)
        cases += found
    splits_from = "folders" if fmt == "dofe" else None
    if spec and "splits" in spec:
        _apply_splits(cases, spec["splits"], chosen, spec["path"])
        splits_from = "dataset.json"

    if labels is None:
        if spec and "labels" in spec:
            labels = spec["labels"]
        elif fmt == "dofe":
            labels = OPTIC_DISC_CUP
        elif fmt == "saml":
            labels = PROSTATE
        else:
            labels = _infer_labels(cases)

    if split == "train":
        cases = [c for c in cases if c.split != "test"]
    elif split == "test":
        cases = [c for c in cases if c.split == "test"]
    if not cases:
        raise RamsegInputError(f"no {split} cases in domains {', '.join(chosen)}", root)
    return Dataset(format=fmt, root=root, labels=labels, cases=cases, domains=chosen, splits_from=splits_from)


class MaskLabelsError(RamsegInputError):
    """A mask holds values the label scheme has no name for (the caller may know why: a wrong model)."""


def declared_labels(root: str | Path, fmt: str) -> tuple[LabelScheme, str] | None:
    """The label scheme a dataset states without reading its masks, and where it says so.

    ``dataset.json`` labels first, then the layout's own scheme (DoFE: disc, cup; SAML: prostate);
    None for a ``domains`` dataset without ``dataset.json`` (its labels are only known from masks).
    """
    spec = _read_dataset_json(Path(root))
    if spec and "labels" in spec:
        return spec["labels"], str(spec["path"])
    if fmt == "dofe":
        return OPTIC_DISC_CUP, "the DoFE layout"
    if fmt == "saml":
        return PROSTATE, "the SAML layout"
    return None


def _mask_values(mask: np.ndarray) -> np.ndarray:
    if mask.dtype == np.uint8:
        return np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    return np.unique(mask)


def _infer_labels(cases: Sequence[Case]) -> LabelScheme:
    """Nested ``label_1..label_K`` with K the largest mask value (0/255 binary masks count as K=1)."""
    k = 0
    for case in cases:
        if case.mask is None:
            continue
        values = _mask_values(rio.read_mask(case.mask))
        top = int(values.max()) if values.size else 0
        if top == 255 and set(values.tolist()) <= {0, 255}:
            top = 1
        if top > _MAX_INFERRED_LABELS:
            raise RamsegInputError(
                f"mask holds value {top}; masks must be class-index images (0 background, 1..K), "
                "or describe the labels in dataset.json",
                case.mask,
            )
        k = max(k, top)
    return LabelScheme(tuple(f"label_{i}" for i in range(1, max(k, 1) + 1)), "nested")


# ------------------------------------------------------------------------------------------ loading


def convert_mask(mask: np.ndarray, fmt: str, labels: LabelScheme, path: str | Path | None = None) -> np.ndarray:
    """Bring a raw mask of a layout to class indices 0..labels.num_classes (uint8), or raise."""
    if fmt == "dofe":
        raw = mask
        mask = np.full(raw.shape, 2, dtype=np.uint8)  # <= 50: cup
        mask[raw > 50] = 1  # disc rim
        mask[raw > 200] = 0  # background
    elif fmt == "saml":
        mask = mask.copy()
        mask[mask == 2] = 1
    elif fmt == "domains":
        if labels.num_classes < 255 and mask.size:
            values = _mask_values(mask)
            if values.max() == 255 and set(values.tolist()) <= {0, 255}:
                mask = (mask == 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    values = _mask_values(mask)
    bad = values[values > labels.num_classes]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise MaskLabelsError(
            f"mask values {shown} are outside 0..{labels.num_classes} (labels: {', '.join(labels.names)})", path
        )
    return np.ascontiguousarray(mask, dtype=np.uint8)


def _image_channels(array: np.ndarray, path: Path) -> np.ndarray:
    try:
        return to_model_channels(array)
    except ValueError as exc:
        raise RamsegInputError(str(exc), path) from None


def _read_case_mask(case: Case, shape: tuple[int, ...], labels: LabelScheme, fmt: str) -> np.ndarray | None:
    if case.mask is None:
        return None
    mask = rio.read_mask(case.mask)
    if mask.ndim == len(shape) + 1 and mask.shape[0] == 1:
        mask = mask[0]
    elif mask.ndim + 1 == len(shape) and shape[0] == 1:
        mask = mask[None]
    if tuple(mask.shape) != tuple(shape):
        raise RamsegInputError(
            f"mask shape {tuple(mask.shape)} does not match image {case.image} shape {tuple(shape)}", case.mask
        )
    return convert_mask(mask, fmt, labels, case.mask)


def _samples_of(case: Case, data: rio.ImageData, labels: LabelScheme, fmt: str) -> list[Sample]:
    if data.is_volume and data.array.shape[0] > 1:
        try:
            slices = volume_to_slices_25d(data.array)
        except ValueError as exc:
            raise RamsegInputError(str(exc), case.image) from None
        mask = _read_case_mask(case, data.array.shape, labels, fmt)
        return [
            Sample(slices[j], None if mask is None else mask[j], case.domain, case.name, slice_index=j,
                   spacing=data.spacing)
            for j in range(slices.shape[0])
        ]
    array = data.array[0] if data.is_volume else data.array  # a one-slice volume is a 2D image
    image = _image_channels(array, case.image)
    mask = _read_case_mask(case, image.shape[1:], labels, fmt)
    return [Sample(image, mask, case.domain, case.name, slice_index=0 if data.is_volume else None)]


def load_volume_samples(case: Case, labels: LabelScheme, fmt: str = "saml") -> list[Sample]:
    """One 2.5D sample per slice of a volume case (a 2D image gives one sample)."""
    return _samples_of(case, rio.read_image(case.image), labels, fmt)


@functools.lru_cache(maxsize=4)
def _cached_volume(image: str, mask: str | None, stamp: tuple, labels: LabelScheme, fmt: str) -> list[Sample]:
    case = Case(Path(image), None if mask is None else Path(mask), "", "")
    return load_volume_samples(case, labels, fmt)


def _stamp(*paths: Path | None) -> tuple:
    return tuple(None if p is None or not p.exists() else p.stat().st_mtime_ns for p in paths)


def load_sample(case: Case, labels: LabelScheme, fmt: str = "domains") -> Sample:
    """Load one 2D case, or one slice of a volume case (``slice_index`` set) as a 2.5D sample."""
    if case.slice_index is not None:
        samples = _cached_volume(
            str(case.image), None if case.mask is None else str(case.mask), _stamp(case.image, case.mask), labels, fmt
        )
        if not 0 <= case.slice_index < len(samples):
            raise RamsegInputError(f"slice {case.slice_index} is outside 0..{len(samples) - 1}", case.image)
        s = samples[case.slice_index]
        return Sample(s.image.copy(), None if s.mask is None else s.mask.copy(), case.domain, case.name,
                      case.slice_index, s.spacing)
    data = rio.read_image(case.image)
    if data.is_volume and data.array.shape[0] > 1:
        raise RamsegInputError(
            f"is a 3D volume {data.array.shape}; use load_volume_samples or expand_slices", case.image
        )
    return _samples_of(case, data, labels, fmt)[0]


def load_samples(cases: Iterable[Case], labels: LabelScheme, fmt: str = "domains") -> list[Sample]:
    """Load cases in order; volume cases expand to one 2.5D sample per slice."""
    out: list[Sample] = []
    for case in cases:
        if case.slice_index is not None:
            out.append(load_sample(case, labels, fmt))
        else:
            out += _samples_of(case, rio.read_image(case.image), labels, fmt)
    return out


def _depth(path: Path) -> int | None:
    """Number of slices of a volume file, None for a 2D image (reads only the header for NIfTI)."""
    if rio.suffix_of(path) in (".nii", ".nii.gz"):
        import nibabel as nib

        try:
            shape = list(nib.load(str(path)).shape)
        except Exception as exc:
            raise RamsegInputError(f"cannot read NIfTI header: {rio._why(exc)}", path) from None
        while len(shape) > 3 and shape[-1] == 1:
            shape.pop()
        return shape[2] if len(shape) == 3 else None
    if rio.suffix_of(path) in (".tif", ".tiff"):
        data = rio.read_image(path)
        return data.array.shape[0] if data.is_volume else None
    return None


def expand_slices(cases: Iterable[Case]) -> list[Case]:
    """Volume cases -> one case per slice (``slice_index`` 0..Z-1); 2D cases pass through."""
    out: list[Case] = []
    for case in cases:
        depth = None if case.slice_index is not None else _depth(case.image)
        if depth is None:
            out.append(case)
        else:
            out += [Case(case.image, case.mask, case.domain, case.name, case.split, j) for j in range(depth)]
    return out


# -------------------------------------------------------------------------------------------- splits


def split_train_val(
    cases: Sequence[Case], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Case], list[Case]]:
    """Hold out validation cases per domain, identically across runs and processes.

    Test cases (``split == "test"``) go to neither side. If a domain has cases marked ``"val"``
    (dataset.json), those are its validation set. Otherwise its distinct case names, sorted, are
    permuted by a generator seeded with ``(seed, crc32(domain))`` and the first
    ``round(n * val_fraction)`` (at least 1, at most n - 1) become validation; a domain with fewer
    than 2 cases gives none. All slices of one volume stay on the same side.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    usable = [c for c in cases if c.split != "test"]
    names_by_domain: dict[str, list[str]] = {}
    explicit_val: dict[str, set[str]] = {}
    for c in usable:
        names_by_domain.setdefault(c.domain, [])
        if c.name not in names_by_domain[c.domain]:
            names_by_domain[c.domain].append(c.name)
        if c.split == "val":
            explicit_val.setdefault(c.domain, set()).add(c.name)
    val_keys: set[tuple[str, str]] = set()
    for domain, names in names_by_domain.items():
        if domain in explicit_val:
            val_keys |= {(domain, n) for n in explicit_val[domain]}
            continue
        names = sorted(names)
        n = len(names)
        if n < 2 or val_fraction == 0:
            continue
        n_val = min(n - 1, max(1, int(np.floor(n * val_fraction + 0.5))))
        rng = np.random.default_rng([int(seed) % 2**32, zlib.crc32(domain.encode("utf-8"))])
        for i in rng.permutation(n)[:n_val]:
            val_keys.add((domain, names[int(i)]))
    train = [c for c in usable if (c.domain, c.name) not in val_keys]
    val = [c for c in usable if (c.domain, c.name) in val_keys]
    return train, val


def cases_checksum(root: str | Path, cases: Iterable[Case]) -> tuple[str, int]:
    """(SHA-256, number of files) over the image and mask files of ``cases``: each file's path relative
    to ``root`` and the SHA-256 of its bytes, sorted. It names the data by content, not by where it lies."""
    import hashlib

    root = Path(root).resolve()
    files = sorted({Path(p).resolve() for c in cases for p in (c.image, c.mask) if p is not None})
    digest = hashlib.sha256()
    for path in files:
        content = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                content.update(block)
        try:
            name = path.relative_to(root).as_posix()
        except ValueError:
            name = path.name
        digest.update(f"{name}\t{content.hexdigest()}\n".encode("utf-8"))
    return digest.hexdigest(), len(files)
