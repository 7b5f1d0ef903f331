"""``ramseg refine``: a mask that follows a clinician's strokes (``core/review/refine.py``), as the Correct dock makes it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import RamsegInputError, naming
from ._common import add_device, add_settings, settings_from, stderr


def _settings() -> list:
    from ..core.config import RefineConfig
    from ..core.options import settings_of

    return settings_of(RefineConfig)


def add_parser(sub) -> None:
    p = sub.add_parser("refine", help="refine a mask from strokes drawn on the image",
                       description="Segment the image, then let the mask follow the strokes: at each stroked pixel "
                                   "STROKES.png holds the class the mask should have there (the indices ramseg "
                                   "predict writes), 255 for background, and 0 where nothing was drawn.")
    p.add_argument("--model", default="default",
                   help="a bundled model's name (default, vessels, optic-disc), a run folder or a model file "
                        "(default: default)")
    p.add_argument("--input", required=True, type=Path, help="the image or volume the strokes were drawn on")
    p.add_argument("--strokes", required=True, type=Path, help="the strokes, a class-index image of the input's shape")
    p.add_argument("--mask", type=Path, default=None, metavar="START",
                   help="refine this mask (a corrected one) instead of the model's own")
    p.add_argument("--output", required=True, type=Path, help="the refined mask's file")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    add_settings(p, _settings())
    add_device(p)


def run(args: argparse.Namespace) -> int:
    from ..core.config import RefineConfig
    from ..core.inference.predictor import Predictor
    from ..core.options import check_settings
    from ..core.review.refine import check_strokes, refine_case
    from ..io import read_image, read_mask, write_labels
    from ..models import resolve_model

    config = RefineConfig(**settings_from(args, _settings()))
    check_settings(config)  # --reach and --slices within their bounds, before the model is loaded
    if args.output.exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; write the refined mask to a new file, or pass --overwrite")
    with naming(f"--model {args.model}"):
        predictor = Predictor.from_path(resolve_model(args.model), device=args.device, precision=args.precision)
    image = read_image(args.input)
    with naming(args.strokes):
        strokes = check_strokes(read_mask(args.strokes), image.spatial_shape, predictor.labels)
    start = None
    if args.mask is not None:
        with naming(args.mask):
            start = read_mask(args.mask)
            if start.shape != image.spatial_shape:
                raise RamsegInputError(f"the mask {start.shape} does not match the image's shape {image.spatial_shape}")
    with naming(args.input):
        refined, result = refine_case(predictor, image, strokes, start, config)
    written = write_labels(args.output, refined, like=image, overwrite=args.overwrite)
    changed = int((refined != (result.prediction.labels if start is None else start)).sum())
    stderr(f"wrote {written} ({', '.join(predictor.channel_names)}; {changed} pixels changed by the strokes)")
    return 0
