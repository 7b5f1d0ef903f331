#!/usr/bin/env python
"""What corrections buy (issue 16): fine-tune a source-trained model on k corrected cases of the unseen
domain and score the domain's other cases.

For each leave-one-domain-out vessel direction the starting point is the RAM-DSIR model the
generalization benchmark trained with seed ``--base-seed`` (``bench/generalization/benchmark.py`` keeps it under
``bench/work/generalization/models/<job key>/``), so ``base`` is that benchmark's number, scored by its
own ``score_job``. The clinician is simulated by the expert masks of k cases of the unseen domain,
chosen by each review ranking (``core/review/priority.py``: mean entropy, style disagreement, representative) and
at random. Runs of each base seed are cached apart (``--work``/base_s<seed>), and the results record it.
Each fine-tune is what ``ramseg finetune --images ... --labels ... --replay SOURCES`` does, through the
same core function (``core/finetune/job.finetune_from_files``) with ``FinetuneConfig``'s defaults: the
corrections are saved into a project whose fixed split holds out the 3rd image (and every 5th from the
10th), replay of the source domains is on. The fine-tuned model is scored on the domain's cases that
were not corrected, beside the base model on the same cases.

Every finished fine-tune is cached under ``--work`` (``runs/*.json``); running the same command again
skips them. The grid runs in priority order (k = 3 for every ranking and seed first, then the other k)
until ``--minutes`` are spent; what did not run is listed in the results.

    OMP_NUM_THREADS=1 python -m bench.finetune.gain --time-one          # one fine-tune's wall time
    OMP_NUM_THREADS=1 python -m bench.finetune.gain --design            # representative's weighting, one direction
    OMP_NUM_THREADS=1 python -m bench.finetune.gain --minutes 90        # the grid
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.generalization import benchmark as gen
from bench.generalization.jobs import PROFILES, Job, source_domains
from bench.common import results_io
from bench.common import machine as bench_machine

from bench.finetune.gain_report import (
    DESIGN_POWERS, GEN_WORK, RANKINGS, TUNE_DIRECTION, TUNING_NOTE, chosen_power, run_name, write_outputs)

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
KS = (3, 5, 1, 10)  # priority order: the target's k first
TUNE_SEED = 100  # its tuning runs use a random choice no reported seed uses
CANDIDATES = [
    {"iterations": 40, "batch": 4, "freeze": "encoder", "lr_scale": 0.1},
    {"iterations": 40, "batch": 4, "freeze": "encoder", "lr_scale": 0.5},
    {"iterations": 40, "batch": 4, "freeze": "none", "lr_scale": 0.5},
    {"iterations": 40, "batch": 4, "freeze": "encoder", "lr_scale": 0.5, "correction_share": 0.75},
    {"iterations": 100, "batch": 8, "freeze": "none", "lr_scale": 0.1, "correction_share": 0.5},
    {"iterations": 60, "batch": 4, "freeze": "encoder", "lr_scale": 0.5, "correction_share": 0.75},
]


# ------------------------------------------------------------------------------------- the setup


def kept_seeds() -> dict[int, int]:
    """Generalization seeds with kept ram_dsir vessel models -> how many directions (model and record)."""
    found: dict[int, set[str]] = {}
    for model in (GEN_WORK / "models").glob("vessels__*__ram_dsir__s*__*"):
        record = GEN_WORK / "reference" / "jobs" / f"{model.name}.json"
        if (model / "model.json").exists() and record.exists():
            _, direction, _, seed, _ = model.name.split("__")
            found.setdefault(int(seed[1:]), set()).add(direction)
    return {seed: len(d) for seed, d in sorted(found.items())}


def default_base_seed() -> int:
    """The seed whose models exist (most directions, then the latest); 2, the running seed, when none does."""
    seeds = kept_seeds()
    return max(seeds, key=lambda s: (seeds[s], s)) if seeds else 2


def find_base(source: str, target: str, seed: int) -> tuple[Path, dict[str, Any]] | None:
    """The kept ram_dsir model of a direction and its job record, once both exist."""
    pattern = f"vessels__{source}-{target}__ram_dsir__s{seed}__*"
    for model in sorted((GEN_WORK / "models").glob(pattern)):
        record = GEN_WORK / "reference" / "jobs" / f"{model.name}.json"
        if (model / "model.json").exists() and record.exists():
            return model, json.loads(record.read_text())
    return None


def stand_in_record(source: str, target: str, seed: int) -> dict[str, Any]:
    """A job record for a model that is not one of the generalization runs' (timing with another model)."""
    params = {**PROFILES["reference"]["vessels"], "device": "cpu", "threads": 1}
    return {"job": {"task": "vessels", "source": source, "target": target, "method": "ram_dsir", "seed": seed,
                    "iterations": params.pop("iterations"), "params": params}, "dice": None}


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    from napari_ramseg.files import atomic_write

    if not path.exists():
        atomic_write(path, lambda t: Image.fromarray(array).save(t, format="PNG"), suffix=".png")


def write_domains(folder: Path, domains: dict[str, list]) -> Path:
    """Prepared cases as a ``domains`` layout (``<folder>/<domain>/images|labels``), at the benchmark's scale."""
    for domain, cases in domains.items():
        for p in cases:
            _write_png(folder / domain / "images" / f"{p.name}.png", p.image)
            _write_png(folder / domain / "labels" / f"{p.name}.png", (p.mask >= 1).astype(np.uint8))
    return folder


class Direction:
    """One direction's base model, its prepared target cases and the folders a fine-tune reads."""

    def __init__(self, source: str, target: str, work: Path, data: Path, base_seed: int, model: Path | None = None):
        from napari_ramseg.core.inference.predictor import Predictor

        found = (find_base(source, target, base_seed) if model is None
                 else (model, stand_in_record(source, target, base_seed)))
        if found is None:
            raise FileNotFoundError(f"no kept ram_dsir seed-{base_seed} model for {source}->{target} yet")
        self.base_seed = base_seed
        self.model, self.record = found
        self.source, self.target, self.name = source, target, f"{source}->{target}"
        self.job = Job(**self.record["job"])
        domains, _ = gen.prepared_domains("vessels", str(data), str(GEN_WORK), self.job.params)
        self.cases = {p.name: p for p in domains[target]}
        self.work = work / f"{source}-{target}"
        self.replay = write_domains(work / "replay" / source, {d: domains[d] for d in source_domains(source)})
        self.case_dir = write_domains(self.work / "cases", {target: domains[target]}) / target
        self.predictor = Predictor.from_path(self.model, device="cpu")

    def trained(self, predictor, names) -> Any:
        from napari_ramseg.core.labels import LabelScheme

        return gen.TrainedJob(predictor, LabelScheme(("vessel",), "nested"), False, self.cases, sorted(names), [], {})

    def score(self, predictor, names) -> dict[str, float]:
        """Per-case Dice by the generalization benchmark's own scoring (inside the FOV, its scale)."""
        return {r["case"]: r["dice"] for r in gen.score_job(self.job, self.trained(predictor, names))}

    def base(self) -> dict[str, Any]:
        """Base Dice per case and the review scores of every case (cached)."""
        path = self.work / "base.json"
        if path.exists():
            return json.loads(path.read_text())
        import torch

        from napari_ramseg.core.inference.predictor import entropy_map
        from napari_ramseg.core.review.priority import descriptor_prepared, disagreement_prepared

        start = time.perf_counter()
        dice = self.score(self.predictor, self.cases)
        scores: dict[str, dict[str, float]] = {"uncertainty": {}, "disagreement": {}}
        descriptors: dict[str, list[float]] = {}
        for name, p in self.cases.items():
            x = torch.from_numpy(np.ascontiguousarray(gen.to_sample(p, self.target).image))
            probs = self.predictor.predict_prepared(x)
            scores["uncertainty"][name] = float(entropy_map(probs, self.predictor.labels).mean())
            scores["disagreement"][name] = disagreement_prepared(self.predictor, x)
            descriptors[name] = [round(float(v), 6) for v in descriptor_prepared(self.predictor, x)]
        out = {"dice": dice, "mean": float(np.mean(list(dice.values()))), "generalization_dice": self.record["dice"],
               "base_seed": self.base_seed, "model": self.model.name, "scores": scores, "descriptors": descriptors,
               "seconds": round(time.perf_counter() - start, 1)}
        results_io.write_json(path, out)
        return out


def chosen_cases(base: dict[str, Any], ranking: str, k: int, seed: int, power: float | None = None) -> list[str]:
    from napari_ramseg.core.review.priority import REVIEW, random_order, rank_by, representative_order

    names = sorted(base["dice"])
    if ranking == "random":
        order = random_order(names, seed)
    elif ranking == "representative":
        order = representative_order(base["descriptors"], base["scores"]["uncertainty"],
                                     REVIEW.uncertainty_power if power is None else power)
    else:
        order = rank_by(base["scores"][ranking])
    return order[:k]


# ----------------------------------------------------------------------------------- one fine-tune


def finetune_run(d: Direction, ranking: str, k: int, seed: int, settings: dict[str, Any] | None = None,
                 tag: str = "", power: float | None = None) -> dict[str, Any]:
    """Fine-tune on k corrected cases and score the others; the record is cached."""
    path = d.work / "runs" / f"{run_name(ranking, power)}__k{k}__s{seed}{tag}.json"
    if path.exists():
        return json.loads(path.read_text())
    from napari_ramseg.core.finetune.job import finetune_from_files
    from napari_ramseg.core.inference.predictor import Predictor

    base = d.base()
    chosen = chosen_cases(base, ranking, k, seed, power)
    if ranking == "representative" and not settings:  # another weighting that chose the same cases: its run
        for other in sorted(path.parent.glob(f"representative_p*__k{k}__s{seed}.json")):
            rec = json.loads(other.read_text())
            if rec["chosen"] == chosen:
                rec = {**rec, "ranking": run_name(ranking, power), "same_run_as": other.name}
                results_io.write_json(path, rec)
                return rec
    scratch = d.work / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    phases: dict[str, float] = {}
    last = [time.perf_counter(), "prepare"]

    def on_event(event) -> None:  # wall time per phase of the round
        now = time.perf_counter()
        phases[last[1]] = phases.get(last[1], 0.0) + now - last[0]
        last[:] = [now, event.phase]

    start = time.perf_counter()
    result = finetune_from_files(
        d.model, scratch / "models", project=scratch / "corrections",
        images=[d.case_dir / "images" / f"{n}.png" for n in chosen],
        masks=[d.case_dir / "labels" / f"{n}.png" for n in chosen],
        replay=d.replay, seed=seed, device="cpu", command="bench/finetune/gain.py", on_event=on_event,
        **(settings or {}))
    seconds = time.perf_counter() - start
    if result.model_dir is None:
        raise RuntimeError("the fine-tune stopped")
    others = sorted(set(d.cases) - set(chosen))
    after = d.score(Predictor.from_path(result.model_dir, device="cpu"), others)
    base_other = float(np.mean([base["dice"][n] for n in others]))
    meta = json.loads((result.model_dir / "model.json").read_text())["finetune"]
    record = {
        "direction": d.name, "ranking": run_name(ranking, power), "k": k, "seed": seed, "chosen": chosen,
        "base_seed": d.base_seed, "base_model": d.model.name,
        "trained_on": len(result.train_cases), "held_out": len(result.val_cases),
        "dice_other": float(np.mean(list(after.values()))), "base_other": base_other,
        "gain": float(np.mean(list(after.values()))) - base_other, "per_case": after,
        "heldout_before": result.before_dice, "heldout_after": result.after_dice,
        "replay_source_dice": meta.get("replay_source_dice"),
        "settings": {k_: meta.get(k_) for k_ in ("iterations", "lr", "lr_scale", "correction_share", "freeze", "batch")},
        "finetune_seconds": round(seconds, 1), "phase_seconds": {p: round(s, 1) for p, s in phases.items()},
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    results_io.write_json(path, record)
    shutil.rmtree(scratch, ignore_errors=True)
    return record


# --------------------------------------------------------------------------------------- the grid


def design_cells(directions: list[tuple[str, str]], rankings: list[str], seeds: list[int]):
    """Representative's weighting on the tuning direction at k = 3, each power and seed: the grid's first
    cells (the chosen power's are also grid cells, run once)."""
    tune = tuple(TUNE_DIRECTION.split("->"))
    if "representative" not in rankings or tune not in directions:
        return []
    return [(tune, "representative", 3, seed, power) for power in DESIGN_POWERS for seed in seeds]


def grid(directions: list[tuple[str, str]], rankings: list[str], ks: list[int], seeds: list[int]):
    """(direction, ranking, k, seed, power) in priority order: every direction's k = 3 first, then each
    other k; power None: representative's chosen one (``chosen_power``)."""
    for k in ks:
        for seed in seeds:
            for source, target in directions:
                for ranking in rankings:
                    yield (source, target), ranking, k, seed, None


def run_grid(args: argparse.Namespace) -> int:
    from napari_ramseg.core.config import FinetuneConfig

    meta: dict[str, Any] = {
        "_t0": time.time(), "status": "running",
        "command": "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + sys.argv[1:]),
        "started": _dt.datetime.now().isoformat(timespec="seconds"), "machine": bench_machine.describe(),
        "finetune_defaults": ", ".join(f"{k} {v}" for k, v in vars(FinetuneConfig()).items() if k != "device"),
        "tuning_note": TUNING_NOTE, "failures": {},
    }
    write_outputs(args, meta)
    if args.report_only:
        meta["status"] = "report only"
        write_outputs(args, meta)
        return 0
    directions: dict[str, Direction] = {}
    todo = design_cells(args.directions, args.rankings, args.seeds) + list(
        grid(args.directions, args.rankings, args.k, args.seeds))
    while todo and time.time() - meta["_t0"] < args.minutes * 60:
        ran = False
        for cell in list(todo):
            if time.time() - meta["_t0"] >= args.minutes * 60:
                break
            (source, target), ranking, k, seed, power = cell
            name = f"{source}->{target}"
            if ranking == "representative" and power is None:
                power = args.power if args.power is not None else chosen_power(args.work, args.seeds)[0]
                if power is None:
                    continue  # its weighting is not chosen yet: the other rankings go on
            if name not in directions:
                try:
                    directions[name] = Direction(source, target, args.work, args.data, args.base_seed)
                except FileNotFoundError:
                    continue  # its model is not there yet: the other directions go on
            try:
                rec = finetune_run(directions[name], ranking, k, seed, power=power)
                print(f"[{_dt.datetime.now():%H:%M:%S}] {name} {ranking} k={k} seed {seed}: "
                      f"{rec['base_other']:.4f} -> {rec['dice_other']:.4f} ({rec['gain']:+.4f}) "
                      f"in {rec['finetune_seconds']} s", flush=True)
            except Exception as exc:  # one failure must not lose the grid
                meta["failures"][f"{name} {ranking} k={k} s{seed}"] = f"{type(exc).__name__}: {exc}"
                print(f"FAILED {cell}: {exc}", flush=True)
            todo.remove(cell)
            ran = True
            write_outputs(args, meta)
            break  # from the top again: a direction whose model has just appeared goes first at its k
        if not ran and todo:
            time.sleep(60)  # waiting for the generalization run to keep a model
    meta["status"] = "complete" if not todo else f"partial: {len(todo)} of the grid's runs not started in the time"
    meta["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    write_outputs(args, meta)
    return 0


def time_one(args: argparse.Namespace) -> int:
    """One fine-tune from 3 corrections, timed phase by phase."""
    source, target = args.directions[0]
    d = Direction(source, target, args.work / "timing", args.data, args.base_seed, model=args.model)
    settings = json.loads(args.settings) if args.settings else None
    rec = finetune_run(d, "random", 3, 0, settings=settings, tag=f"__{args.tag}" if args.tag else "")
    print(json.dumps({k: rec[k] for k in ("finetune_seconds", "phase_seconds", "settings", "gain", "dice_other",
                                         "base_other", "heldout_before", "heldout_after")}, indent=1))
    return 0


def tune(args: argparse.Namespace) -> int:
    """The candidates on the tuning direction, 3 random corrections (seed TUNE_SEED), cached like the grid."""
    source, target = TUNE_DIRECTION.split("->")
    d = Direction(source, target, args.work, args.data, args.base_seed)
    picked = [int(i) for i in args.candidates.split(",")] if args.candidates else range(len(CANDIDATES))
    for i in picked:
        rec = finetune_run(d, "random", 3, TUNE_SEED, settings=CANDIDATES[i], tag=f"__tune_{i}")
        print(f"[{_dt.datetime.now():%H:%M:%S}] candidate {i} {CANDIDATES[i]}: gain {rec['gain']:+.4f}, "
              f"held-out {rec['heldout_before']:.3f} -> {rec['heldout_after']:.3f}, {rec['finetune_seconds']} s",
              flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--directions", default="HRF+CHASE_DB1->STARE,HRF+STARE->CHASE_DB1,STARE+CHASE_DB1->HRF")
    ap.add_argument("--rankings", default=",".join(RANKINGS))
    ap.add_argument("--k", default=",".join(map(str, KS)))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--minutes", type=float, default=60.0, help="stop starting new fine-tunes after this")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=BENCH / "work" / "finetune_gain")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--time-one", action="store_true", help="time one fine-tune from 3 corrections and exit")
    ap.add_argument("--model", type=Path, default=None, help="--time-one: use this model instead of the kept one")
    ap.add_argument("--settings", default="", help="--time-one: JSON of fine-tune options (iterations, lr_scale, ...)")
    ap.add_argument("--tag", default="", help="--time-one: cache name suffix for these settings")
    ap.add_argument("--base-seed", type=int, default=None,
                    help="the generalization seed whose ram_dsir models are the bases (default: the seed whose "
                         "models exist)")
    ap.add_argument("--power", type=float, default=None,
                    help="representative's uncertainty power (default: chosen by the design cells on "
                         f"{TUNE_DIRECTION}; without them ReviewConfig's)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--tune", action="store_true", help="run the fine-tune candidates on the tuning direction")
    ap.add_argument("--candidates", default="", help="--tune: which candidates (indices), default all")
    args = ap.parse_args(argv)
    args.directions = [tuple(d.split("->")) for d in args.directions.split(",") if d]
    args.rankings = [r for r in args.rankings.split(",") if r]
    args.k = [int(k) for k in args.k.split(",") if k]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.base_seed is None:
        args.base_seed = default_base_seed()
    args.work = args.work / f"base_s{args.base_seed}"
    if args.power is None and not design_cells(args.directions, args.rankings, args.seeds):
        from napari_ramseg.core.review.priority import REVIEW

        args.power = REVIEW.uncertainty_power
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.time_one:
        return time_one(args)
    if args.tune:
        return tune(args)
    return run_grid(args)


if __name__ == "__main__":
    sys.exit(main())
