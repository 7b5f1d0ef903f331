#!/usr/bin/env python
"""What a Refine costs on a full-size photograph, as the Correct dock and ``ramseg refine`` run it (issue 30).

The issue's budget (3 s per refinement) is for 512 x 512 (``benchmark.py --time-512``); a clinician opens the
camera's own file, 3504 x 2336 for HRF. This times ``refine.refine_case`` on such a photograph, with strokes
drawn at its full size by the simulated clinician's rule (``benchmark.next_stroke``, 3 px: napari's brush at
size 3): the first Refine, which segments the scan and takes the head's features once, and each later one,
which reuses them (the dock keeps one result per scan).

    python -m bench.strokes.timing --model vessels --photo ../shared/data/vessels/HRF/images/01_dr.JPG
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import machine as bench_machine
from bench.common import results_io

OUT = Path(__file__).resolve().parents[1] / "results" / "strokes" / "timing_full_size.json"


def _timed(fn):
    began, began_wall = time.process_time(), time.perf_counter()
    value = fn()
    return value, {"cpu_seconds": round(time.process_time() - began, 3),
                   "wall_seconds": round(time.perf_counter() - began_wall, 3)}


def time_photo(model: str, photo: Path, strokes_drawn: int, threads: int) -> dict:
    import torch

    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.core.review.refine import BACKGROUND_STROKE, refine_case, working_scale
    from napari_ramseg.io import read_image, read_mask
    from napari_ramseg.models import resolve_model

    from bench.strokes.benchmark import next_stroke

    torch.set_num_threads(threads)
    image = read_image(photo)
    domain = photo.parent.parent
    gt = read_mask(domain / "labels" / f"{photo.stem}.png")
    fov_path = domain / "fov" / f"{photo.stem}.png"
    fov = read_mask(fov_path) >= 1 if fov_path.is_file() else np.ones(gt.shape, bool)
    predictor = Predictor.from_path(resolve_model(model), device="cpu")
    strokes = np.zeros(gt.shape, np.uint8)
    mask, result, refines = None, None, []
    for _ in range(strokes_drawn):
        if result is None:  # the dock's first Refine segments the scan; time that apart
            result, segmented = _timed(lambda: refine_case(predictor, image, strokes)[1])
            mask = result.prediction.labels
        found = next_stroke(mask, gt, fov)
        if found is None:
            break
        stroke, value = found
        strokes[stroke] = value
        (mask, _), seconds = _timed(lambda: refine_case(predictor, image, strokes, result=result))
        refines.append({**seconds, "stroke": "not" if value == BACKGROUND_STROKE else "is",
                        "stroked_pixels": int((strokes > 0).sum())})
    return {"photo": photo.name, "shape": list(gt.shape), "working_scale": round(working_scale(predictor, image), 3),
            "threads": threads, "segment_and_features_once": segmented, "refines": refines}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vessels")
    ap.add_argument("--photo", type=Path, required=True)
    ap.add_argument("--strokes", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if not args.photo.is_file():
        raise SystemExit(f"no photograph at {args.photo} (the research data is not on this machine)")
    record = {"command": shlex.join(["python", "-m", "bench.strokes.timing", *(argv if argv is not None else sys.argv[1:])]),
              "machine": bench_machine.describe(), **time_photo(args.model, args.photo, args.strokes, args.threads)}
    results_io.write_json(args.out, record)
    later = [r["cpu_seconds"] for r in record["refines"][1:]] or [r["cpu_seconds"] for r in record["refines"]]
    print(f"{record['photo']} {record['shape']}: segment + features {record['segment_and_features_once']}, "
          f"refines {[r['wall_seconds'] for r in record['refines']]} s wall (median CPU {np.median(later):.2f} s); "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
