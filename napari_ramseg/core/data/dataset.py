"""Dataset folders -> cases -> loaded samples, for any layout.

The layouts themselves (how a dataset is packaged on disk: the native ``domains``, DoFE's, SAML's...)
are in :mod:`napari_ramseg.core.data.layouts`, one class each; ``layouts.FORMATS`` names them and
:func:`detect_format` tells them apart. This module does what is the same for all of them:

- :func:`discover` lists a dataset's cases: the chosen domains, labels (``labels=`` first, then
  ``dataset.json``, then what the layout implies or its masks show) and splits. Each :class:`Case`
  carries its layout, so loading needs no format.
- Volumes: :func:`discover` yields one :class:`Case` per volume (``slice_index=None``).
  :func:`load_volume_samples` turns a volume case into one 2.5D :class:`Sample` per slice, and
  :func:`expand_slices` turns volume cases into one case per slice (``slice_index`` set) that
  :func:`load_sample` can load one at a time (with a small per-process volume cache).
  :func:`load_samples` loads any list of cases, expanding volumes.
- Splits: ``discover(split="train")`` (the default) returns every case that is not test data
  (``train``, ``val`` and unassigned); ``split="test"`` only test cases; ``split=None`` all.
  :func:`split_train_val` then holds out validation cases per domain, deterministically.

The ``fmt`` arguments of the loading functions are kept for callers written before cases carried
their layout; None (the default) uses the case's own.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from napari_ramseg import io as rio
from napari_ramseg.core.data import layouts
from napari_ramseg.core.labels import LabelScheme
from napari_ramseg.core.data.layouts import FORMATS, Case, MaskLabelsError, detect_format
from napari_ramseg.core.data.layouts.dataset_json import apply_splits, read_dataset_json
from napari_ramseg.core.data.preprocess import to_model_channels, volume_to_slices_25d
from napari_ramseg.errors import RamsegInputError

__all__ = [
    "FORMATS",
    "Case",
    "Sample",
    "Dataset",
    "MaskLabelsError",
    "detect_format",
    "discover",
    "declared_labels",
    "convert_mask",
    "read_case_image",
    "read_case_mask",
    "load_sample",
    "load_volume_samples",
    "load_samples",
    "expand_slices",
    "split_train_val",
    "cases_checksum",
]


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
    """List the cases of a dataset folder (see the module docstring for labels and splits).

    ``format`` is ``"auto"`` or a name in ``FORMATS``; ``domains`` picks domains (in the given order);
    ``labels`` overrides the label scheme; ``split`` is ``"train"`` (everything but test data),
    ``"test"`` or None (all).
    """
    root = Path(root)
    layouts.check_root(root)
    layout = layouts.get(detect_format(root) if format == "auto" else format)
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, not {split!r}")
    available = layout.list_domains(root)
    if not available:
        raise RamsegInputError(f"no {layout.name} domain folders found: {layouts.layouts_help()}", root)
    if domains:
        chosen = list(dict.fromkeys(domains))
        for d in chosen:
            if d not in available:
                raise RamsegInputError(f"domain {d!r} not found; available: {', '.join(available)}", root)
    else:
        chosen = available
    spec = read_dataset_json(root)
    cases: list[Case] = []
    for d in chosen:
        found = layout.list_cases(root, d, require_masks)
        if not found:
            raise RamsegInputError("domain folder holds no images", root / d)
        cases += found
    splits_from = layout.splits_from
    if spec and "splits" in spec:
        apply_splits(cases, spec["splits"], chosen, spec["path"])
        splits_from = "dataset.json"
    if labels is None:
        labels = spec["labels"] if spec and "labels" in spec else layout.default_labels(cases)

    if split == "train":
        cases = [c for c in cases if c.split != "test"]
    elif split == "test":
        cases = [c for c in cases if c.split == "test"]
    if not cases:
        raise RamsegInputError(f"no {split} cases in domains {', '.join(chosen)}", root)
    return Dataset(format=layout.name, root=root, labels=labels, cases=cases, domains=chosen, splits_from=splits_from)


def declared_labels(root: str | Path, fmt: str) -> tuple[LabelScheme, str] | None:
    """The label scheme a dataset states without reading its masks, and where it says so.

    ``dataset.json`` labels first, then the layout's own scheme (DoFE: disc, cup; SAML: prostate);
    None for a ``domains`` dataset without ``dataset.json`` (its labels are only known from masks).
    """
    spec = read_dataset_json(Path(root))
    if spec and "labels" in spec:
        return spec["labels"], str(spec["path"])
    return layouts.get(fmt).declared_labels()


# ------------------------------------------------------------------------------------------ loading


def convert_mask(mask: np.ndarray, fmt: str, labels: LabelScheme, path: str | Path | None = None) -> np.ndarray:
    """Bring a raw mask of layout ``fmt`` to class indices 0..labels.num_classes (uint8), or raise."""
    return layouts.get(fmt).convert_mask(mask, labels, path)


def read_case_image(case: Case) -> rio.ImageData:
    """A case's image file as its layout reads it (a .npy slice, a PNG, a NIfTI volume...)."""
    return layouts.get(case.layout).read_image(case.image)


def read_case_mask(case: Case, labels: LabelScheme) -> np.ndarray | None:
    """A case's whole mask as class indices (its layout's values converted); None without a mask."""
    if case.mask is None:
        return None
    layout = layouts.get(case.layout)
    return layout.convert_mask(layout.read_mask(case.mask), labels, case.mask)


def _with_layout(case: Case, fmt: str | None) -> Case:
    return case if fmt is None or fmt == case.layout else dataclasses.replace(case, layout=fmt)


def _image_channels(array: np.ndarray, path: Path) -> np.ndarray:
    try:
        return to_model_channels(array)
    except ValueError as exc:
        raise RamsegInputError(str(exc), path) from None


def _mask_like(case: Case, shape: tuple[int, ...], labels: LabelScheme) -> np.ndarray | None:
    """The case's mask, checked against the image's spatial ``shape`` (a one-slice axis may differ)."""
    if case.mask is None:
        return None
    layout = layouts.get(case.layout)
    mask = layout.read_mask(case.mask)
    if mask.ndim == len(shape) + 1 and mask.shape[0] == 1:
        mask = mask[0]
    elif mask.ndim + 1 == len(shape) and shape[0] == 1:
        mask = mask[None]
    if tuple(mask.shape) != tuple(shape):
        raise RamsegInputError(
            f"mask shape {tuple(mask.shape)} does not match image {case.image} shape {tuple(shape)}", case.mask
        )
    return layout.convert_mask(mask, labels, case.mask)


def _samples_of(case: Case, data: rio.ImageData, labels: LabelScheme) -> list[Sample]:
    if data.is_volume and data.array.shape[0] > 1:
        try:
            slices = volume_to_slices_25d(data.array)
        except ValueError as exc:
            raise RamsegInputError(str(exc), case.image) from None
        mask = _mask_like(case, data.array.shape, labels)
        return [
            Sample(slices[j], None if mask is None else mask[j], case.domain, case.name, slice_index=j,
                   spacing=data.spacing)
            for j in range(slices.shape[0])
        ]
    array = data.array[0] if data.is_volume else data.array  # a one-slice volume is a 2D image
    image = _image_channels(array, case.image)
    mask = _mask_like(case, image.shape[1:], labels)
    return [Sample(image, mask, case.domain, case.name, slice_index=0 if data.is_volume else None)]


def load_volume_samples(case: Case, labels: LabelScheme, fmt: str | None = None) -> list[Sample]:
    """One 2.5D sample per slice of a volume case (a 2D image gives one sample)."""
    case = _with_layout(case, fmt)
    return _samples_of(case, read_case_image(case), labels)


@functools.lru_cache(maxsize=4)
def _cached_volume(image: str, mask: str | None, stamp: tuple, labels: LabelScheme, layout: str) -> list[Sample]:
    case = Case(Path(image), None if mask is None else Path(mask), "", "", layout=layout)
    return load_volume_samples(case, labels)


def _stamp(*paths: Path | None) -> tuple:
    return tuple(None if p is None or not p.exists() else p.stat().st_mtime_ns for p in paths)


def load_sample(case: Case, labels: LabelScheme, fmt: str | None = None) -> Sample:
    """Load one 2D case, or one slice of a volume case (``slice_index`` set) as a 2.5D sample."""
    case = _with_layout(case, fmt)
    if case.slice_index is not None:
        samples = _cached_volume(str(case.image), None if case.mask is None else str(case.mask),
                                 _stamp(case.image, case.mask), labels, case.layout)
        if not 0 <= case.slice_index < len(samples):
            raise RamsegInputError(f"slice {case.slice_index} is outside 0..{len(samples) - 1}", case.image)
        s = samples[case.slice_index]
        return Sample(s.image.copy(), None if s.mask is None else s.mask.copy(), case.domain, case.name,
                      case.slice_index, s.spacing)
    data = read_case_image(case)
    if data.is_volume and data.array.shape[0] > 1:
        raise RamsegInputError(
            f"is a 3D volume {data.array.shape}; use load_volume_samples or expand_slices", case.image
        )
    return _samples_of(case, data, labels)[0]


def load_samples(cases: Iterable[Case], labels: LabelScheme, fmt: str | None = None) -> list[Sample]:
    """Load cases in order; volume cases expand to one 2.5D sample per slice."""
    out: list[Sample] = []
    for case in cases:
        case = _with_layout(case, fmt)
        if case.slice_index is not None:
            out.append(load_sample(case, labels))
        else:
            out += _samples_of(case, read_case_image(case), labels)
    return out


def expand_slices(cases: Iterable[Case]) -> list[Case]:
    """Volume cases -> one case per slice (``slice_index`` 0..Z-1); 2D cases pass through."""
    out: list[Case] = []
    for case in cases:
        depth = None if case.slice_index is not None else layouts.get(case.layout).depth(case.image)
        if depth is None:
            out.append(case)
        else:
            out += [dataclasses.replace(case, slice_index=j) for j in range(depth)]
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
