#!/usr/bin/env python
"""Unseen Dice against training iterations (issue 28's budget curve), from the snapshots of leave-one-
camera-out runs.

A run trained with ``--snapshot-every N`` keeps its network every N iterations (``snapshots/iter_*``).
Each snapshot is scored with ``ramseg evaluate``'s engine on the run's held-out camera, which the run
never trained or selected on; the source-validation Dice at the same iteration comes from the run's own
log. One run per direction gives the whole curve, with one caveat the table repeats: a snapshot at
iteration k of an N-iteration schedule has not had the learning-rate decay of a k-iteration run, so the
curve shows when the schedule stops gaining, not what a shorter schedule would reach.

The budget is chosen on the mean over the directions (each a source camera held out, never a camera the
product is measured on): the fewest iterations whose mean is within ``--tolerance`` of the best mean.

    python -m bench.recipes.budget_curve --run DRIONS-DB=bench/work/runs/disc_to_DRIONS-DB \\
        --run Drishti-GS=bench/work/runs/disc_to_Drishti-GS --data bench/work/optic_disc/domains \\
        --out bench/results/budget_curve_optic_disc

Every score is kept in ``OUT/jobs/`` and never computed twice: run it again as the runs go on.
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


def parse_run(text: str) -> tuple[str, Path]:
    target, sep, run = text.partition("=")
    if not sep or not target or not run:
        raise argparse.ArgumentTypeError(f"--run takes TARGET=RUN_FOLDER, not {text!r}")
    return target, Path(run)


def source_validation(run: Path) -> dict[int, float]:
    """Iteration -> source-validation Dice, from the run's metrics.json history (else its train.log)."""
    from napari_ramseg.core.models.run_folder import RunFolder

    folder = RunFolder(run)
    records = json.loads(folder.metrics.read_text()).get("history", []) if folder.metrics.is_file() else [
        json.loads(line) for line in folder.log.read_text().splitlines() if line.strip()]
    return {r["iteration"]: r["val_dice"] for r in records if r.get("val_dice") is not None}


def score_snapshot(snapshot: Path, data: Path, target: str, record: Path) -> dict:
    """Per-structure unseen Dice of one snapshot (cached in ``record``), over the cases whose expert mask
    holds that structure: a disc-only camera scores no cup, and a ROI drawn away from the disc (an empty
    mask) scores nothing."""
    if record.is_file():
        return json.loads(record.read_text())
    from napari_ramseg.core.data.dataset import discover, read_case_image, read_case_mask
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.core.evaluation.metrics import dice_score, structure_masks

    predictor = Predictor.from_path(snapshot, device="cpu")
    labels = predictor.labels
    per_label: dict[str, list[float]] = {name: [] for name in labels.names}
    dataset = discover(data, "auto", [target], labels=labels)
    for case in dataset.cases:
        truth = structure_masks(read_case_mask(case, labels), labels)
        image = read_case_image(case)
        predicted = structure_masks(predictor.predict(image.array, is_volume=image.is_volume).labels, labels)
        for name in labels.names:
            if truth[name].any():
                per_label[name].append(float(dice_score(predicted[name], truth[name])))
    dice = {name: statistics.fmean(v) for name, v in per_label.items() if v}
    scores = {"snapshot": str(snapshot), "target": target, "cases": {n: len(v) for n, v in per_label.items()},
              "dice": dice, "mean_dice": statistics.fmean(dice.values())}
    results_io.write_json(record, scores)
    return scores


def progress(run: Path) -> dict | None:
    """Where an unfinished run stands (its resume state's iteration of its planned iterations), else None:
    a curve over unfinished runs says where it flattens so far, not where it flattens."""
    state = run / "resume.json"
    if (run / "model.json").is_file() and not state.is_file():
        return None
    if not state.is_file():
        return {"iteration": 0, "planned": None}
    record = json.loads(state.read_text())
    planned = (record.get("config") or {}).get("iterations")
    if planned is not None and record.get("iteration", 0) >= planned:
        return None
    return {"iteration": record.get("iteration", 0), "planned": planned}


def curve(runs: list[tuple[str, Path]], data: Path, jobs: Path, step: int) -> list[dict]:
    from napari_ramseg.core.models.run_folder import RunFolder

    rows = []
    for target, run in runs:
        validation = source_validation(run)
        for snapshot in (folder.path for folder in RunFolder(run).snapshots()):
            iteration = int(snapshot.name.split("_")[1])
            if iteration % step:
                continue
            scores = score_snapshot(snapshot, data, target, jobs / f"{run.name}__{snapshot.name}.json")
            rows.append({"target": target, "run": str(run), "iteration": iteration, "unseen": scores["dice"],
                         "unseen_mean": scores["mean_dice"], "cases": scores["cases"],
                         "source_validation": validation.get(iteration)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def choose(rows: list[dict], targets: list[str], tolerance: float) -> dict | None:
    """The fewest iterations whose mean unseen Dice over every direction is within ``tolerance`` of the best
    such mean (only iterations that every direction has reached count)."""
    by_iteration: dict[int, dict[str, float]] = {}
    for r in rows:
        by_iteration.setdefault(r["iteration"], {})[r["target"]] = r["unseen_mean"]
    means = {it: statistics.fmean(v.values()) for it, v in by_iteration.items() if set(v) == set(targets)}
    if not means:
        return None
    best = max(means.values())
    chosen = min(it for it, m in means.items() if m >= best - tolerance)
    return {"iteration": chosen, "mean": means[chosen], "best_mean": best, "means": means}


def render(record: dict) -> str:
    targets = record["targets"]
    labels = sorted({label for r in record["rows"] for label in r["unseen"]})
    lines = ["# Unseen Dice against iterations (issue 28)", "", f"Command: `{record['command']}`  ",
             f"Machine: {bench_machine.one_line(record['machine'])}", "",
             "Each row is a snapshot of a leave-one-camera-out run, scored on its held-out camera (never trained "
             "or selected on). A snapshot at iteration k of a longer schedule has not had the learning-rate decay "
             "of a k-iteration run: the curve says when the schedule stops gaining.", "",
             "| held-out camera | iteration | " + " | ".join(f"unseen {label}" for label in labels)
             + " | unseen mean | source validation |", "|---|---|" + "---|" * (len(labels) + 2)]
    for r in sorted(record["rows"], key=lambda r: (r["target"], r["iteration"])):
        cells = [f"{r['unseen'][label]:.4f}" if r["unseen"].get(label) is not None else "–" for label in labels]
        val = f"{r['source_validation']:.4f}" if r["source_validation"] is not None else "–"
        lines.append(f"| {r['target']} | {r['iteration']} | " + " | ".join(cells) + f" | {r['unseen_mean']:.4f} | {val} |")
    choice = record["choice"]
    lines += ["", f"Rule: the fewest iterations whose mean unseen Dice over {', '.join(targets)} is within "
              f"{record['tolerance']} of the best mean."]
    unfinished = {t: p for t, p in record.get("unfinished", {}).items() if p is not None}
    if unfinished:
        lines.append("**Runs still training, so no verdict yet**: " + "; ".join(
            f"held-out {t} at iteration {p['iteration']} of {p['planned']}" for t, p in unfinished.items())
            + (f". Best so far: {choice['iteration']} iterations (mean {choice['mean']:.4f})." if choice else "."))
    elif choice:
        lines.append(f"**Where it flattens: {choice['iteration']} iterations** (mean {choice['mean']:.4f}; "
                     f"best {choice['best_mean']:.4f}).")
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # optional: the table and JSON carry the numbers
        return
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for target in record["targets"]:
        rows = sorted((r for r in record["rows"] if r["target"] == target), key=lambda r: r["iteration"])
        for label in sorted({label for r in rows for label in r["unseen"]}):
            ax.plot([r["iteration"] for r in rows], [r["unseen"][label] for r in rows], marker="o",
                    label=f"{label}, held-out {target}")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("unseen Dice")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    results_io.write_figure(path, fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=parse_run, action="append", required=True, help="TARGET=RUN_FOLDER (repeat)")
    ap.add_argument("--data", type=Path, required=True, help="the data root the runs trained from")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--step", type=int, default=1, help="score only the snapshots at multiples of this iteration")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = curve(args.run, args.data, args.out / "jobs", args.step)
    targets = [t for t, _ in args.run]
    record = {"command": f"python -m {__spec__.name} " + shlex.join(argv or sys.argv[1:]),
              "machine": bench_machine.describe(), "targets": targets, "tolerance": args.tolerance,
              "rows": rows, "choice": choose(rows, targets, args.tolerance),
              "unfinished": {target: progress(run) for target, run in args.run}}
    results_io.write_json(args.out / "curve.json", record)
    results_io.write_text(args.out / "README.md", render(record))
    if rows:
        plot(record, args.out / "curve.png")
    print(render(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
