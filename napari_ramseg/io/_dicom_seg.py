"""Labels as a DICOM Segmentation object (highdicom), the optional second output for a DICOM series.

The source slices are found again from the series' folder (``like.path``): the series whose
geometry (shape and affine, as ``_dicom.read_series`` computes them) is the labels' own. No UID or
other header field is stored in between, so nothing from the header travels with a layer or a
correction; only this output file, which has to reference its source series, carries them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ramseg import __version__
from napari_ramseg.errors import RamsegInputError

from ._base import ImageData


def _source_datasets(like: ImageData, shape: tuple[int, ...]) -> list:
    """The source slices, in the volume's slice order, of the series with the labels' geometry."""
    import pydicom

    from ._dicom import find_series, layout, series_of_file

    source = Path(like.path) if like.path else None
    if source is None or not source.exists():
        raise RamsegInputError("DICOM-SEG needs the source DICOM series; it is not where it was read from", like.path)
    root = source if source.is_dir() else source.parent
    candidates = find_series(root) if source.is_dir() else [series_of_file(source)]
    for series in candidates:
        try:
            where = layout(series, root)
        except RamsegInputError:
            continue
        if (where.affine is not None and (len(where.slices), *where.shape) == tuple(shape)
                and np.allclose(where.affine, like.affine, atol=1e-4)):
            return [pydicom.dcmread(str(s.path)) for s in where.slices]
    raise RamsegInputError("no DICOM series in this folder has the labels' geometry", root)


def write_segmentation(path: Path, labels: np.ndarray, like: ImageData | None,
                       names: list[str] | None = None) -> None:
    """Write ``labels`` (``(Z, Y, X)`` class indices in the series' slice order) as a binary DICOM-SEG,
    one segment per label value present; value ``v`` is named ``names[v - 1]``."""
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError:
        raise RamsegInputError("writing DICOM-SEG needs highdicom: pip install 'napari-ramseg[dicomseg]'",
                               path) from None
    if like is None or (like.header or {}).get("format") != "dicom" or labels.ndim != 3:
        raise RamsegInputError("DICOM-SEG is written only for labels of a DICOM series (read from its folder)", path)
    sources = _source_datasets(like, tuple(labels.shape))
    values = [int(v) for v in np.unique(labels) if v > 0]
    if not values:  # an empty segmentation is still a valid answer: one segment with no pixels
        values = [1]
    names = list(names or [])
    algorithm = hd.AlgorithmIdentificationSequence(name="napari-ramseg", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=str(names[v - 1] if v <= len(names) else f"label {v}")[:64],
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
        for i, v in enumerate(values)
    ]
    # one binary plane per segment, in the order of the source slices
    planes = np.stack([(labels == v) for v in values], axis=-1).astype(np.uint8)
    try:
        seg = _segmentation(hd, sources, planes, descriptions)
    except (AttributeError, ValueError) as exc:  # a source header lacking what the SEG must copy, ...
        raise RamsegInputError(f"cannot build a DICOM-SEG for this series ({exc})", path) from None
    seg.save_as(str(path))


def _segmentation(hd, sources: list, planes: np.ndarray, descriptions: list):
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=planes, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="napari-ramseg",
        manufacturer_model_name="napari-ramseg", software_versions=__version__, device_serial_number="none",
        omit_empty_frames=False)
