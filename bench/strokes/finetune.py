#!/usr/bin/env python
"""What strokes buy fine-tuning (issue 30, item 5): a round from 3 stroke-refined scans against one from
the same 3 scans fully corrected, on leave-one-camera-out directions: the unseen cup (DRIONS-DB + REFUGE ->
Drishti-GS) and the vessels (``--directions``: bench/strokes/cases.py's 768 px RAM-DSIR models).

- Base: the direction's model as the strokes bench takes it (the cup: ``bench/work/runs/disc_to_Drishti-GS``,
  6000 iterations; the vessels: ``bench/work/generalization/models``); it never saw the target camera.
- Scans: the target camera's images that are not the strokes bench's cases (the cup: the ground-truth
  ``_r0`` ROIs, 256 px). Every other person is scored (CHASE_DB1's left and right eye go together; the
  vessels: at most 10 scored photographs, spread evenly, to bound the CPU); the 3 corrected scans are
  drawn at random (``--seeds``) from the rest. No scored image is corrected.
- *strokes N*: each scan's mask after N strokes (``--strokes``; 0: the model's own mask, uncorrected) of
  bench/strokes/benchmark.py's simulated clinician (each on the largest remaining error region of the disc or the
  cup, or of the vessels; 3 px), refined with the method the strokes bench chose for the row
  (bench/results/strokes/strokes.json, chosen on the task's other rows). *full*: the expert's mask.
  Photographs are corrected at the working scale (768 px long side, what the model sees): image and mask
  are written there.
- The round: ``finetune_from_files`` (``ramseg finetune --images --labels --replay``) with
  ``FinetuneConfig``'s defaults and replay of the base's source domains (the cup: its training ROIs; the
  vessels: the shared vessel sets, of which the round takes the base's sources); the project's fixed
  split holds the 3rd correction out, so each round trains on 2 (every arm alike).
- Score: Dice of each structure on the scored images, segmented whole (``Predictor.predict_image``; the
  photographs at the working scale inside the field of view, as the strokes bench), for the base and
  each round's model. Rounds are kept under ``bench/work/strokes_finetune`` and not run again.

    OMP_NUM_THREADS=1 nice -n 10 python -m bench.strokes.finetune --seeds 0,1,2,3,4 --strokes 0,3,10
    OMP_NUM_THREADS=1 nice -n 10 python -m bench.strokes.finetune --directions HRF+STARE-CHASE_DB1,\
        STARE+CHASE_DB1-HRF --seeds 0,1,2 --strokes 5 --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import results_io
from bench.strokes import benchmark as strokes
from bench.strokes import cases
from bench.strokes.report import describe
from napari_ramseg.core.config import RefineConfig
from napari_ramseg.core.labels import LabelScheme
from napari_ramseg.core.review.refine import BACKGROUND_STROKE, refine_labels

CUP = "DRIONS-DB+REFUGE-Drishti-GS"
WORK = cases.WORK / "strokes_finetune"
OUT = cases.REPO / "bench" / "results" / "strokes" / "finetune"
SCORED_EVERY = 2  # every other remaining image (vessels: patient) is scored; the rest may be corrected


@dataclass(frozen=True)
class Setup:
    """One direction's fine-tune study: its model and images (``direction``), the structures the clinician
    strokes (``values``, nested: ``mask >= v``; the first is the one reported first), the replay root, at
    most how many images are scored, and where its records live."""

    name: str  # the direction's row name in bench/results/strokes/strokes.json (the cup: "<name> (cup)")
    direction: cases.Direction
    values: tuple[int, ...]
    replay: Path
    max_scored: int | None
    work: Path

    @property
    def structures(self) -> tuple[str, ...]:
        return ("disc", "cup") if self.direction.task == "disc" else ("vessel",)


def setups() -> dict[str, Setup]:
    """The cup (as first measured: its records sit in WORK itself) and the vessel directions."""
    disc = next(d for d in cases.directions(("disc",)) if d.name == CUP)
    out = {"cup": Setup(f"{CUP} (cup)", disc, (1, 2), cases.WORK / "optic_disc" / "drions_to_drishti", None, WORK)}
    for d in cases.directions(("vessels",)):  # replay: the shared vessel sets; the round takes the base's sources
        out[d.name] = Setup(d.name, d, (1,), cases.DATA / "vessels", 10, WORK / d.name)
    return out


def _patient(stem: str) -> str:
    """Images of one person (CHASE_DB1's Image_01L and Image_01R) are corrected or scored together."""
    return re.sub(r"[LR]$", "", stem)


def split(setup: Setup, seed: int) -> tuple[list[Path], list[Path]]:
    """(the 3 scans to correct, the scans scored): disjoint (no person in both), and neither holds the
    strokes bench's cases."""
    d = setup.direction
    bench = {p.stem for p in cases.pick_images(d, 6 if d.task == "disc" else 4)}
    rest = [p for p in cases.pick_images(d, 10**6) if p.stem not in bench]
    people = list(dict.fromkeys(_patient(p.stem) for p in rest))
    scored_people = set(people[::SCORED_EVERY])
    scored = [p for p in rest if _patient(p.stem) in scored_people]
    pool = [p for p in rest if _patient(p.stem) not in scored_people]
    if setup.max_scored is not None and len(scored) > setup.max_scored:  # evenly spread, to bound the CPU
        scored = [scored[i] for i in np.linspace(0, len(scored) - 1, setup.max_scored).round().astype(int)]
    rng = np.random.default_rng(seed)
    return [pool[i] for i in sorted(rng.choice(len(pool), 3, replace=False))], scored


def chosen_config(setup: Setup) -> RefineConfig:
    """The row's refinement as bench/strokes/benchmark.py chose it on the task's other rows."""
    data = json.loads((cases.REPO / "bench" / "results" / "strokes" / "strokes.json").read_text())
    row = next(r for r in data["rows"] if r["direction"] == setup.name)
    return RefineConfig(**row["settings"])


def _cached(setup: Setup, image: Path, features: bool = True) -> Path:
    """The scan as a strokes-bench case at the working scale, in a cache folder the strokes bench skips."""
    cached = dataclasses.replace(setup.direction, name=f"{setup.direction.name}-finetune")
    (cases.features_case if features else cases.predict_case)(cached, image)
    return cases.cache_path(cached, image)


def stroke_refined(setup: Setup, image: Path, count: int, config: RefineConfig) -> tuple[dict, np.ndarray, list]:
    """The working-scale case, its mask after ``count`` strokes (each on the largest error region of the
    setup's structures), and the Dice of each structure after them."""
    case_path = _cached(setup, image)
    case, features = cases.load_case(case_path), cases.load_features(case_path)
    scheme = LabelScheme(tuple(str(n) for n in case["names"]), str(case["kind"]))
    gt, fov, start = case["gt"], case["fov"], case["labels"]
    drawn, mask = np.zeros(gt.shape, np.uint8), start.copy()
    for _ in range(count):
        found = [f for f in (strokes.next_stroke(mask, gt, fov, v) for v in setup.values) if f is not None]
        if not found:
            break
        stroke, value = max(found, key=lambda f: int(f[0].sum()))
        drawn[stroke] = value
        mask = refine_labels(case["probabilities"], drawn, scheme, float(case["threshold"]), start=start,
                             config=config, features=features)
    assert BACKGROUND_STROKE not in mask
    return case, mask, [strokes.dice(mask, gt, fov, v) for v in setup.values]


def scored_case(setup: Setup, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, expert mask, field of view) as scored: a disc ROI whole from its file; a photograph at the
    working scale (the strokes bench's case, whose cached labels are the base model's)."""
    if setup.direction.task == "disc":
        from napari_ramseg.io import read_image, read_mask

        gt = read_mask(cases._label_path(path))
        return np.asarray(read_image(path).array)[..., :3], gt, np.ones(gt.shape, bool)
    case = cases.load_case(_cached(setup, path, features=False))
    return case["image"], case["gt"], case["fov"]


def score(setup: Setup, model: Path, scored: list[Path]) -> dict[str, list[float]]:
    """Dice of each structure per scored image, segmented whole (``Predictor.predict_image``)."""
    from napari_ramseg.core.inference.predictor import Predictor

    cached = model == setup.direction.model and setup.direction.task != "disc"  # the case holds the base's mask
    predictor = None if cached else Predictor.from_path(model, device="cpu", precision="fp32")
    out: dict[str, list[float]] = {s: [] for s in setup.structures}
    for path in scored:
        image, gt, fov = scored_case(setup, path)
        if cached:
            labels = cases.load_case(_cached(setup, path, features=False))["labels"]
        else:
            labels = predictor.predict_image(image).labels
        for name, value in zip(setup.structures, setup.values):
            out[name].append(strokes.dice(labels, gt, fov, value))
    return out


def record_path(setup: Setup, arm: str, count: int, config: RefineConfig, seed: int) -> Path:
    """Where a round's record is kept: the strokes arms by their refinement too (0 strokes: none)."""
    if arm == "full":
        return setup.work / f"full__s{seed}.json"
    key = "" if count == 0 else f"__{strokes.run_key(config)}"
    return setup.work / f"strokes__n{count}{key}__s{seed}.json"


def _corrections(setup: Setup, seed: int, arm: str, count: int, config: RefineConfig,
                 scratch: Path) -> tuple[list[Path], list[Path], list]:
    """The round's image and mask files, and each correction's Dice. Photographs are written at the
    working scale (the scale the model sees them at), with the refined or the expert mask there."""
    from napari_ramseg.io import read_mask, write_labels

    corrected, _ = split(setup, seed)
    images, masks, annotation = [], [], []
    for path in corrected:
        if arm == "full":
            if setup.direction.task == "disc":
                case, mask = None, read_mask(cases._label_path(path)).astype(np.uint8)
            else:
                case = cases.load_case(_cached(setup, path, features=False))
                mask = (case["gt"] >= 1).astype(np.uint8)
            dice = [1.0] * len(setup.values)
        else:
            case, mask, dice = stroke_refined(setup, path, count, config)
        image = path
        if setup.direction.task != "disc":
            from PIL import Image

            image = scratch / "images" / f"{path.stem}.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(case["image"]).save(image)
        out = scratch / "masks" / f"{path.stem}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_labels(out, mask)
        images.append(image), masks.append(out), annotation.append(dice)
    return images, masks, annotation


def run(job: tuple) -> dict:
    """One round (cached): fine-tune from the arm's 3 corrections, score the scored images."""
    import torch

    from napari_ramseg.core.finetune.job import finetune_from_files

    key, seed, arm, count = job
    setup = setups()[key]
    config = chosen_config(setup)
    path = record_path(setup, arm, count, config, seed)
    if path.exists():
        return json.loads(path.read_text())
    torch.set_num_threads(1)
    began_all = time.process_time()
    corrected, scored = split(setup, seed)
    scratch = setup.work / f"scratch_{arm}_{count}_{seed}"
    shutil.rmtree(scratch, ignore_errors=True)
    images, masks, annotation = _corrections(setup, seed, arm, count, config, scratch)
    began = time.process_time()
    result = finetune_from_files(setup.direction.model, scratch / "models", project=scratch / "corrections",
                                 images=images, masks=masks, replay=setup.replay, seed=seed, device="cpu",
                                 command="bench/strokes/finetune.py")
    seconds = time.process_time() - began
    if result.model_dir is None:
        raise RuntimeError("the fine-tune stopped")
    after = score(setup, result.model_dir, scored)
    record = {"arm": arm, "strokes_per_scan": count if arm == "strokes" else None, "seed": seed,
              "corrected": [p.stem for p in corrected], "trained_on": len(result.train_cases),
              "held_out": len(result.val_cases), "correction_dice": annotation, "scored": len(scored),
              **{s: float(np.mean(v)) for s, v in after.items()},
              "finetune_cpu_seconds": round(seconds, 1), "cpu_seconds": round(time.process_time() - began_all, 1),
              "refine": None if arm == "full" or count == 0 else describe(config)}
    results_io.write_json(path, record)
    shutil.rmtree(scratch, ignore_errors=True)
    return record


def base(setup: Setup, seed: int) -> dict:
    """The base model's Dice on the scored images (cached per seed)."""
    path = setup.work / f"base__s{seed}.json"
    if not path.exists():
        _, scored = split(setup, seed)
        found = score(setup, setup.direction.model, scored)
        results_io.write_json(path, {**{s: float(np.mean(v)) for s, v in found.items()}, "scored": len(scored)})
    return json.loads(path.read_text())


def _prepare(job: tuple) -> str:
    """A scan's cached case (and, for a stroke-refined correction, its features), made once."""
    key, path, features = job
    import torch

    torch.set_num_threads(1)
    setup = setups()[key]
    if setup.direction.task == "disc" and not features:
        return path.stem
    return str(_cached(setup, path, features))


def main(argv: list[str] | None = None) -> int:
    from bench.common import machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directions", default="cup",
                        help="comma-separated: cup and/or vessel directions (" + ", ".join(cases.VESSEL_NAMES) + ")")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--strokes", default="0,3,10",
                        help="strokes per stroke-refined scan, one arm each (0: the model's own mask, uncorrected)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    began = time.process_time()
    chosen = {k: setups()[k] for k in args.directions.split(",")}
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = [("strokes", int(n)) for n in args.strokes.split(",")] + [("full", 0)]
    prepare = list(dict.fromkeys(
        (k, p, f) for k, s in chosen.items() for seed in seeds
        for group, f in zip(split(s, seed), (any(n for _, n in arms), False)) for p in group))
    jobs = [(k, seed, arm, n) for seed in seeds for k in chosen for arm, n in arms]  # seed by seed
    with ProcessPoolExecutor(args.workers) as pool:
        list(pool.map(_prepare, prepare))
        bases = {(k, seed): base(s, seed) for k, s in chosen.items() for seed in seeds}
        rows = []
        for job, record in zip(jobs, pool.map(run, jobs)):
            rows.append({**record, "direction": chosen[job[0]].name, "base": bases[job[:2]]})
            print(json.dumps(rows[-1]), flush=True)
    info = machine.describe()
    command = "OMP_NUM_THREADS=1 nice -n 10 python -m bench.strokes.finetune " + " ".join(argv or sys.argv[1:])
    # the cup and the vessels keep their own records: a run of one never overwrites the other's
    prefix = "" if list(chosen) == ["cup"] else "vessels_"
    results_io.write_json(OUT / f"{prefix}strokes_finetune.json", {"rows": rows, "machine": info, "command": command})
    text = report(chosen, rows, command, machine.one_line(info))
    results_io.write_text(OUT / f"{prefix}results.md", text)
    print(text)
    print(f"CPU seconds of the main process now: {time.process_time() - began:.0f}; of the rounds (stored): "
          f"{sum(r.get('cpu_seconds', r['finetune_cpu_seconds']) for r in rows):.0f}")
    return 0


def _annotated(r: dict) -> list[list[float]]:
    return r.get("correction_dice", r.get("correction_dice_disc_cup"))


def report(chosen: dict[str, Setup], rows: list[dict], command: str, machine_line: str) -> str:
    lines = ["# What strokes buy fine-tuning: 3 stroke-refined scans against the same 3 fully corrected "
             "(issue 30)", "", f"Command: `{command}`", "", f"Machine: {machine_line}", ""]
    for setup in chosen.values():
        mine = [r for r in rows if r["direction"] == setup.name]
        names = setup.structures
        lines += [f"## {setup.name}", "", f"Refinement of the stroked scans: {describe_config(chosen_config(setup))} "
                  "(the row's, chosen by bench/strokes/benchmark.py on the task's other rows). Dice on the scored images "
                  f"({mine[0]['scored']} of the target camera, none of them corrected), base model -> after the round.",
                  "", "| seed | arm | corrections' Dice (" + " / ".join(names) + ") | "
                  + " | ".join(names) + " | round CPU s |", "|---" * (4 + len(names)) + "|"]
        for r in mine:
            annotated = " ".join("/".join(f"{v:.2f}" for v in d) for d in _annotated(r))
            after = " | ".join(f"{r['base'][s]:.3f} -> {r[s]:.3f}" for s in names)
            lines.append(f"| {r['seed']} | {_arm(r)} | {annotated} | {after} | "
                         f"{r.get('cpu_seconds', r['finetune_cpu_seconds']):.0f} |")
        lines += ["", "Mean over the seeds (gain: after the round minus the base model, on the same scored images):", "",
                  f"| arm | rounds | corrections' {names[-1]} Dice | " + " | ".join(f"{s} (gain)" for s in names) + " |",
                  "|---" * (3 + len(names)) + "|"]
        for arm in dict.fromkeys(_arm(r) for r in mine):
            same = [r for r in mine if _arm(r) == arm]
            mean = lambda key: float(np.mean([r[key] for r in same]))  # noqa: E731
            gain = lambda s: mean(s) - float(np.mean([r["base"][s] for r in same]))  # noqa: E731
            annotated = float(np.mean([d[-1] for r in same for d in _annotated(r)]))
            lines.append(f"| {arm} | {len(same)} | {annotated:.3f} | "
                         + " | ".join(f"{mean(s):.3f} ({gain(s):+.3f})" for s in names) + " |")
        lines.append("")
    return "\n".join(lines)


def _arm(r: dict) -> str:
    return f"strokes, {r['strokes_per_scan']} per scan" if r["arm"] == "strokes" else "full (expert)"


def describe_config(config: RefineConfig) -> str:
    return describe(config)


if __name__ == "__main__":
    sys.exit(main())
