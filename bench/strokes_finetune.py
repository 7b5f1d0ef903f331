#!/usr/bin/env python
"""What strokes buy fine-tuning (issue 30, item 5): a round from 3 stroke-refined scans against one from
the same 3 scans fully corrected, on the unseen cup's direction (DRIONS-DB + REFUGE -> Drishti-GS).

- Base: ``bench/work/runs/disc_to_Drishti-GS`` (the leave-one-camera-out optic-disc model, 6000 iterations;
  it never saw Drishti-GS).
- Scans: Drishti-GS ground-truth ROIs (the ``_r0`` crops, 256 px), as bench/strokes_cases.py takes them.
  The 3 corrected ones are drawn at random (``--seed``) from those that are neither the strokes bench's
  cases nor scored here; every other ``_r0`` ROI is scored.
- *strokes N*: each scan's mask after N strokes (``--strokes``; 0: the model's own mask, uncorrected) of
  bench/strokes.py's simulated clinician (each on the largest remaining error region of the disc or the
  cup, 3 px), refined with the method the strokes bench chose for the unseen cup row
  (bench/results/strokes/strokes.json, chosen on the other cup rows). *full*: the expert's mask, every pixel corrected.
- The round: ``finetune_from_files`` (``ramseg finetune --images --labels --replay``) with
  ``FinetuneConfig``'s defaults and the direction's own training ROIs as replay; the project's fixed
  split holds the 3rd correction out, so each round trains on 2 (both arms alike).
- Score: Dice of disc and cup on every scored ROI, segmented whole (``Predictor.predict_image``, as the
  strokes bench's cases), for the base and each round's model.

    OMP_NUM_THREADS=1 nice -n 10 python bench/strokes_finetune.py --seeds 0,1,2,3,4 --strokes 0,3,10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import results_io  # noqa: E402
import strokes  # noqa: E402
import strokes_cases as cases  # noqa: E402

from napari_ramseg.core.config import LabelScheme, RefineConfig  # noqa: E402
from napari_ramseg.core.review.refine import BACKGROUND_STROKE, refine_labels  # noqa: E402

NAME = "DRIONS-DB+REFUGE-Drishti-GS"
WORK = cases.WORK / "strokes_finetune"
OUT = HERE / "results" / "strokes" / "finetune"
REPLAY = cases.WORK / "optic_disc" / "drions_to_drishti"
SCORED_EVERY = 2  # every other remaining _r0 ROI is scored; the rest may be corrected


def direction() -> cases.Direction:
    return next(d for d in cases.directions(("disc",)) if d.name == NAME)


def split(seed: int) -> tuple[list[Path], list[Path]]:
    """(the 3 scans to correct, the scans scored): disjoint, and neither holds the strokes bench's cases."""
    d = direction()
    bench = {p.stem for p in cases.pick_images(d, 6)}
    rest = [p for p in sorted(d.images.glob("*_r0.png")) if p.stem not in bench]
    scored, pool = rest[::SCORED_EVERY], [p for i, p in enumerate(rest) if i % SCORED_EVERY]
    rng = np.random.default_rng(seed)
    return [pool[i] for i in sorted(rng.choice(len(pool), 3, replace=False))], scored


def chosen_config() -> RefineConfig:
    data = json.loads((HERE / "results" / "strokes" / "strokes.json").read_text())
    row = next(r for r in data["rows"] if r["direction"] == f"{NAME} (cup)")
    return RefineConfig(**row["settings"])


def stroke_refined(image: Path, count: int, config: RefineConfig) -> tuple[np.ndarray, list[float]]:
    """The scan's mask after ``count`` strokes, each on the larger of the disc's and the cup's largest
    error regions; and the Dice (disc, cup) after them."""
    cached = dataclasses.replace(direction(), name=f"{NAME}-finetune")  # a cache folder the strokes bench skips
    cases.features_case(cached, image)
    case_path = cases.cache_path(cached, image)
    case, features = cases.load_case(case_path), cases.load_features(case_path)
    scheme = LabelScheme(tuple(str(n) for n in case["names"]), str(case["kind"]))
    gt, fov, start = case["gt"], case["fov"], case["labels"]
    drawn, mask = np.zeros(gt.shape, np.uint8), start.copy()
    for _ in range(count):
        found = [f for f in (strokes.next_stroke(mask, gt, fov, v) for v in (1, 2)) if f is not None]
        if not found:
            break
        stroke, value = max(found, key=lambda f: int(f[0].sum()))
        drawn[stroke] = value
        mask = refine_labels(case["probabilities"], drawn, scheme, float(case["threshold"]), start=start,
                             config=config, features=features)
    assert BACKGROUND_STROKE not in mask
    return mask, [strokes.dice(mask, gt, fov, 1), strokes.dice(mask, gt, fov, 2)]


def score(model: Path, scored: list[Path]) -> dict[str, list[float]]:
    """Disc and cup Dice per scored ROI, segmented whole at its ROI size."""
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.io import read_image, read_mask

    predictor = Predictor.from_path(model, device="cpu", precision="fp32")
    out: dict[str, list[float]] = {"disc": [], "cup": []}
    for path in scored:
        labels = predictor.predict_image(np.asarray(read_image(path).array)[..., :3]).labels
        gt = read_mask(cases._label_path(path))
        fov = np.ones(gt.shape, bool)
        out["disc"].append(strokes.dice(labels, gt, fov, 1))
        out["cup"].append(strokes.dice(labels, gt, fov, 2))
    return out


def run(seed: int, arm: str, count: int, config: RefineConfig) -> dict:
    from napari_ramseg.core.finetune.job import finetune_from_files
    from napari_ramseg.io import write_labels

    record_path = WORK / f"{arm}__n{count}__s{seed}.json" if arm == "strokes" else WORK / f"{arm}__s{seed}.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    corrected, scored = split(seed)
    scratch = WORK / f"scratch_{arm}_{seed}"
    shutil.rmtree(scratch, ignore_errors=True)
    masks, annotation = [], []
    for path in corrected:
        if arm == "full":
            from napari_ramseg.io import read_mask

            mask = read_mask(cases._label_path(path)).astype(np.uint8)
            dice = [1.0, 1.0]
        else:
            mask, dice = stroke_refined(path, count, config)
        out = scratch / "masks" / f"{path.stem}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_labels(out, mask)
        masks.append(out)
        annotation.append(dice)
    began = time.process_time()
    result = finetune_from_files(direction().model, scratch / "models", project=scratch / "corrections",
                                 images=corrected, masks=masks, replay=REPLAY, seed=seed, device="cpu",
                                 command="bench/strokes_finetune.py")
    seconds = time.process_time() - began
    if result.model_dir is None:
        raise RuntimeError("the fine-tune stopped")
    after = score(result.model_dir, scored)
    record = {"arm": arm, "strokes_per_scan": count if arm == "strokes" else None, "seed": seed,
              "corrected": [p.stem for p in corrected], "trained_on": len(result.train_cases),
              "held_out": len(result.val_cases), "correction_dice_disc_cup": annotation,
              "scored": len(scored), "disc": float(np.mean(after["disc"])), "cup": float(np.mean(after["cup"])),
              "finetune_cpu_seconds": round(seconds, 1),
              "refine": None if arm == "full" else strokes.describe(config)}
    results_io.write_json(record_path, record)
    shutil.rmtree(scratch, ignore_errors=True)
    return record


def main(argv: list[str] | None = None) -> int:
    import torch

    import machine

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--strokes", default="0,3,10",
                        help="strokes per stroke-refined scan, one arm each (0: the model's own mask, uncorrected)")
    args = parser.parse_args(argv)
    config = chosen_config()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        _, scored = split(seed)
        base_path = WORK / f"base__s{seed}.json"
        if not base_path.exists():
            base = score(direction().model, scored)
            results_io.write_json(base_path, {"disc": float(np.mean(base["disc"])), "cup": float(np.mean(base["cup"])),
                                              "scored": len(scored)})
        base = json.loads(base_path.read_text())
        for arm, count in [("strokes", int(n)) for n in args.strokes.split(",")] + [("full", 0)]:
            record = run(seed, arm, count, config)
            rows.append({**record, "base_disc": base["disc"], "base_cup": base["cup"]})
            print(json.dumps(rows[-1]), flush=True)
    info = machine.describe()
    command = "OMP_NUM_THREADS=1 nice -n 10 python bench/strokes_finetune.py " + " ".join(argv or sys.argv[1:])
    results_io.write_json(OUT / "strokes_finetune.json", {"rows": rows, "machine": info, "command": command})
    lines = ["# What strokes buy fine-tuning: 3 stroke-refined scans against the same 3 fully corrected "
             "(issue 30)",
             "", f"Command: `{command}`", "", f"Machine: {machine.one_line(info)}", "",
             f"Direction {NAME} (the unseen cup). Refinement: {strokes.describe(config)} (the unseen cup row's, "
             "chosen on the other cup rows). Dice on the scored Drishti-GS ROIs, base model -> after the round.", "",
             "| seed | arm | corrections' Dice (disc / cup) | disc | cup | round CPU s |", "|---|---|---|---|---|---|"]
    for r in rows:
        annotated = " ".join(f"{d:.2f}/{c:.2f}" for d, c in r["correction_dice_disc_cup"])
        arm = f"{r['arm']} ({r['strokes_per_scan']} strokes each)" if r["arm"] == "strokes" else "full (expert)"
        lines.append(f"| {r['seed']} | {arm} | {annotated} | {r['base_disc']:.3f} -> {r['disc']:.3f} | "
                     f"{r['base_cup']:.3f} -> {r['cup']:.3f} | {r['finetune_cpu_seconds']:.0f} |")
    lines += ["", "Mean over the seeds (gain: after the round minus the base model, on the same scored ROIs):", "",
              "| arm | rounds | corrections' cup Dice | disc (gain) | cup (gain) |", "|---|---|---|---|---|"]
    arms = list(dict.fromkeys((r["arm"], r["strokes_per_scan"]) for r in rows))
    for arm, count in arms:
        mine = [r for r in rows if (r["arm"], r["strokes_per_scan"]) == (arm, count)]
        mean = lambda key: float(np.mean([r[key] for r in mine]))  # noqa: E731
        annotated = float(np.mean([c for r in mine for _, c in r["correction_dice_disc_cup"]]))
        name = f"strokes, {count} per scan" if arm == "strokes" else "full (expert)"
        lines.append(f"| {name} | {len(mine)} | {annotated:.3f} | "
                     f"{mean('disc'):.3f} ({mean('disc') - mean('base_disc'):+.3f}) | "
                     f"{mean('cup'):.3f} ({mean('cup') - mean('base_cup'):+.3f}) |")
    results_io.write_text(OUT / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
