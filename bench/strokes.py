#!/usr/bin/env python
"""A simulated clinician corrects the model's mask with strokes (issue 30, item 4).

Per leave-one-camera-out direction (bench/strokes_cases.py: the model, the unseen images, predicted once
at the working scale), the clinician starts from the model's mask. Each stroke goes along the skeleton
of the largest remaining error region (8-connected pixels whose expert class is the same and the mask's
is wrong), as interactive-segmentation benchmarks place clicks: its pixels get that class (255 for
background), drawn 3 px wide (``--width 1``: the skeleton alone, a scribble) and kept inside the error
region. After each stroke the mask is refined from all strokes so far (``core.refine.refine_labels``,
from the model's mask), as the Correct dock does.

Reported per direction: Dice after 0, 1, 3, 5 and 10 strokes; strokes needed to reach 0.80 / 0.85 /
0.90 (mean over the cases that get there within the budget, with how many do); the brush
baseline of equal effort (the same strokes painted as they are, no refinement); CPU seconds per
refinement. The method and its settings for a row are chosen on the *other* directions of its task
(mean Dice after 5 strokes), never on the row's own.

    OMP_NUM_THREADS=1 nice -n 10 python bench/strokes_cases.py --tasks vessels,cup --images 4
    OMP_NUM_THREADS=1 nice -n 10 python bench/strokes.py --workers 6 [--width 1]
    OMP_NUM_THREADS=1 nice -n 10 python bench/strokes.py --time-512
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import results_io  # noqa: E402
import strokes_cases as cases  # noqa: E402

from napari_ramseg.core.config import LabelScheme, RefineConfig  # noqa: E402
from napari_ramseg.core.refine import BACKGROUND_STROKE, refine_labels  # noqa: E402

OUT = HERE / "results" / "strokes"
BUDGET = 10
REPORTED = (0, 1, 3, 5, 10)
TARGETS = (0.80, 0.85, 0.90)
# The candidates: the threshold move at three reaches and two floors (ceiling = 1 - floor), the random walker.
CANDIDATES = ([RefineConfig(method="threshold", reach=r, floor=f, ceiling=1 - f) for r in (4, 8, 15) for f in (0.05, 0.2)]
              + [RefineConfig(method="random_walker", reach=8)])
STRUCTURE = np.ones((3, 3), bool)


def dice(mask: np.ndarray, gt: np.ndarray, fov: np.ndarray, value: int) -> float:
    """Dice of the class ``value`` (nested: ``>= value``) inside the field of view."""
    a, b = (mask >= value) & fov, (gt >= value) & fov
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def next_stroke(mask: np.ndarray, gt: np.ndarray, fov: np.ndarray, value: int = 1,
                width: int = 3) -> tuple[np.ndarray, int] | None:
    """The stroke on the largest error region of the structure ``value`` (nested: ``>= value``; the cup's
    clinician strokes the cup, not the disc's edge): its pixels and its stroke value (the expert's class
    there); None when none is left. ``width``: 3 px (napari's brush at size 3) or 1 px (a scribble)."""
    from skimage.morphology import skeletonize

    best, best_size, best_value = None, 0, 0
    wrong = ((mask >= value) != (gt >= value)) & fov
    for value in np.unique(gt[wrong]):
        components, count = ndi.label(wrong & (gt == value), structure=STRUCTURE)
        if not count:
            continue
        sizes = np.bincount(components.ravel())[1:]
        index = int(sizes.argmax())
        if sizes[index] > best_size:
            best, best_size, best_value = components == index + 1, int(sizes[index]), int(value)
    if best is None:
        return None
    line = skeletonize(best)
    stroke = line if width == 1 else ndi.binary_dilation(line, structure=STRUCTURE) & best  # inside the region
    return stroke, (BACKGROUND_STROKE if best_value == 0 else best_value)


def simulate(case: dict, scheme: LabelScheme, config: RefineConfig, value: int, width: int = 3) -> dict:
    """One case, ``BUDGET`` strokes: Dice of class ``value`` after each, refined and brushed, and the
    CPU seconds of each refinement."""
    probs, gt, fov, start = case["probabilities"], case["gt"], case["fov"], case["labels"]
    threshold = float(case["threshold"])
    strokes = np.zeros(gt.shape, np.uint8)
    mask, brush = start.copy(), start.copy()
    refined, brushed, seconds = [dice(mask, gt, fov, value)], [dice(brush, gt, fov, value)], []
    for _ in range(BUDGET):
        found = next_stroke(mask, gt, fov, value, width)
        if found is None:
            refined.append(refined[-1]), brushed.append(brushed[-1])
            continue
        stroke, stroke_value = found
        strokes[stroke] = stroke_value
        brush[stroke] = 0 if stroke_value == BACKGROUND_STROKE else stroke_value
        began = time.process_time()
        mask = refine_labels(probs, strokes, scheme, threshold, start=start, config=config)
        seconds.append(time.process_time() - began)
        refined.append(dice(mask, gt, fov, value)), brushed.append(dice(brush, gt, fov, value))
    return {"refined": refined, "brush": brushed, "seconds": seconds}


def _run_one(job: tuple) -> tuple:
    direction, path, config_index, value, width = job
    case = cases.load_case(path)
    scheme = LabelScheme(tuple(str(n) for n in case["names"]), str(case["kind"]))
    return direction, path.stem, config_index, simulate(case, scheme, CANDIDATES[config_index], value, width)


def strokes_to(curve: list[float], target: float) -> int | None:
    """The first stroke count at which Dice reaches ``target`` (None: not within the budget)."""
    return next((n for n, d in enumerate(curve) if d >= target), None)


def summarise(runs: dict, task_of: dict) -> list[dict]:
    """One row per direction, with its settings chosen on the other directions of its task."""
    rows = []
    for direction, by_config in runs.items():
        others = [d for d in runs if d != direction and task_of[d] == task_of[direction]]
        pool = others or [direction]  # a task with one direction has nothing else to choose on (said in README)
        score = {i: np.mean([np.mean([c["refined"][5] for c in runs[d][i].values()]) for d in pool])
                 for i in range(len(CANDIDATES))}
        chosen = max(score, key=score.get)
        per_case = by_config[chosen]
        mean = lambda key, n: float(np.mean([c[key][n] for c in per_case.values()]))  # noqa: E731
        row = {"direction": direction, "task": task_of[direction], "cases": len(per_case),
               "chosen_on": pool, "settings": asdict(CANDIDATES[chosen]),
               "dice": {str(n): mean("refined", n) for n in REPORTED},
               "brush_dice": {str(n): mean("brush", n) for n in REPORTED},
               "strokes_to": {}, "brush_strokes_to": {},
               "cpu_seconds_per_refinement": float(np.mean([s for c in per_case.values() for s in c["seconds"]])),
               "cpu_seconds_max": float(np.max([s for c in per_case.values() for s in c["seconds"]])),
               "every_setting_dice5": {str(i): float(np.mean([c["refined"][5] for c in by_config[i].values()]))
                                       for i in by_config}}
        for target in TARGETS:
            for key, out in (("refined", "strokes_to"), ("brush", "brush_strokes_to")):
                reached = [strokes_to(c[key], target) for c in per_case.values()]
                row[out][f"{target:.2f}"] = {"mean_of_reached": (float(np.mean([r for r in reached if r is not None]))
                                                                 if any(r is not None for r in reached) else None),
                                             "reached": sum(r is not None for r in reached), "of": len(reached)}
        rows.append(row)
    return rows


def report(rows: list[dict], command: str, machine: str) -> str:
    lines = ["# Strokes: a simulated clinician corrects the model's mask (issue 30)", "",
             f"Command: `{command}`", "", f"Machine: {machine}", "",
             "Dice of the corrected structure (vessels: vessel; disc ROIs: cup) inside the field of view, at the "
             "working scale, mean over the cases. *brush*: the same strokes painted as they are. Strokes to a "
             "Dice: mean over the cases that reach it within 10 strokes (reached / cases). CPU s: process time "
             "of one refinement (all strokes so far), one thread.", "",
             "| direction | cases | method (chosen on) | Dice 0 | 1 | 3 | 5 | 10 | brush 1 | 3 | 5 | 10 | "
             "strokes to 0.80 / 0.85 / 0.90 | brush | CPU s (max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["settings"]
        method = (f"{s['method']} reach {s['reach']}" + (f" floor {s['floor']}" if s["method"] == "threshold" else "")
                  + f" ({', '.join(r['chosen_on'])})")
        d, b = r["dice"], r["brush_dice"]
        reach = lambda key: " / ".join(  # noqa: E731
            "-" if v["mean_of_reached"] is None else f"{v['mean_of_reached']:.1f} ({v['reached']}/{v['of']})"
            for v in r[key].values())
        lines.append(f"| {r['direction']} | {r['cases']} | {method} | {d['0']:.3f} | {d['1']:.3f} | {d['3']:.3f} | "
                     f"{d['5']:.3f} | {d['10']:.3f} | {b['1']:.3f} | {b['3']:.3f} | {b['5']:.3f} | {b['10']:.3f} | "
                     f"{reach('strokes_to')} | {reach('brush_strokes_to')} | "
                     f"{r['cpu_seconds_per_refinement']:.2f} ({r['cpu_seconds_max']:.2f}) |")
    lines += ["", "Candidates (index: settings), and each one's mean Dice after 5 strokes per direction:", ""]
    for i, c in enumerate(CANDIDATES):
        per = ", ".join(f"{r['direction']} {r['every_setting_dice5'][str(i)]:.3f}" for r in rows)
        lines.append(f"- {i}: {c.method} reach {c.reach} floor {c.floor} ceiling {c.ceiling} beta {c.beta}: {per}")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], curves: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        refined, brush = curves[r["direction"]]
        ax.plot(range(BUDGET + 1), refined, "o-", label="strokes, refined")
        ax.plot(range(BUDGET + 1), brush, "s--", label="same strokes, brush only")
        ax.set_title(f"{r['direction']}\n{r['settings']['method']}, reach {r['settings']['reach']}", fontsize=9)
        ax.set_xlabel("strokes")
        ax.set_ylabel("Dice (cup)" if r["task"] == "cup" else "Dice (vessel)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    results_io.write_figure(out / "strokes.png", fig)


def time_512(repeats: int = 5) -> dict:
    """CPU and wall seconds of one refinement of a 512 x 512 photograph (a crop of a cached vessel case)
    after 10 simulated strokes, per method: the issue's budget is 3 s on 2 cores."""
    path = sorted(cases.CACHE.glob("STARE+CHASE_DB1-HRF/*.npz"))[0]
    case = cases.load_case(path)
    crop = (slice(0, 512), slice(128, 640))  # the photograph is 512 x 768 at the working scale
    case = {k: (v[(slice(None),) + crop] if k == "probabilities" else v[crop] if getattr(v, "ndim", 0) >= 2 else v)
            for k, v in case.items()}
    scheme = LabelScheme(tuple(str(n) for n in case["names"]), str(case["kind"]))
    strokes, mask = np.zeros(case["gt"].shape, np.uint8), case["labels"].copy()
    for _ in range(BUDGET):
        stroke, stroke_value = next_stroke(mask, case["gt"], case["fov"])
        strokes[stroke] = stroke_value
        mask = refine_labels(case["probabilities"], strokes, scheme, float(case["threshold"]), start=case["labels"])
    out = {"case": path.stem, "shape": list(case["gt"].shape), "strokes": BUDGET}
    for method in ("threshold", "random_walker"):
        config = replace(RefineConfig(), method=method)
        cpu, wall = [], []
        for _ in range(repeats):
            began, began_wall = time.process_time(), time.perf_counter()
            refine_labels(case["probabilities"], strokes, scheme, float(case["threshold"]), start=case["labels"],
                          config=config)
            cpu.append(time.process_time() - began), wall.append(time.perf_counter() - began_wall)
        out[method] = {"cpu_seconds_median": float(np.median(cpu)), "wall_seconds_median": float(np.median(wall))}
    return out


def main(argv: list[str] | None = None) -> int:
    import machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--time-512", action="store_true", help="only time one 512 x 512 refinement per method")
    parser.add_argument("--width", type=int, choices=(1, 3), default=3,
                        help="stroke width in px: 3 (napari's brush at size 3) or 1 (a scribble; results in width1/)")
    args = parser.parse_args(argv)
    if args.time_512:
        timing = {**time_512(), "machine": machine.describe()}
        results_io.write_json(OUT / "timing_512.json", timing)
        print(timing)
        return 0
    task_of, jobs = {}, []
    for folder in sorted(p for p in cases.CACHE.iterdir() if p.is_dir()):
        task = "cup" if folder.name.startswith("bundled-") else "vessels"  # strokes_cases.directions' names
        task_of[folder.name] = task
        for path in sorted(folder.glob("*.npz")):
            jobs += [(folder.name, path, i, 2 if task == "cup" else 1, args.width) for i in range(len(CANDIDATES))]
    runs: dict = {d: {i: {} for i in range(len(CANDIDATES))} for d in task_of}
    with ProcessPoolExecutor(args.workers) as pool:
        for direction, case, index, result in pool.map(_run_one, jobs):
            runs[direction][index][case] = result
            print(direction, case, index, f"{result['refined'][5]:.3f}", flush=True)
    rows = summarise(runs, task_of)
    curves = {}
    for r in rows:
        chosen = next(i for i, c in enumerate(CANDIDATES) if asdict(c) == r["settings"])
        per_case = runs[r["direction"]][chosen].values()
        curves[r["direction"]] = (np.mean([c["refined"] for c in per_case], axis=0).tolist(),
                                  np.mean([c["brush"] for c in per_case], axis=0).tolist())
    command = "OMP_NUM_THREADS=1 nice -n 10 python bench/strokes.py " + " ".join(argv or sys.argv[1:])
    info = machine.describe()
    out = OUT if args.width == 3 else OUT / f"width{args.width}"
    results_io.write_json(out / "strokes.json", {"rows": rows, "curves": curves, "machine": info,
                                                 "candidates": [asdict(c) for c in CANDIDATES], "runs": runs})
    results_io.write_text(out / "results.md", report(rows, command, machine.one_line(info)))
    plot(rows, curves, out)
    print(report(rows, command, machine.one_line(info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
