"""``ramseg predict``: segment an image, a volume or a folder of them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.config import REVIEW_PRIORITIES, ReviewConfig
from ..errors import RamsegInputError, naming
from ._common import add_adapt, add_device, adapt_line, adapt_predictor, progress_bar, stderr

REVIEW = ReviewConfig()


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="segment images or volumes")
    p.add_argument("--model", default="default", help="run folder, .safetensors file, or 'default' (bundled)")
    p.add_argument("--input", required=True, type=Path,
                   help="image/volume file, a folder of them, or a DICOM series (its folder or one of its files)")
    p.add_argument("--output", required=True, type=Path, help="mask file, or a folder for folder input")
    p.add_argument("--series", default=None,
                   help="DICOM input: the series to segment (SeriesInstanceUID or SeriesNumber) when the folder "
                        "holds several")
    p.add_argument("--dicom-seg", type=Path, default=None, metavar="FILE.dcm",
                   help="DICOM input: also write the labels as DICOM-SEG (needs highdicom)")
    p.add_argument("--postprocess", action="store_true", help="largest component per structure and hole filling")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_review(p)
    add_adapt(p)
    add_device(p)


def run(args: argparse.Namespace) -> int:
    from ..core.disc import segmented_region
    from ..core.infer import Predictor
    from ..io import read_image, write_labels
    from ..models import resolve_model

    predictor = Predictor.from_path(resolve_model(args.model), device=args.device, precision=args.precision)
    segmenter = adapt_predictor(predictor, args.adapt)
    disc = _disc_predictor(predictor, segmenter)  # optic disc and cup: two stages, whole photographs or crops
    if args.adapt:
        stderr(f"ramseg: {segmenter.settings_line()}")
    pairs = _prediction_pairs(args.input, args.output)  # (scan, mask, case name)
    dicom = _is_dicom(args.input)
    if (args.series is not None or args.dicom_seg is not None) and not dicom:
        raise RamsegInputError("--series and --dicom-seg are for DICOM input", args.input)
    rows = []  # report.csv, for a folder input
    if disc is not None and len(pairs) > 1:  # one image: with its measures, so a refusal stays one line
        stderr(disc.settings_line())
    with progress_bar(len(pairs), "predict", quiet=len(pairs) == 1) as bar:
        for source, target, case in pairs:
            image = _read_dicom(source, args.series) if dicom else read_image(source)
            adapted_before = getattr(segmenter, "fits", 0)
            with naming(source):
                if disc is not None:
                    try:
                        found = disc.predict(image.array, postprocess=True)
                    except RamsegInputError as exc:
                        if len(pairs) == 1:
                            raise
                        # one photograph without a visible disc does not cost the folder its report: it is
                        # listed there, first for review, with the reason (as in the worklist), and no mask
                        bar.write(f"ramseg: warning: {source}: {exc.problem}; no mask written", file=sys.stderr)
                        if args.input.is_dir() and not dicom:
                            rows.append(_refused_row(predictor, source, case, image, exc.problem))
                        bar.update(1)
                        continue
                    prediction = found.prediction
                    region = segmented_region(image.array, found.summary())  # what the review scores look at
                else:
                    region = image.array
                    prediction = segmenter.predict(image.array, postprocess=args.postprocess,
                                                   is_volume=image.is_volume, spacing=image.spacing)
                fit = predictor.check_fit(image.array, is_volume=image.is_volume)
            if not fit.fits:  # the mask is still written: the user decides what to make of it
                bar.write(f"ramseg: warning: {source}: {fit.differs}", file=sys.stderr)
            if args.adapt:
                rois = segmenter.fits - adapted_before  # the disc path adapts each ROI it segments
                where = f" (the last of {rois} ROIs adapted)" if disc is not None else ""
                bar.write(f"ramseg: {source.name}: {adapt_line(segmenter.last)}{where}", file=sys.stderr)
            written = write_labels(target, prediction.labels, like=image, overwrite=args.overwrite)
            if args.dicom_seg is not None:
                stderr(f"wrote {_write_seg(args.dicom_seg, prediction.labels, image, predictor, args.overwrite)} "
                       "(DICOM-SEG)")
            if args.input.is_dir() and not dicom:
                rows.append(_report_row(predictor, source, case, image, region, prediction, fit, args.review))
            bar.update(1)
            if len(pairs) == 1:
                stderr(f"wrote {written} ({', '.join(predictor.channel_names)}; shape {prediction.labels.shape})")
                if disc is not None:
                    stderr(disc.settings_line())
                    stderr(_disc_line(found, image.spacing))
    if rows:
        from ..core.report import write_report

        report = write_report(args.output / REVIEW.report_name, rows, args.review)
        stderr(f"wrote {report} ({len(rows)} cases, review_priority by {args.review})")
        if args.review == "representative":
            from ..core.report import descriptors_path

            stderr(f"wrote {descriptors_path(report)} (each case's encoder descriptor, the ranking's input)")
    return 0


def _disc_predictor(predictor, segmenter):
    """The two-stage optic disc predictor for a disc/cup model (None for any other model). With --adapt
    ``segmenter`` adapts to each ROI stage two segments, as the adaptation benchmark scored the disc
    models: the network never saw a whole photograph, so its style is a ROI's."""
    from ..core.disc import DiscPredictor, is_disc_model

    return DiscPredictor(segmenter) if is_disc_model(predictor) else None


def _disc_line(found, spacing) -> str:
    """The cup-to-disc ratios of one photograph or crop (a folder's go to report.csv)."""
    from ..core.config import OPTIC_DISC_CUP
    from ..core.measures import measure_case

    m = measure_case(found.labels, OPTIC_DISC_CUP, spacing)
    where = (f"whole photograph, disc at ({found.roi.center[1]:.0f}, {found.roi.center[0]:.0f}) px (x, y)"
             if found.roi is not None else "disc-centred crop")
    areas = (f"disc {m['disc_mm2']:.2f} mm², cup {m['cup_mm2']:.2f} mm², rim {m['rim_mm2']:.2f} mm²" if "disc_mm2" in m
             else f"disc {m['disc_px']} px, cup {m['cup_px']} px, rim {m['rim_px']} px")
    ratio = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    inside = "" if m["cup_inside_disc"] else "; check it: the cup reaches the disc's outline"
    return f"vCDR {ratio(m['vcdr'])}, horizontal CDR {ratio(m['hcdr'])}; {areas} ({where}){inside}"


def _add_review(p: argparse.ArgumentParser) -> None:
    p.add_argument("--review", default=REVIEW.priority, choices=REVIEW_PRIORITIES,
                   help="folder input: how report.csv ranks the cases for review (disagreement costs "
                        "extra network passes per case; representative an encoder pass per case, its "
                        f"descriptors kept in {REVIEW.descriptors_name} beside the report)")


def _report_row(predictor, source: Path, case: str, image, region, prediction, fit, review: str) -> dict:
    """One case's row of report.csv (``core/report.py``); ``region``: what the review scores look at (an
    optic disc photograph's ROI, else the image)."""
    from ..core.report import case_row
    from ..core.review import descriptor, disagreement

    score = features = None
    with naming(source):
        if review == "disagreement":
            score = disagreement(predictor, region, image.is_volume, image.spacing)
        elif review == "representative":  # set-level: ranked with the others once the folder is done
            features = descriptor(predictor, region, image.is_volume, image.spacing)
    return case_row(case, prediction, predictor.labels, fit, file=source.name, spacing=image.spacing,
                    disagreement=score, descriptor=features)


def _refused_row(predictor, source: Path, case: str, image, reason: str) -> dict:
    """report.csv's row of a photograph in which no disc was found: empty measures, the highest
    uncertainty, the reason in ``fit_note``."""
    from ..core.disc.predict import no_disc_prediction
    from ..core.report import case_row, mark_refused

    fit = predictor.check_fit(image.array, is_volume=False)
    row = case_row(case, no_disc_prediction(predictor, image.array.shape), predictor.labels, fit, file=source.name,
                   spacing=image.spacing)
    return mark_refused(row, reason)


def _is_dicom(source: Path) -> bool:
    """A DICOM series: a ``.dcm`` file, or a folder holding DICOM files (below it too) and no other images."""
    from ..io import _dicom, is_supported, suffix_of

    if source.is_dir():
        images = any(p.is_file() and is_supported(p) for p in source.iterdir())
        return not images and _dicom.holds_dicom(source)
    return suffix_of(source) in _dicom.DICOM_SUFFIXES


def _read_dicom(source: Path, series: str | None):
    """A DICOM series: the folder's one series, the one ``--series`` names, or the series of a given file."""
    from ..io import _dicom, read_image

    return _dicom.read_series(source, series=series) if source.is_dir() else read_image(source)


def _write_seg(path: Path, labels, image, predictor, overwrite: bool) -> Path:
    from ..files import atomic_write
    from ..io._dicom_seg import write_segmentation

    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    atomic_write(path, lambda tmp: write_segmentation(tmp, labels, image, list(predictor.labels.names)), suffix=".dcm")
    return path


def _prediction_pairs(source: Path, target: Path) -> list[tuple[Path, Path, str]]:
    """(input, output, case name) triples; a folder input maps every readable file to
    ``<output>/<case>.<ext>``, its case name (``io.case_names``) being its stem unless another scan shares
    it (``a.png`` and ``a.tif``: masks ``a.png.png`` and ``a.tif.tif``), so no mask replaces another. The
    input folder itself is refused as the output folder: its masks would be read as scans next time.

    A DICOM series (a folder holding DICOM files, or one of its files) is one volume: its mask is
    ``target``, or ``<target>/<folder name>.nii.gz`` when ``target`` is a folder or has no ending."""
    from ..io import case_names, is_supported, stem_of, suffix_of

    if not source.exists():
        raise RamsegInputError("input not found", source)
    if _is_dicom(source):
        name = (source if source.is_dir() else source.parent).resolve().name
        if target.is_dir() or not suffix_of(target):
            target = target / f"{name}.nii.gz"
        return [(source, target, name)]
    if source.is_file():
        if target.is_dir():
            target = target / f"{stem_of(source)}{'.nii.gz' if suffix_of(source) in ('.nii', '.nii.gz') else '.png'}"
        if target.resolve() == source.resolve():
            raise RamsegInputError("the mask would replace the input scan; choose another output", target)
        return [(source, target, stem_of(source))]
    if target.resolve() == source.resolve():  # a.jpg's mask a.png would be read as a scan by the next run
        raise RamsegInputError("the masks would land among the input scans and be read as scans next time; "
                               "choose another output folder", target)
    files = sorted(p for p in source.iterdir() if p.is_file() and is_supported(p))
    if not files:
        raise RamsegInputError("no readable images (PNG, JPEG, TIFF, NIfTI) in this folder", source)
    cases = case_names(files)
    pairs = []
    for path in files:
        suffix = suffix_of(path)
        out_suffix = ".nii.gz" if suffix in (".nii", ".nii.gz") else (".tif" if suffix in (".tif", ".tiff") else ".png")
        pairs.append((path, target / f"{cases[path.name]}{out_suffix}", cases[path.name]))
    scans = {p.resolve() for p in files}
    if any(mask.resolve() in scans for _, mask, _ in pairs):
        raise RamsegInputError("the output folder would put masks over the input scans; choose another one", target)
    target.mkdir(parents=True, exist_ok=True)
    return pairs
