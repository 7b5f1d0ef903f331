#!/usr/bin/env python
"""The vessel threshold chosen leave-one-camera-out (issue 28), against the source-validation choice.

``bench/recipes/threshold_choice.py`` picks the threshold on the held-out cases of the cameras a model trained on.
On a new camera the model is less sure of itself (recall falls, precision holds), so a threshold chosen
where the model is sure may sit too high. This study scores each leave-one-camera-out model (two cameras
train, the third is held out) on its held-out camera over the threshold grid, and asks which rule
transfers to a camera nobody chose on:

- ``0.5``;
- ``source validation``: each model's own choice on its sources (what the bundled model does today);
- ``other directions``: the threshold with the best mean held-out Dice over the *other* directions, so a
  row never sees its own camera.

The best mean over all directions is reported too. It is not written into any model: the study found
the leave-one-out rule worse than each model's own source-validation choice
(bench/results/threshold_loco_reference768/README.md), so threshold_choice stays the rule.

    python -m bench.generalization.threshold_loco --run CHASE_DB1=MODEL_A --run STARE=MODEL_B --run HRF=MODEL_C \\
        --out bench/results/threshold_loco
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from bench.common import machine as bench_machine
from bench.common import results_io
from bench.recipes.threshold_choice import score_domain

BENCH = Path(__file__).resolve().parents[1]

GRID = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


def parse_run(text: str) -> tuple[str, Path]:
    target, sep, model = text.partition("=")
    if not sep or not target or not model:
        raise argparse.ArgumentTypeError(f"--run takes TARGET=MODEL, not {text!r}")
    return target, Path(model)


def score_direction(target: str, model: Path, data: Path, record: Path) -> dict:
    """Held-out Dice/precision/recall at every grid threshold, and the model's source-validation choice
    (cached in ``record``: each direction is scored once)."""
    if record.is_file():
        return json.loads(record.read_text())
    from napari_ramseg.core.evaluation.threshold import choose_threshold
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.core.models.checkpoint import load_metadata
    from napari_ramseg.core.training.job import load_training_data

    meta = load_metadata(model)
    if target in meta.domains:
        raise SystemExit(f"{model} trained on {target}: it is not a leave-one-camera-out model for {target}")
    cfg, recorded = meta.config, meta.extra.get("data") or {}
    predictor = Predictor.from_path(model, device="cpu")
    sources = load_training_data(data, recorded.get("format", "domains"), list(meta.domains), None, cfg.labels,
                                 cfg.val_fraction, cfg.seed, preprocess=cfg.preprocess)
    own = choose_threshold(predictor, sources.val)
    grid = sorted(set(GRID) | {own.threshold})
    scores = {"target": target, "model": str(model), "sources": list(meta.domains),
              "source_validation_choice": own.threshold, "held_out": score_domain(predictor, data, target, grid)}
    results_io.write_json(record, scores)
    return scores


def best_threshold(directions: list[dict]) -> float:
    """The grid threshold with the best mean held-out Dice over ``directions``; ties go towards 0.5."""
    means = {t: statistics.fmean(d["held_out"][f"{t:g}"]["dice"] for d in directions) for t in GRID}
    return min(GRID, key=lambda t: (-round(means[t], 6), abs(t - 0.5)))


def rows_of(directions: list[dict]) -> list[dict]:
    """Per direction: held-out Dice at 0.5, at its own source-validation choice, and at the threshold the
    other directions choose."""
    rows = []
    for d in directions:
        others = [o for o in directions if o is not d]
        chosen = best_threshold(others) if others else None
        at = d["held_out"]
        rows.append({"target": d["target"], "at_0.5": at["0.5"], "source_validation": d["source_validation_choice"],
                     "at_source_validation": at[f"{d['source_validation_choice']:g}"], "other_directions": chosen,
                     "at_other_directions": at[f"{chosen:g}"] if chosen is not None else None})
    return rows


def render(record: dict) -> str:
    lines = ["# The vessel threshold chosen leave-one-camera-out (issue 28)", "",
             f"Command: `{record['command']}`  ", f"Machine: {bench_machine.one_line(record['machine'])}", "",
             "Held-out Dice on each direction's held-out camera (whole photograph at its own size, as `ramseg "
             "evaluate` scores), by the rule that picks the threshold. `other directions`: the threshold with "
             "the best mean held-out Dice over the other directions, so no row is chosen on its own camera.", "",
             "| held-out camera | at 0.5 | source validation (threshold) | other directions (threshold) |",
             "|---|---|---|---|"]
    for r in record["rows"]:
        other = (f"{r['at_other_directions']['dice']:.4f} ({r['other_directions']:g})"
                 if r["other_directions"] is not None else "–")
        lines.append(f"| {r['target']} | {r['at_0.5']['dice']:.4f} | {r['at_source_validation']['dice']:.4f} "
                     f"({r['source_validation']:g}) | {other} |")
    means = {k: statistics.fmean(r[k]["dice"] for r in record["rows"] if r[k] is not None)
             for k in ("at_0.5", "at_source_validation", "at_other_directions")}
    lines += [f"| **mean** | {means['at_0.5']:.4f} | {means['at_source_validation']:.4f} | "
              f"{means['at_other_directions']:.4f} |", "",
              "Held-out Dice by threshold (precision / recall):", "",
              "| held-out camera | " + " | ".join(f"{t:g}" for t in GRID) + " |", "|---|" + "---|" * len(GRID)]
    for d in record["directions"]:
        cells = [f"{d['held_out'][f'{t:g}']['dice']:.3f} ({d['held_out'][f'{t:g}']['precision']:.2f}/"
                 f"{d['held_out'][f'{t:g}']['recall']:.2f})" for t in GRID]
        lines.append(f"| {d['target']} | " + " | ".join(cells) + " |")
    lines += ["", f"Best mean over every direction: {record['threshold']:g} (reported only: a threshold learnt "
              "on other cameras is compared above with each model's own choice, and no model takes it)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=parse_run, action="append", required=True, help="TARGET=MODEL (repeat)")
    ap.add_argument("--data", type=Path, default=BENCH.parent.parent / "shared" / "data" / "vessels")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"skipped: {args.data} is not there")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    directions = [score_direction(t, m, args.data, args.out / "jobs" / f"{t}__{m.name}.json") for t, m in args.run]
    record = {"command": f"python -m {__spec__.name} " + shlex.join(argv or sys.argv[1:]),
              "machine": bench_machine.describe(), "directions": directions, "rows": rows_of(directions),
              "threshold": best_threshold(directions)}
    results_io.write_json(args.out / "threshold_loco.json", record)
    results_io.write_text(args.out / "threshold_loco.md", render(record))
    print(render(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
