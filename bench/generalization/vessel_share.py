#!/usr/bin/env python
"""Is the vessel share a report gives overstated by the working scale? (issues 28 and 29, finding 17)

The vessel model predicts at its working scale (model.json's long side) and the mask is scaled up to the
photograph's own size. Thick vessels then come out too thick and thin ones vanish; the measure the dock
and ``report.csv`` give, the vessel share of the field of view, moves with that. This script predicts
full-size photographs of a camera as the product does (``Predictor.predict_image``) and compares the
predicted share inside the field of view with the experts' share, with the Dice at full size.

    python -m bench.generalization.vessel_share --model default --domain HRF
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import machine as bench_machine
from bench.common import results_io

BENCH = Path(__file__).resolve().parents[1]
SCORES = ("dice_full_size", "recall", "precision", "thin_recall")


def held_out_cases(model: str, domain: str) -> set[str]:
    """The photographs of ``domain`` the model kept for source validation (its model.json's ``val_cases``):
    never trained on, so two models with the same split compare on them as on new photographs of a known camera."""
    from napari_ramseg.core.models.checkpoint import load_metadata
    from napari_ramseg.models import resolve_model

    cases = load_metadata(resolve_model(model)).extra.get("data", {}).get("val_cases") or []
    return {c.split("/", 1)[1] for c in cases if c.split("/", 1)[0] == domain}


def share_rows(model: str, root: Path, limit: int | None, only: set[str] | None = None) -> tuple[list[dict], dict]:
    from PIL import Image

    from napari_ramseg.core.inference.predictor import Predictor
    from bench.generalization.thin_vessels import case_scores
    from napari_ramseg.models import resolve_model

    predictor = Predictor.from_path(resolve_model(model), device="cpu")
    rows = []
    paths = [p for p in sorted((root / "images").iterdir()) if only is None or p.stem in only]
    for path in paths[:limit]:
        image = np.asarray(Image.open(path).convert("RGB"))
        truth = np.asarray(Image.open(root / "labels" / f"{path.stem}.png")) >= 1
        fov_path = root / "fov" / f"{path.stem}.png"
        fov = np.asarray(Image.open(fov_path)) >= 1 if fov_path.is_file() else np.ones(truth.shape, bool)
        start = time.perf_counter()
        pred = predictor.predict_image(image).labels >= 1
        seconds = round(time.perf_counter() - start, 2)
        scores = case_scores(pred, truth, fov)  # at full size: thin = centreline of vessels <= ~3 px wide there
        rows.append({"case": path.stem, "size": list(image.shape[:2]), "seconds": seconds,
                     "expert_share": float(truth[fov].mean()), "predicted_share": float(pred[fov].mean()),
                     "dice_full_size": scores.pop("dice"), **scores})
    return rows, {"working_long_side": predictor.preprocess.long_side, "model": model}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--domain", default="HRF")
    ap.add_argument("--data", type=Path, default=BENCH.parent.parent / "shared" / "data" / "vessels")
    ap.add_argument("--limit", type=int, help="only the first N photographs (a quick look)")
    ap.add_argument("--held-out", action="store_true", help="only the photographs the model kept for source validation")
    ap.add_argument("--name", help="the records' name (default: the model's)")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "vessel_share")
    args = ap.parse_args(argv)
    root = args.data / args.domain
    if not (root / "images").is_dir():
        raise SystemExit(f"no photographs under {root}/images (the research data is not on this machine)")
    only = held_out_cases(args.model, args.domain) if args.held_out else None
    if only is not None and not only:
        raise SystemExit(f"{args.model} kept no {args.domain} photograph for source validation")
    rows, info = share_rows(args.model, root, args.limit, only)
    expert = statistics.mean(r["expert_share"] for r in rows)
    predicted = statistics.mean(r["predicted_share"] for r in rows)
    summary = {"cases": len(rows), "expert_share": round(expert, 4), "predicted_share": round(predicted, 4),
               "ratio": round(predicted / expert, 3),
               **{k: round(statistics.mean(r[k] for r in rows), 4) for k in SCORES}}
    command = shlex.join(["python", "-m", "bench.generalization.vessel_share", *(argv if argv is not None else sys.argv[1:])])
    record = {"command": command, "machine": bench_machine.describe(), "domain": args.domain, **info,
              "summary": summary, "rows": rows}
    stem = args.out / f"{args.name or Path(args.model).name}_{args.domain}{'_held_out' if args.held_out else ''}"
    results_io.write_json(stem.with_suffix(".json"), record)
    text = (f"# Vessel share at full size: `{args.model}` on {args.domain}\n\nCommand: `{command}`  \n"
            f"Machine: {bench_machine.one_line(record['machine'])}\n\n"
            f"Working scale: long side {info['working_long_side']} px; {len(rows)} full-size photographs"
            f"{' (the model kept them for source validation: never trained on)' if args.held_out else ''}; share = "
            "vessel pixels / field-of-view pixels; recall, precision and thin recall (the experts' centreline pixels on vessels "
            "at most ~3 px wide at full size that the mask covers) at full size, mean over the photographs.\n\n"
            "| expert share | predicted share | predicted / expert | Dice at full size | recall | precision | thin recall |\n"
            f"|---|---|---|---|---|---|---|\n| {expert:.2%} | {predicted:.2%} | {summary['ratio']} | "
            + " | ".join(str(summary[k]) for k in SCORES) + " |\n")
    results_io.write_text(stem.with_suffix(".md"), text)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
