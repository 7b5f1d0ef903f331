#!/usr/bin/env python
"""What choosing the sigmoid threshold on source validation buys on a camera the model never saw.

For a trained vessel model: read its source data again as training did (``load_training_data`` with
the model's preprocess, validation fraction and seed), choose the threshold on the source-validation
cases only (``core/evaluation/threshold.choose_threshold``), then score each unseen domain at 0.5 and at the
chosen threshold: Dice, precision and recall per case, on the whole photograph at its own size (as
``ramseg evaluate`` does). Nothing about the unseen domains is used for the choice.

    python -m bench.recipes.threshold_choice --model napari_ramseg/bundled_models/vessels --targets CHASE_DB1
    python -m bench.recipes.threshold_choice --model RUN --write   # also store the threshold in RUN/model.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import machine as bench_machine

BENCH = Path(__file__).resolve().parents[1]


def _scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = float(np.logical_and(pred, truth).sum())
    p, t = float(pred.sum()), float(truth.sum())
    return {"dice": 2 * tp / (p + t) if p + t else 1.0, "precision": tp / p if p else float("nan"),
            "recall": tp / t if t else float("nan")}


def score_domain(predictor, root: Path, domain: str, thresholds: list[float]) -> dict[str, dict[str, float]]:
    from napari_ramseg.core.data.dataset import discover, read_case_image, read_case_mask

    dataset = discover(root, "domains", [domain], labels=predictor.labels)
    per = {t: [] for t in thresholds}
    for case in dataset.cases:
        image, truth = read_case_image(case), read_case_mask(case, predictor.labels) > 0
        probs = predictor.predict(image.array).probabilities[0]
        for t in thresholds:
            per[t].append(_scores(probs > t, truth))
    return {f"{t:g}": {k: float(np.nanmean([c[k] for c in cases])) for k in ("dice", "precision", "recall")}
            | {"cases": len(cases)} for t, cases in per.items()}


def main(argv: list[str] | None = None) -> int:
    from napari_ramseg.core.models.checkpoint import load_metadata, resolve_model_path
    from napari_ramseg.files import atomic_write_json
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.core.evaluation.threshold import choose_threshold
    from napari_ramseg.core.training.job import load_training_data
    from napari_ramseg.io import atomic_write

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=BENCH.parent.parent / "shared" / "data" / "vessels")
    ap.add_argument("--targets", default="", help="comma list of unseen domains to score (never used to choose)")
    ap.add_argument("--write", action="store_true", help="store the chosen threshold in the model's model.json")
    ap.add_argument("--out", type=Path, default=None, help="markdown report (and .json beside it)")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"skipped: {args.data} is not there")
        return 0
    start = time.perf_counter()
    meta = load_metadata(args.model)
    cfg, recorded = meta.config, meta.extra.get("data") or {}
    data = load_training_data(args.data, recorded.get("format", "domains"), list(meta.domains), None, cfg.labels,
                              cfg.val_fraction, cfg.seed, preprocess=cfg.preprocess)
    predictor = Predictor.from_path(args.model, device="cpu")
    choice = choose_threshold(predictor, data.val)
    targets = [t for t in args.targets.split(",") if t]
    unseen = {t: score_domain(predictor, args.data, t, sorted({0.5, choice.threshold})) for t in targets}
    report = {"model": str(args.model), "sources": list(meta.domains), "choice": choice.to_dict(), "unseen": unseen,
              "command": "python -m bench.recipes.threshold_choice " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": bench_machine.describe(), "seconds": round(time.perf_counter() - start, 1)}
    lines = [f"# Threshold chosen on source validation: {args.model.name}", "",
             f"Command: `{report['command']}`  ", f"Machine: {bench_machine.one_line(report['machine'])}  ",
             f"Sources: {', '.join(meta.domains)}; chosen on {choice.cases} source-validation cases: "
             f"**{choice.threshold:g}** (source-validation Dice {choice.dice:.3f}; at 0.5: {choice.dice_at[0.5]:.3f})", "",
             "Source-validation Dice by threshold: " + ", ".join(f"{t:g}: {d:.3f}" for t, d in choice.dice_at.items()), ""]
    if unseen:
        lines += ["| unseen domain | threshold | Dice | precision | recall |", "|---|---|---|---|---|"]
        for domain, rows in unseen.items():
            for t, r in rows.items():
                lines.append(f"| {domain} ({r['cases']} cases) | {t} | {r['dice']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |")
        lines.append("")
    print("\n".join(lines))
    if args.out is not None:
        atomic_write(args.out, lambda p: p.write_text("\n".join(lines)))
        atomic_write(args.out.with_suffix(".json"), lambda p: p.write_text(json.dumps(report, indent=2) + "\n"))
    if args.write:
        _, meta_path = resolve_model_path(args.model)
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
        raw["config"]["threshold"] = choice.threshold
        raw.setdefault("metrics", {})["threshold_choice"] = choice.to_dict()
        atomic_write_json(meta_path, raw)
        load_metadata(args.model)  # what was written must load
    return 0


if __name__ == "__main__":
    sys.exit(main())
