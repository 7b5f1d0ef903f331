#!/usr/bin/env python
"""One recipe choice, leave-one-camera-out on the sources only (issue 28): a table of each candidate's
unseen Dice per direction and their mean, and the verdict of a rule fixed before the runs.

Each candidate is a results folder of ``bench/generalization/benchmark.py`` (its ``generalization.json``), run with
the same method, seed, budget and scoring grid as the others, differing in one choice. For vessels the
three directions train on two cameras and score the third, so no camera decides on itself. A folder of
``bench/recipes/budget_curve.py`` (its ``curve.json``: the optic disc's leave-one-out checks) counts each held-out
camera's mean unseen Dice (disc, and cup where the camera has cup masks) at the run's last iteration.

The rule: the ``--prefer`` candidate is adopted unless its mean unseen Dice is lower than the baseline's
by more than ``--margin`` (one seed's three-direction mean moves by about 0.02 between seeds here:
bench/results/generalization.json, ram_dsir, seeds 0-2); a candidate that is better by more than the
margin is adopted whatever ``--prefer`` says.

    python -m bench.recipes.recipe_choice --name "working scale" --method ram_dsir --baseline 540 --prefer 768 \\
        --candidate 540=bench/results/recipe_scale/long_side_540 --candidate 768=bench/results/recipe_scale/long_side_768 \\
        --out bench/results/recipe_scale/README.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bench.common import machine as bench_machine


def unseen_dice(folder: Path, task: str, method: str) -> dict[str, float]:
    """{direction: mean unseen Dice over the seeds run} of one candidate's results folder."""
    if (folder / "curve.json").exists():
        rows = json.loads((folder / "curve.json").read_text())["rows"]
        last = {r["target"]: max(q["iteration"] for q in rows if q["target"] == r["target"]) for r in rows}
        return {r["target"]: r["unseen_mean"] for r in rows if r["iteration"] == last[r["target"]]}
    table = json.loads((folder / "generalization.json").read_text()).get(task, {})
    return {direction: statistics.mean(rows[method]) for direction, rows in table.items() if rows.get(method)}


def verdict(means: dict[str, float], baseline: str, prefer: str | None, margin: float) -> tuple[str, str]:
    best = max(means, key=means.get)
    if best != baseline and means[best] - means[baseline] > margin:
        return best, f"{best} is better than {baseline} by {means[best] - means[baseline]:+.3f} (> {margin})"
    if prefer and prefer in means and means[baseline] - means[prefer] <= margin:
        return prefer, (f"{prefer} is within {margin} of {baseline} ({means[prefer] - means[baseline]:+.3f}) and "
                        "preferred before the runs")
    return baseline, f"no candidate beats {baseline} by more than {margin}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="what is chosen, e.g. 'working scale'")
    ap.add_argument("--candidate", action="append", required=True, metavar="NAME=FOLDER")
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--prefer", help="the candidate taken on a tie (said before the runs, with why)")
    ap.add_argument("--why", default="", help="why --prefer is preferred, said before the runs")
    ap.add_argument("--margin", type=float, default=0.02)
    ap.add_argument("--task", default="vessels")
    ap.add_argument("--method", default="ram_dsir")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    folders = dict(c.split("=", 1) for c in args.candidate)
    scores = {name: unseen_dice(Path(f), args.task, args.method) for name, f in folders.items()}
    directions = sorted(set.intersection(*(set(s) for s in scores.values())))
    if not directions:
        raise SystemExit("no direction is finished for every candidate yet")
    means = {name: statistics.mean(s[d] for d in directions) for name, s in scores.items()}
    chosen, why = verdict(means, args.baseline, args.prefer, args.margin)
    base = Path(folders[args.baseline])
    meta = json.loads((base / "generalization_meta.json").read_text()) if (base / "generalization_meta.json").exists() \
        else json.loads((base / "curve.json").read_text())
    lines = [f"# Recipe choice: {args.name}", "",
             f"Command: `python -m bench.recipes.recipe_choice {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
             f"Runs: `{meta.get('command', '?')}` (and the same for each candidate)  ",
             f"Machine: {bench_machine.one_line(meta.get('machine', {}))}", "",
             (f"Unseen Dice of `{args.method}` (two cameras train, the third scores; mean over the seeds run). "
              if (base / "generalization_meta.json").exists() else
              "Unseen Dice of each leave-one-out check at its last iteration, on ground-truth ROIs (disc and cup "
              "averaged where the held-out camera has cup masks). ") +
             "Nothing here was chosen on a camera a row reports: the verdict takes the mean over the directions "
             f"finished for every candidate ({len(directions)}).", "",
             "| candidate | " + " | ".join(directions) + " | mean |", "|---|" + "---|" * (len(directions) + 1)]
    for name, s in scores.items():
        lines.append(f"| {name} | " + " | ".join(f"{s[d]:.4f}" for d in directions) + f" | **{means[name]:.4f}** |")
    lines += ["", f"Rule (fixed before the runs): {args.prefer or args.baseline} unless it is worse than {args.baseline} "
              f"by more than {args.margin}; any candidate better by more than {args.margin} wins."
              + (f" Why {args.prefer} on a tie: {args.why}" if args.prefer and args.why else ""), "",
              f"**Verdict: {chosen}** ({why}).", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
