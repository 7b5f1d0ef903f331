"""DICOM series in (pydicom): a folder of MR or CT slices as one ``(Z, Y, X)`` volume in world space.

A series is every file of a folder (and its subfolders) sharing one SeriesInstanceUID. Its slices
are sorted by their position along the slice normal (ImagePositionPatient . (row x column cosines
of ImageOrientationPatient)), never by file name or InstanceNumber. The volume keeps the geometry
as the NIfTI reader does: ``spacing`` is (slice step, row spacing, column spacing) in mm and
``affine`` maps nibabel's voxel order ``(x=column, y=row, z=slice)`` to RAS+ world coordinates
(DICOM's patient frame is LPS, so x and y change sign), so labels written as NIfTI overlay the
series in any viewer. Stored values go through the modality LUT (CT in Hounsfield units).

``header`` holds ``{"format": "dicom"}`` and nothing else: no patient, study or series field leaves
the files except the geometry, so model folders and corrections never carry one. A DICOM-SEG
writer (``.dcm``, needs highdicom) finds the source slices again from ``path`` and the geometry.

Refused, each in one line naming the folder: several series (listed with SeriesInstanceUID,
description and slice count; choose one by its subfolder, one of its files, or ``series=`` /
``ramseg predict --series``), missing or duplicate slices, uneven spacing, slices that disagree on
orientation or size, multi-frame files, colour images, and pixel data no installed decoder reads.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_ramseg.errors import RamsegInputError, one_line

from ._base import ImageData, check_claimed_size, register_writer

MAX_FILES = 20_000  # a folder scan stops here: a whole PACS export is not one series
POSITION_TOLERANCE = 0.01  # relative to the slice step: closer positions are the same slice
SPACING_TOLERANCE = 0.01  # relative spread of the slice steps still taken as even
ORIENTATION_TOLERANCE = 1e-4
DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_HEADER_TAGS = ["SOPClassUID", "SeriesInstanceUID", "SeriesDescription", "SeriesNumber", "Modality",
                "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
                "NumberOfFrames", "SamplesPerPixel", "SliceThickness", "SpacingBetweenSlices"]
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Series:
    uid: str
    description: str
    number: str
    files: list[Path] = field(default_factory=list)

    def label(self, root: Path) -> str:
        folders = {f.parent for f in self.files}
        where = ""
        if len(folders) == 1 and (folder := next(iter(folders))) != root:
            where = f", in {folder.relative_to(root)}/"
        number = f"#{self.number} " if self.number else ""
        return f"{self.uid} ({number}{self.description or 'no description'!r}, {len(self.files)} files{where})"


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _candidate_files(root: Path, recursive: bool = True) -> Iterator[Path]:
    count = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(dirs) if recursive else []
        for name in sorted(names):
            path = Path(folder) / name
            if not name.startswith(".") and path.is_file() and _looks_like_dicom(path):
                count += 1
                if count > MAX_FILES:
                    raise RamsegInputError(f"more than {MAX_FILES} DICOM files below this folder; give the folder of "
                                           "one series", root)
                yield path


def holds_dicom(folder: str | Path) -> bool:
    """Whether a folder (or its subfolders) holds at least one DICOM file."""
    return next(_candidate_files(Path(folder)), None) is not None


def _header(path: Path):
    import pydicom

    try:
        with warnings.catch_warnings():  # odd VRs and the like: the one-line errors say what matters
            warnings.simplefilter("ignore")
            return pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception as exc:  # InvalidDicomError, truncated files, ...
        raise RamsegInputError(f"cannot read DICOM header ({one_line(exc, 160, typed=False)})", path) from None


def find_series(folder: str | Path, recursive: bool = True) -> list[Series]:
    """The image series below ``folder``, in the order their first file is found.

    A file that is not readable DICOM is passed over (folders hold notes, thumbnails, DICOMDIR);
    if it was a slice, the gap it leaves is reported when the series is read."""
    root = Path(folder)
    series: dict[str, Series] = {}
    for path in _candidate_files(root, recursive):
        try:
            ds = _header(path)
        except RamsegInputError:
            continue
        if str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP or "Rows" not in ds:  # DICOMDIR, reports, ...
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or "(no SeriesInstanceUID)"
        entry = series.setdefault(uid, Series(uid, str(ds.get("SeriesDescription", "")).strip(),
                                              str(ds.get("SeriesNumber", "") or "")))
        entry.files.append(path)
    return list(series.values())


def choose_series(folder: str | Path, series: str | None = None) -> Series:
    """The one series below ``folder``, or the one named by its SeriesInstanceUID or SeriesNumber."""
    root = Path(folder)
    found = find_series(root)
    if not found:
        raise RamsegInputError("no DICOM image files in this folder", root)
    if series is not None:
        wanted = str(series).strip()
        matches = [s for s in found if wanted in (s.uid, s.number)]
        if len(matches) != 1:
            listed = "; ".join(s.label(root) for s in found)
            problem = "several series have" if matches else "no series has"
            raise RamsegInputError(f"{problem} the SeriesInstanceUID or number {wanted!r}; series here: {listed}", root)
        return matches[0]
    if len(found) > 1:
        listed = "; ".join(s.label(root) for s in found)
        raise RamsegInputError(
            f"{len(found)} DICOM series in this folder: {listed}; choose one by giving its subfolder or one of its "
            "files, or with --series UID_OR_NUMBER", root)
    return found[0]


def _floats(ds, name: str, count: int, path: Path) -> np.ndarray | None:
    value = ds.get(name)
    if value is None:
        return None
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise RamsegInputError(f"{name} is not numeric", path) from None
    if out.shape != (count,) or not np.isfinite(out).all():
        raise RamsegInputError(f"{name} must hold {count} finite numbers, not {list(value)}", path)
    return out


@dataclass
class _Slice:
    path: Path
    position: np.ndarray
    distance: float


def _geometry(series: Series, root: Path):
    """Headers checked for one grid; slices sorted along the normal; (slices, rows, columns, spacing, cosines)."""
    headers = [(path, _header(path)) for path in series.files]
    first_path, first = headers[0]
    for path, ds in headers:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise RamsegInputError("multi-frame (enhanced) DICOM is not supported; export the series as one file "
                                   "per slice", path)
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise RamsegInputError("colour DICOM is not supported; napari-ramseg reads grey MR and CT series", path)
    shape = (int(first.Rows), int(first.Columns))
    orientation = _floats(first, "ImageOrientationPatient", 6, first_path)
    pixel = _floats(first, "PixelSpacing", 2, first_path)
    if pixel is not None and not (pixel > 0).all():  # [0, 0] would give a singular affine and no writable mask
        raise RamsegInputError(f"PixelSpacing must be two positive sizes in mm, not {pixel.tolist()}", first_path)
    slices: list[_Slice] = []
    for path, ds in headers:
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise RamsegInputError(f"slices differ in size ({ds.Rows} x {ds.Columns} here, {shape[0]} x {shape[1]} in "
                                   f"{first_path.name}); not one volume", path)
        this = _floats(ds, "ImageOrientationPatient", 6, path)
        if (this is None) != (orientation is None) or (this is not None and
                                                        np.abs(this - orientation).max() > ORIENTATION_TOLERANCE):
            raise RamsegInputError(f"slices differ in orientation (ImageOrientationPatient) from {first_path.name}; "
                                   "a localizer mixed into the series?", path)
        spacing = _floats(ds, "PixelSpacing", 2, path)
        if (spacing is None) != (pixel is None) or (spacing is not None and np.abs(spacing - pixel).max() > 1e-4):
            raise RamsegInputError(f"slices differ in PixelSpacing from {first_path.name}", path)
        position = _floats(ds, "ImagePositionPatient", 3, path)
        slices.append(_Slice(path, position, 0.0))
    if orientation is None or any(s.position is None for s in slices):
        if len(slices) == 1:
            return slices, shape, pixel, None
        raise RamsegInputError("slices lack ImagePositionPatient or ImageOrientationPatient, so they cannot be "
                               "placed in space", root)
    rows, cols = orientation[:3], orientation[3:]
    normal = np.cross(rows, cols)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise RamsegInputError(f"ImageOrientationPatient {orientation.tolist()} is not two orthogonal unit vectors",
                               first_path)
    for s in slices:
        s.distance = float(s.position @ normal)
    slices.sort(key=lambda s: s.distance)
    _check_spacing(slices, root)
    return slices, shape, pixel, (rows, cols)


def _check_spacing(slices: list[_Slice], root: Path) -> None:
    if len(slices) < 2:
        return
    distances = np.array([s.distance for s in slices])
    steps = np.diff(distances)
    typical = float(np.median(steps))
    same = steps <= POSITION_TOLERANCE * max(typical, 1e-3)
    if same.any() or typical <= 0:
        i = int(np.argmax(same)) if same.any() else 0
        raise RamsegInputError(
            f"duplicate slices: {slices[i].path.name} and {slices[i + 1].path.name} lie at the same position "
            f"({distances[i]:.2f} mm along the slice normal); several acquisitions or time points in one series are "
            "not supported", root)
    spread = float(steps.max() - steps.min())
    if spread <= SPACING_TOLERANCE * typical:
        return
    i = int(np.argmax(steps))
    ratio = steps[i] / typical
    if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1:
        raise RamsegInputError(
            f"missing slices: a gap of {steps[i]:.2f} mm between {slices[i].path.name} and {slices[i + 1].path.name} "
            f"where the other slices are {typical:.2f} mm apart (about {round(ratio) - 1} missing)", root)
    raise RamsegInputError(f"uneven slice spacing ({steps.min():.3f} to {steps.max():.3f} mm); a volume needs evenly "
                           "spaced slices (resample the series first)", root)


def _pixels(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise RamsegInputError(f"cannot read DICOM ({one_line(exc, 160, typed=False)})", path) from None
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        array = ds.pixel_array
    except Exception as exc:  # no decoder for this transfer syntax, or corrupt compressed data
        name = getattr(syntax, "name", str(syntax))
        raise RamsegInputError(
            f"cannot decode the pixel data ({name}): {one_line(exc, 160, typed=False)}; install a decoder "
            "(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or decompress the series first",
            path) from None
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1 and intercept == 0:
        return array
    values = apply_modality_lut(array, ds)
    if slope.is_integer() and intercept.is_integer():
        lo, hi = values.min(), values.max()
        for dtype in (np.int16, np.int32):
            if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
                return values.astype(dtype)
    return values.astype(np.float32)


@dataclass
class Layout:
    """Where a series' slices lie: sorted slices, (rows, columns), and the volume's spacing and affine
    (None for a lone slice without ImagePositionPatient / ImageOrientationPatient)."""

    slices: list[_Slice]
    shape: tuple[int, int]
    pixel: np.ndarray | None
    spacing: tuple[float, ...] | None
    affine: np.ndarray | None


def layout(series: Series, root: Path) -> Layout:
    """The geometry of one series, checked (see the module docstring), without reading any pixels."""
    slices, shape, pixel, cosines = _geometry(series, root)
    dr, dc = (float(pixel[0]), float(pixel[1])) if pixel is not None else (1.0, 1.0)
    if cosines is None:
        return Layout(slices, shape, pixel, (dr, dc) if pixel is not None else None, None)
    rows, cols = cosines
    if len(slices) > 1:
        step = (slices[-1].position - slices[0].position) / (len(slices) - 1)
    else:  # one slice: its thickness along the normal, as far as the header says
        ds = _header(slices[0].path)
        try:
            thickness = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        except (TypeError, ValueError):
            thickness = 1.0
        step = np.cross(rows, cols) * (thickness if np.isfinite(thickness) and thickness > 0 else 1.0)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = rows * dc, cols * dr, step, slices[0].position
    return Layout(slices, shape, pixel, (float(np.linalg.norm(step)), dr, dc), LPS_TO_RAS @ lps)


def series_of_file(path: Path) -> Series:
    """The series a file belongs to: the files of its folder that share its SeriesInstanceUID."""
    uid = str(_header(path).get("SeriesInstanceUID", "")) or "(no SeriesInstanceUID)"
    chosen = next((s for s in find_series(path.parent, recursive=False) if s.uid == uid), None)
    if chosen is None:
        raise RamsegInputError("not a DICOM image file", path)
    return chosen


def read_series(folder: str | Path, series: str | None = None, only: Path | None = None) -> ImageData:
    """One DICOM series as an :class:`ImageData` (see the module docstring).

    ``series``: its SeriesInstanceUID or SeriesNumber when the folder holds several. ``only``: a file
    of the series (the series is the one it belongs to)."""
    root = Path(folder)
    chosen = series_of_file(Path(only)) if only is not None else choose_series(root, series)
    where = layout(chosen, root)
    check_claimed_size((len(where.slices), *where.shape), 4, root, "DICOM")
    planes = [_pixels(s.path) for s in where.slices]
    dtype = np.result_type(*planes)
    volume = np.ascontiguousarray(np.stack([p.astype(dtype, copy=False) for p in planes]))
    source = str(only or root)
    if where.affine is None:  # one slice without a place in space: a plain 2D image
        return ImageData(array=volume[0], spacing=where.spacing, header={"format": "dicom"}, path=source, axes="YX")
    return ImageData(array=volume, spacing=where.spacing, affine=where.affine, header={"format": "dicom"},
                     path=source, axes="ZYX")


DICOM_SUFFIXES = (".dcm", ".dicom")


def read_dicom_path(path: Path, as_mask: bool) -> ImageData:
    """A folder, or a ``.dcm`` file standing for its whole series (the files of its folder sharing its UID).

    Not in the reader registry on purpose: a file here is not an image by itself, and dataset
    layouts, which take every registered file as a case, must not read one series per slice."""
    if as_mask:
        raise RamsegInputError("a DICOM series is not a mask; give the mask as NIfTI, TIFF or PNG", path)
    return read_series(path) if path.is_dir() else read_series(path.parent, only=path)


@register_writer(".dcm")
def _write_dicom_seg(path: Path, labels: np.ndarray, like: ImageData | None) -> None:
    from ._dicom_seg import write_segmentation

    write_segmentation(path, labels, like)
