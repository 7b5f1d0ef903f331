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
    p.add_argument("--input", required=True, type=Path, help="image/volume file or a folder of them")
    p.add_argument("--output", required=True, type=Path, help="mask file, or a folder for folder input")
    p.add_argument("--postprocess", action="store_true", help="largest component per structure and hole filling")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_review(p)
    add_adapt(p)
    add_device(p)


def run(args: argparse.Namespace) -> int:
    from ..core.infer import Predictor
    from ..io import read_image, write_labels
    from ..models import resolve_model

    predictor = Predictor.from_path(resolve_model(args.model), device=args.device, precision=args.precision)
    segmenter = adapt_predictor(predictor, args.adapt)
    pairs = _prediction_pairs(args.input, args.output)
    rows = []  # report.csv, for a folder input
    with progress_bar(len(pairs), "predict", quiet=len(pairs) == 1) as bar:
        for source, target in pairs:
            image = read_image(source)
            with naming(source):
                prediction = segmenter.predict(image.array, postprocess=args.postprocess, is_volume=image.is_volume,
                                               spacing=image.spacing)
                fit = predictor.check_fit(image.array, is_volume=image.is_volume)
            if not fit.fits:  # the mask is still written: the user decides what to make of it
                bar.write(f"ramseg: warning: {source}: {fit.differs}", file=sys.stderr)
            if args.adapt:
                bar.write(f"ramseg: {source.name}: {adapt_line(segmenter.last)}", file=sys.stderr)
            written = write_labels(target, prediction.labels, like=image, overwrite=args.overwrite)
            if args.input.is_dir():
                rows.append(_report_row(predictor, source, image, prediction, fit, args.review))
            bar.update(1)
            if len(pairs) == 1:
                stderr(f"wrote {written} ({', '.join(predictor.channel_names)}; shape {prediction.labels.shape})")
    if rows:
        from ..core.report import write_report

        report = write_report(args.output / REVIEW.report_name, rows, args.review)
        stderr(f"wrote {report} ({len(rows)} cases, review_priority by {args.review})")
    return 0


def _add_review(p: argparse.ArgumentParser) -> None:
    p.add_argument("--review", default=REVIEW.priority, choices=REVIEW_PRIORITIES,
                   help="folder input: how report.csv ranks the cases for review (disagreement costs "
                        "extra network passes per case)")


def _report_row(predictor, source: Path, image, prediction, fit, review: str) -> dict:
    """One case's row of report.csv (``core/report.py``)."""
    from ..core.report import case_row
    from ..core.review import disagreement
    from ..io import stem_of

    score = None
    if review == "disagreement":
        with naming(source):
            score = disagreement(predictor, image.array, image.is_volume, image.spacing)
    return case_row(stem_of(source), prediction, predictor.labels, fit, file=source.name, spacing=image.spacing,
                    disagreement=score)


def _prediction_pairs(source: Path, target: Path) -> list[tuple[Path, Path]]:
    """(input, output) file pairs; a folder input maps every readable file to ``<output>/<stem>.<ext>``."""
    from ..io import is_supported, stem_of, suffix_of

    if not source.exists():
        raise RamsegInputError("input not found", source)
    if source.is_file():
        if target.is_dir():
            target = target / f"{stem_of(source)}{'.nii.gz' if suffix_of(source) in ('.nii', '.nii.gz') else '.png'}"
        return [(source, target)]
    files = sorted(p for p in source.iterdir() if p.is_file() and is_supported(p))
    if not files:
        raise RamsegInputError("no readable images (PNG, JPEG, TIFF, NIfTI) in this folder", source)
    target.mkdir(parents=True, exist_ok=True)
    pairs = []
    for path in files:
        suffix = suffix_of(path)
        out_suffix = ".nii.gz" if suffix in (".nii", ".nii.gz") else (".tif" if suffix in (".tif", ".tiff") else ".png")
        pairs.append((path, target / f"{stem_of(path)}{out_suffix}"))
    return pairs
