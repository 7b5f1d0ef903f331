#!/usr/bin/env python
"""What corrections buy (issue 16): fine-tune a source-trained model on k corrected cases of the unseen
domain and score the domain's other cases.

For each leave-one-domain-out vessel direction the starting point is the RAM-DSIR model the
generalization benchmark trained (``bench/generalization.py`` keeps it under
``bench/work/generalization/models/<job key>/``), so ``base`` is that benchmark's number, scored by its
own ``score_job``. The clinician is simulated by the expert masks of k cases of the unseen domain,
chosen by each review ranking (``core/review.py``: mean entropy, style disagreement) and at random.
Each fine-tune is what ``ramseg finetune --images ... --labels ... --replay SOURCES`` does, through the
same core function (``core/finetune_job.finetune_from_files``) with ``FinetuneConfig``'s defaults: the
corrections are saved into a project whose fixed split holds out the 3rd image (and every 5th from the
10th), replay of the source domains is on. The fine-tuned model is scored on the domain's cases that
were not corrected, beside the base model on the same cases.

Every finished fine-tune is cached under ``--work`` (``runs/*.json``); running the same command again
skips them. The grid runs in priority order (k = 3 for every ranking and seed first, then the other k)
until ``--minutes`` are spent; what did not run is listed in the results.

    OMP_NUM_THREADS=1 python bench/finetune_gain.py --time-one          # one fine-tune's wall time
    OMP_NUM_THREADS=1 python bench/finetune_gain.py --minutes 90        # the grid
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import generalization as gen  # noqa: E402
import machine as bench_machine  # noqa: E402

GEN_WORK = HERE / "work" / "generalization"
RANKINGS = ("uncertainty", "disagreement", "random")
KS = (3, 1, 5, 10)  # priority order: the target's k first
BASE_SEED = 1  # the generalization seed whose models were kept (seed 0 ran before models were saved)
TUNE_DIRECTION = "HRF+STARE->CHASE_DB1"  # the one direction the defaults were chosen on (its model comes first)
TUNE_SEED = 100  # its tuning runs use a random choice no reported seed uses
TUNING_NOTE = ("Defaults chosen on HRF+STARE->CHASE_DB1 only, with 3 random corrections (seed 100, a choice no "
               "reported run uses), among settings that finish within the 2-minute limit: the CHASE_DB1 row is "
               "therefore not independent of the choice; the STARE and HRF rows are.")
# what was tried, in order (each within the 2-minute limit on this CPU except today's defaults, timed for reference)
CANDIDATES = [
    {"iterations": 40, "batch": 4, "freeze": "encoder", "lr_scale": 0.1},
    {"iterations": 40, "batch": 4, "freeze": "encoder", "lr_scale": 0.5},
    {"iterations": 40, "batch": 4, "freeze": "none", "lr_scale": 0.5},
    {"iterations": 40, "batch": 4, "freeze": "encoder", "lr_scale": 0.5, "correction_share": 0.75},
    {"iterations": 100, "batch": 8, "freeze": "none", "lr_scale": 0.1, "correction_share": 0.5},
    {"iterations": 60, "batch": 4, "freeze": "encoder", "lr_scale": 0.5, "correction_share": 0.75},
]


# ------------------------------------------------------------------------------------- the setup


def find_base(source: str, target: str, seed: int = BASE_SEED) -> tuple[Path, dict[str, Any]] | None:
    """The kept ram_dsir model of a direction and its job record, once both exist."""
    pattern = f"vessels__{source}-{target}__ram_dsir__s{seed}__*"
    for model in sorted((GEN_WORK / "models").glob(pattern)):
        record = GEN_WORK / "reference" / "jobs" / f"{model.name}.json"
        if (model / "model.json").exists() and record.exists():
            return model, json.loads(record.read_text())
    return None


def stand_in_record(source: str, target: str) -> dict[str, Any]:
    """A job record for a model that is not one of the generalization runs' (timing with another model)."""
    params = {**gen.PROFILES["reference"]["vessels"], "device": "cpu", "threads": 1}
    return {"job": {"task": "vessels", "source": source, "target": target, "method": "ram_dsir", "seed": BASE_SEED,
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

    def __init__(self, source: str, target: str, work: Path, data: Path, model: Path | None = None):
        from napari_ramseg.core.infer import Predictor

        found = find_base(source, target) if model is None else (model, stand_in_record(source, target))
        if found is None:
            raise FileNotFoundError(f"no kept ram_dsir seed-{BASE_SEED} model for {source}->{target} yet")
        self.model, self.record = found
        self.source, self.target, self.name = source, target, f"{source}->{target}"
        self.job = gen.Job(**self.record["job"])
        domains, _ = gen._prepared("vessels", str(data), str(GEN_WORK), self.job.params)
        self.cases = {p.name: p for p in domains[target]}
        self.work = work / f"{source}-{target}"
        self.replay = write_domains(work / "replay" / source, {d: domains[d] for d in gen.source_domains(source)})
        self.case_dir = write_domains(self.work / "cases", {target: domains[target]}) / target
        self.predictor = Predictor.from_path(self.model, device="cpu")

    def trained(self, predictor, names) -> Any:
        from napari_ramseg.core.config import LabelScheme

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

        from napari_ramseg.core.infer import entropy_map
        from napari_ramseg.core.review import disagreement_prepared

        start = time.perf_counter()
        dice = self.score(self.predictor, self.cases)
        scores: dict[str, dict[str, float]] = {"uncertainty": {}, "disagreement": {}}
        for name, p in self.cases.items():
            x = torch.from_numpy(np.ascontiguousarray(gen._to_sample(p, self.target).image))
            probs = self.predictor.predict_prepared(x)
            scores["uncertainty"][name] = float(entropy_map(probs, self.predictor.labels).mean())
            scores["disagreement"][name] = disagreement_prepared(self.predictor, x)
        out = {"dice": dice, "mean": float(np.mean(list(dice.values()))), "generalization_dice": self.record["dice"],
               "scores": scores, "seconds": round(time.perf_counter() - start, 1)}
        gen._atomic_json(path, out)
        return out


def chosen_cases(base: dict[str, Any], ranking: str, k: int, seed: int) -> list[str]:
    from napari_ramseg.core.review import random_order, rank_by

    names = sorted(base["dice"])
    order = random_order(names, seed) if ranking == "random" else rank_by(base["scores"][ranking])
    return order[:k]


# ----------------------------------------------------------------------------------- one fine-tune


def finetune_run(d: Direction, ranking: str, k: int, seed: int, settings: dict[str, Any] | None = None,
                 tag: str = "") -> dict[str, Any]:
    """Fine-tune on k corrected cases and score the others; the record is cached."""
    path = d.work / "runs" / f"{ranking}__k{k}__s{seed}{tag}.json"
    if path.exists():
        return json.loads(path.read_text())
    from napari_ramseg.core.finetune_job import finetune_from_files
    from napari_ramseg.core.infer import Predictor

    base = d.base()
    chosen = chosen_cases(base, ranking, k, seed)
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
        replay=d.replay, seed=seed, device="cpu", command="bench/finetune_gain.py", on_event=on_event,
        **(settings or {}))
    seconds = time.perf_counter() - start
    if result.model_dir is None:
        raise RuntimeError("the fine-tune stopped")
    others = sorted(set(d.cases) - set(chosen))
    after = d.score(Predictor.from_path(result.model_dir, device="cpu"), others)
    base_other = float(np.mean([base["dice"][n] for n in others]))
    meta = json.loads((result.model_dir / "model.json").read_text())["finetune"]
    record = {
        "direction": d.name, "ranking": ranking, "k": k, "seed": seed, "chosen": chosen,
        "trained_on": len(result.train_cases), "held_out": len(result.val_cases),
        "dice_other": float(np.mean(list(after.values()))), "base_other": base_other,
        "gain": float(np.mean(list(after.values()))) - base_other, "per_case": after,
        "heldout_before": result.before_dice, "heldout_after": result.after_dice,
        "replay_source_dice": meta.get("replay_source_dice"),
        "settings": {k_: meta.get(k_) for k_ in ("iterations", "lr", "lr_scale", "correction_share", "freeze", "batch")},
        "finetune_seconds": round(seconds, 1), "phase_seconds": {p: round(s, 1) for p, s in phases.items()},
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    gen._atomic_json(path, record)
    shutil.rmtree(scratch, ignore_errors=True)
    return record


# --------------------------------------------------------------------------------------- the grid


def grid(directions: list[tuple[str, str]], rankings: list[str], ks: list[int], seeds: list[int]):
    """(direction, ranking, k, seed) in priority order: every direction's k = 3 first, then each other k."""
    for k in ks:
        for seed in seeds:
            for source, target in directions:
                for ranking in rankings:
                    yield (source, target), ranking, k, seed


def collect(work: Path, directions: list[tuple[str, str]], rankings, ks, seeds) -> tuple[list, list]:
    """The issue's JSON shape from the cached runs, and the (direction, ranking, k, seed) not run."""
    out, missing = [], []
    for source, target in directions:
        folder = work / f"{source}-{target}"
        base_path = folder / "base.json"
        if not base_path.exists():
            missing += [(f"{source}->{target}", r, k, s) for k in ks for r in rankings for s in seeds]
            continue
        base = json.loads(base_path.read_text())
        entry: dict[str, Any] = {"direction": f"{source}->{target}", "base": [round(base["mean"], 4)] * len(seeds),
                                 "generalization_dice": base["generalization_dice"],
                                 "ceiling": ceiling(source, target), "curves": {}, "gain": {}, "base_other": {},
                                 "heldout": {}, "finetune_seconds": {}}
        for ranking in rankings:
            for k in ks:
                for s in seeds:
                    rec_path = folder / "runs" / f"{ranking}__k{k}__s{s}.json"
                    if not rec_path.exists():
                        missing.append((entry["direction"], ranking, k, s))
                        continue
                    rec = json.loads(rec_path.read_text())
                    for key, value in (("curves", rec["dice_other"]), ("gain", rec["gain"]),
                                       ("base_other", rec["base_other"]),
                                       ("heldout", [rec["heldout_before"], rec["heldout_after"]]),
                                       ("finetune_seconds", rec["finetune_seconds"])):
                        entry[key].setdefault(ranking, {}).setdefault(str(k), []).append(
                            value if not isinstance(value, float) else round(value, 4))
        out.append(entry)
    return out, missing


def ceiling(source: str, target: str) -> list[float]:
    """The generalization benchmark's in-domain ceiling for the target, per seed it has finished."""
    found = []
    for path in sorted((GEN_WORK / "reference" / "jobs").glob(f"vessels__{source}-{target}__ceiling__s*__*.json")):
        found.append(round(float(json.loads(path.read_text())["dice"]), 4))
    return found


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _mean(values) -> float | None:
    return float(np.mean(values)) if values else None


def targets(results: list[dict[str, Any]], k: int = 3) -> dict[str, Any]:
    """The issue's targets at k: a ranked gain of at least +0.05, above random, averaged over seeds."""
    out = {}
    for entry in results:
        gains = {r: _mean(entry["gain"].get(r, {}).get(str(k), [])) for r in entry["gain"]}
        random_gain = gains.get("random")
        out[entry["direction"]] = {
            r: {"gain": g, "seeds": len(entry["gain"][r].get(str(k), [])), "at_least_0.05": g is not None and g >= 0.05,
                "beats_random": None if random_gain is None or g is None else g > random_gain}
            for r, g in gains.items() if r != "random"} | {"random": {"gain": random_gain}}
    for ranking in RANKINGS:
        if ranking == "random":
            continue
        per_dir = [_mean(e["gain"].get(ranking, {}).get(str(k), [])) for e in results]
        rand = [_mean(e["gain"].get("random", {}).get(str(k), [])) for e in results]
        if per_dir and all(v is not None for v in per_dir + rand):
            out[f"mean over directions: {ranking}"] = {"gain": float(np.mean(per_dir)), "random": float(np.mean(rand))}
    return out


def write_markdown(path: Path, results: list, meta: dict) -> None:
    lines = ["# What corrections buy: fine-tuning on k corrected cases of the unseen domain", "",
             f"Generated by `bench/finetune_gain.py`; status: **{meta['status']}**. Command: `{meta['command']}`.",
             f"Machine: {bench_machine.one_line(meta['machine'])}, shared with other jobs (load average "
             f"{meta['load_average']}); one torch thread.", "",
             "Start: the RAM-DSIR model of `bench/generalization.py --reference` (seed "
             f"{BASE_SEED}, the first seed whose models were kept). `base` is its Dice on all of the unseen domain's "
             "cases, by that benchmark's own scoring (it equals the generalization number). Each fine-tune is "
             "`ramseg finetune --images ... --labels ... --replay SOURCES` (core `finetune_from_files`) with the "
             "defaults of `FinetuneConfig` " + f"({meta['finetune_defaults']}): the corrections are saved into a "
             "project whose fixed split holds the 3rd corrected image (and every 5th from the 10th) out of "
             "training, as in the product, so k = 3 trains on 2. Dice is on the domain's cases that were not "
             "corrected, beside the base model on the same cases (`gain`). Seeds change the random choice and the "
             "fine-tune's sampling; the rankings choose the same cases for every seed.", ""]
    for entry in results:
        lines += [f"## {entry['direction']}", "",
                  f"base (all cases) {entry['base'][0]:.4f} (generalization: {_f(entry['generalization_dice'])}); "
                  f"in-domain ceiling {', '.join(f'{c:.3f}' for c in entry['ceiling']) or '–'}.", "",
                  "| ranking | " + " | ".join(f"k={k}: Dice (gain)" for k in meta["ks"]) + " |",
                  "|---|" + "---|" * len(meta["ks"])]
        for ranking in meta["rankings"]:
            cells = []
            for k in meta["ks"]:
                dice = entry["curves"].get(ranking, {}).get(str(k), [])
                gain = entry["gain"].get(ranking, {}).get(str(k), [])
                cells.append("–" if not dice else f"{np.mean(dice):.4f} ({np.mean(gain):+.4f}, n={len(dice)})")
            lines.append(f"| {ranking} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Targets at k = 3 (averaged over seeds)", "", "```", json.dumps(meta["targets"], indent=1), "```", ""]
    if meta.get("tuning"):
        lines += ["## Choosing the defaults (one direction)", "", meta["tuning_note"], "",
                  "| settings | seconds | gain on the other cases | held-out corrected before -> after |", "|---|---|---|---|"]
        for t in meta["tuning"]:
            lines.append(f"| `{json.dumps(t['settings'])}` | {t['finetune_seconds']} | {t['gain']:+.4f} | "
                         f"{t['heldout_before']:.3f} -> {t['heldout_after']:.3f} |")
        lines.append("")
    lines += [f"Not run ({len(meta['not_run'])}): " + (", ".join(meta["not_run_summary"]) or "none"), ""]
    gen._atomic_write(path, lambda t: t.write_text("\n".join(lines)))


def write_plot(path: Path, results: list, ks: list[int]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not results:
        return
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    colours = {"uncertainty": "#d94801", "disagreement": "#2171b5", "random": "#777777"}
    for ax, entry in zip(axes[0], results):
        for ranking, curve in entry["curves"].items():
            xs = [k for k in sorted(ks) if curve.get(str(k))]
            ax.errorbar([0] + xs, [entry["base"][0]] + [np.mean(entry["gain"][ranking][str(k)]) + entry["base"][0]
                                                        for k in xs],
                        yerr=[0] + [np.std(curve[str(k)]) for k in xs], marker="o", capsize=3, label=ranking,
                        color=colours.get(ranking))
        ax.axhline(entry["base"][0], color="black", lw=0.8, ls=":", label="base")
        if entry["ceiling"]:
            ax.axhline(float(np.mean(entry["ceiling"])), color="#31a354", lw=0.8, ls="--", label="in-domain ceiling")
        ax.set_title(entry["direction"], fontsize=9)
        ax.set_xlabel("corrected cases k")
        ax.set_ylabel("Dice: base + gain on the other cases", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    gen._atomic_write(path, lambda t: fig.savefig(t, dpi=110, format="png"))
    plt.close(fig)


def write_outputs(args: argparse.Namespace, meta: dict) -> None:
    import os

    results, missing = collect(args.work, args.directions, args.rankings, args.k, args.seeds)
    meta["not_run"] = [list(m) for m in missing]
    summary: dict[str, int] = {}
    for direction, ranking, k, _ in missing:
        summary[f"{direction} k={k}"] = summary.get(f"{direction} k={k}", 0) + 1
    meta["not_run_summary"] = [f"{key} ({n} runs)" for key, n in summary.items()]
    meta["targets"] = targets(results)
    meta["load_average"] = round(os.getloadavg()[0], 2)
    meta["elapsed_minutes"] = round((time.time() - meta["_t0"]) / 60, 1)
    meta["ks"], meta["rankings"] = args.k, args.rankings
    meta["tuning"] = tuning_records(args.work)
    args.out.mkdir(parents=True, exist_ok=True)
    gen._atomic_json(args.out / "finetune_gain.json", results)
    gen._atomic_json(args.out / "finetune_gain_meta.json", {k: v for k, v in meta.items() if not k.startswith("_")})
    write_markdown(args.out / "finetune_gain.md", results, meta)
    write_plot(args.out / "finetune_gain.png", results, args.k)


def tuning_records(work: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((work / TUNE_DIRECTION.replace("->", "-")).glob("runs/*__tune_*.json"))] \
        if (work / TUNE_DIRECTION.replace("->", "-")).is_dir() else []


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
    todo = list(grid(args.directions, args.rankings, args.k, args.seeds))
    while todo and time.time() - meta["_t0"] < args.minutes * 60:
        ran = False
        for cell in list(todo):
            if time.time() - meta["_t0"] >= args.minutes * 60:
                break
            (source, target), ranking, k, seed = cell
            name = f"{source}->{target}"
            if name not in directions:
                try:
                    directions[name] = Direction(source, target, args.work, args.data)
                except FileNotFoundError:
                    continue  # its model is not there yet: the other directions go on
            try:
                rec = finetune_run(directions[name], ranking, k, seed)
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
    d = Direction(source, target, args.work / "timing", args.data, model=args.model)
    settings = json.loads(args.settings) if args.settings else None
    rec = finetune_run(d, "random", 3, 0, settings=settings, tag=f"__{args.tag}" if args.tag else "")
    print(json.dumps({k: rec[k] for k in ("finetune_seconds", "phase_seconds", "settings", "gain", "dice_other",
                                         "base_other", "heldout_before", "heldout_after")}, indent=1))
    return 0


def tune(args: argparse.Namespace) -> int:
    """The candidates on the tuning direction, 3 random corrections (seed TUNE_SEED), cached like the grid."""
    source, target = TUNE_DIRECTION.split("->")
    d = Direction(source, target, args.work, args.data)
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
    ap.add_argument("--work", type=Path, default=HERE / "work" / "finetune_gain")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--time-one", action="store_true", help="time one fine-tune from 3 corrections and exit")
    ap.add_argument("--model", type=Path, default=None, help="--time-one: use this model instead of the kept one")
    ap.add_argument("--settings", default="", help="--time-one: JSON of fine-tune options (iterations, lr_scale, ...)")
    ap.add_argument("--tag", default="", help="--time-one: cache name suffix for these settings")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--tune", action="store_true", help="run the fine-tune candidates on the tuning direction")
    ap.add_argument("--candidates", default="", help="--tune: which candidates (indices), default all")
    args = ap.parse_args(argv)
    args.directions = [tuple(d.split("->")) for d in args.directions.split(",") if d]
    args.rankings = [r for r in args.rankings.split(",") if r]
    args.k = [int(k) for k in args.k.split(",") if k]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
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
