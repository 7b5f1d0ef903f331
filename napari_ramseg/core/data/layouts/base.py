"""What every dataset layout provides, and the folder helpers they share.

A layout is one way of packaging a multi-domain dataset on disk (nnU-Net v2's ``imageio`` shape: one
base class, one small subclass per format, a registry in ``__init__``). A subclass says how to
recognise one of its domain folders, how to list a domain's cases, how to read an image and a mask,
which labels it implies and how its raw mask values become class indices. Everything else
(``dataset.json``, choosing domains, splits, 2.5D slicing, sample loading) is the same for all layouts
and lives in :mod:`napari_ramseg.core.data.dataset`.

Layouts are stateless: the registry hands out one instance per name. A :class:`Case` carries its
layout's name, so loading a case never needs the format passed along.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np

from napari_ramseg import io as rio
from napari_ramseg.core.labels import LabelScheme
from napari_ramseg.errors import RamsegInputError, one_line

__all__ = ["Case", "Layout", "MaskLabelsError", "MASK_SUFFIXES", "mask_values"]

MASK_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".nii.gz", ".nii")
_MAX_INFERRED_LABELS = 64


@dataclass
class Case:
    """One image (2D, or a whole volume when ``slice_index`` is None) and its mask.

    ``layout`` names the registered layout that found it (``layouts.get(case.layout)`` reads it);
    hand-made cases default to the native ``domains`` layout.
    """

    image: Path
    mask: Path | None
    domain: str
    name: str
    split: str | None = None
    slice_index: int | None = None
    layout: str = "domains"

    @property
    def key(self) -> str:
        """``"<domain>/<name>"``, the form used by ``dataset.json`` splits."""
        return f"{self.domain}/{self.name}"


class MaskLabelsError(RamsegInputError):
    """A mask holds values the label scheme has no name for (the caller may know why: a wrong model)."""


def mask_values(mask: np.ndarray) -> np.ndarray:
    """The distinct values of a mask (bincount for uint8: far faster than np.unique on big masks)."""
    if mask.dtype == np.uint8:
        return np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    return np.unique(mask)


class Layout:
    """One dataset layout. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]  # the --format value
    pattern: ClassVar[str]  # one line for "expected ..." messages
    single_domain_hint: ClassVar[str] = ""  # said when the user gave one domain folder instead of the root
    labels: ClassVar[LabelScheme | None] = None  # the scheme the layout implies; None: dataset.json or masks
    labels_source: ClassVar[str] = ""  # where that scheme comes from, for messages
    splits_from: ClassVar[str | None] = None  # "folders" when the folder structure gives train/test
    image_kinds: ClassVar[frozenset[tuple[bool, bool]] | None] = None  # (colour, volume) its images always are
    fallback: ClassVar[bool] = False  # detection tries every other layout first

    # -- recognising and listing -------------------------------------------------------------------
    def is_domain(self, folder: Path) -> bool:
        """Whether ``folder`` looks like one domain of this layout (used to detect the layout)."""
        raise NotImplementedError

    def holds_domain(self, folder: Path) -> bool:
        """Whether ``folder`` is listed as a domain once the layout is known (default: :meth:`is_domain`)."""
        return self.is_domain(folder)

    def list_domains(self, root: Path) -> list[str]:
        return [d.name for d in subdirs(root) if self.holds_domain(d)]

    def list_cases(self, root: Path, domain: str, require_masks: bool) -> list[Case]:
        """The cases of one domain, sorted; RamsegInputError for unpaired or clashing files."""
        raise NotImplementedError

    # -- reading ----------------------------------------------------------------------------------
    def read_image(self, path: Path) -> rio.ImageData:
        return rio.read_image(path)

    def read_mask(self, path: Path) -> np.ndarray:
        return rio.read_mask(path)

    def depth(self, path: Path) -> int | None:
        """Number of slices of a volume file, None for a 2D image (reads only the header for NIfTI)."""
        suffix = rio.suffix_of(path)
        if suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            try:
                shape = list(nib.load(str(path)).shape)
            except Exception as exc:
                raise RamsegInputError(f"cannot read NIfTI header: {one_line(exc, 200, typed=False)}", path) from None
            while len(shape) > 3 and shape[-1] == 1:
                shape.pop()
            return shape[2] if len(shape) == 3 else None
        if suffix in (".tif", ".tiff"):
            data = self.read_image(path)
            return data.array.shape[0] if data.is_volume else None
        return None

    # -- labels -----------------------------------------------------------------------------------
    def declared_labels(self) -> tuple[LabelScheme, str] | None:
        """The scheme the layout itself implies and where that is said; None when only masks tell."""
        return None if self.labels is None else (self.labels, self.labels_source)

    def default_labels(self, cases: Sequence[Case]) -> LabelScheme:
        """The layout's scheme, else nested ``label_1..label_K`` with K the largest mask value (0/255
        binary masks count as K=1)."""
        if self.labels is not None:
            return self.labels
        k = 0
        for case in cases:
            if case.mask is None:
                continue
            values = mask_values(self.read_mask(case.mask))
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

    def map_mask(self, mask: np.ndarray, labels: LabelScheme) -> np.ndarray:
        """The layout's raw mask values -> class indices (no checks; :meth:`convert_mask` checks)."""
        return mask

    def convert_mask(self, mask: np.ndarray, labels: LabelScheme, path: str | Path | None = None) -> np.ndarray:
        """A raw mask of this layout as class indices 0..labels.num_classes (uint8), or MaskLabelsError."""
        mask = self.map_mask(mask, labels)
        values = mask_values(mask)
        bad = values[values > labels.num_classes]
        if bad.size:
            shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
            raise MaskLabelsError(
                f"mask values {shown} are outside 0..{labels.num_classes} (labels: {', '.join(labels.names)})", path
            )
        return np.ascontiguousarray(mask, dtype=np.uint8)


# ------------------------------------------------------------------------------------ folder helpers


def visible(p: Path) -> bool:
    return not (p.name.startswith(".") or p.name.startswith("__"))


def subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and visible(p)), key=lambda p: p.name)


def files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and visible(p)), key=lambda p: p.name)


def child_dir(parent: Path | None, name: str) -> Path | None:
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


def index_files(folder: Path, suffixes: Sequence[str], role: str) -> tuple[dict[str, Path], list[Path]]:
    """stem -> file for files with a supported ending; also the files skipped for their type."""
    found: dict[str, Path] = {}
    skipped: list[Path] = []
    for f in files(folder):
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


def pair_folders(layout: str, img_dir: Path, mask_dir: Path | None, domain: str, split: str | None,
                 require_masks: bool, mask_hint: str, image_suffixes: Sequence[str] = rio.SUPPORTED_IMAGE_SUFFIXES,
                 mask_suffixes: Sequence[str] = MASK_SUFFIXES, refuse_lossy_masks: bool = True) -> list[Case]:
    """Cases from an image folder and a mask folder that pair files by stem.

    ``mask_hint`` (with ``{stem}``) says where a missing mask was expected. ``refuse_lossy_masks``:
    a JPEG beside the masks is an error (a lossy mask is a wrong mask), not a file to skip.
    """
    images, skipped_images = index_files(img_dir, image_suffixes, "image")
    masks: dict[str, Path] = {}
    if mask_dir is not None:
        masks, skipped_masks = index_files(mask_dir, mask_suffixes, "mask")
        for f in skipped_masks if refuse_lossy_masks else ():
            if rio.suffix_of(f) in rio.SUPPORTED_IMAGE_SUFFIXES:  # e.g. a JPEG mask
                raise RamsegInputError(
                    f"masks must be PNG, TIFF or NIfTI ({rio.suffix_of(f)} is lossy or not a label format)", f
                )
    for stem, m in masks.items():
        if stem not in images:
            near = [f.name for f in skipped_images if rio.stem_of(f) == stem]
            hint = f" ({near[0]} has an unsupported file type)" if near else ""
            raise RamsegInputError(f"mask has no image: expected {img_dir / stem}.<ext>{hint}", m)
    # replace, not str.format: a folder name may hold braces
    return cases_from(layout, images, masks, domain, split, require_masks,
                      lambda stem: f"image has no mask: expected {mask_hint.replace('{stem}', stem)}")


def cases_from(layout: str, images: dict[str, Path], masks: dict[str, Path], domain: str, split: str | None,
               require_masks: bool, missing: Callable[[str], str]) -> list[Case]:
    """One case per image (by sorted name) with its mask; ``missing(name)`` says what a required mask
    that is absent should have been."""
    cases = []
    for name in sorted(images):
        mask = masks.get(name)
        if mask is None and require_masks:
            raise RamsegInputError(missing(name), images[name])
        cases.append(Case(image=images[name], mask=mask, domain=domain, name=name, split=split, layout=layout))
    return cases
