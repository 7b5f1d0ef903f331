#!/usr/bin/env python
"""Test-time adaptation benchmark (issue 15): does adapting to the scan help on an unseen domain?

For every leave-one-domain-out model, the unseen domain's cases are scored with no adaptation
(``none``) and with each method of ``core/adapt/`` (align, prompt, adabn, tent), per seed.

- Vessels: the ``ram_dsir`` models that ``bench/generalization.py --reference`` keeps under
  ``bench/work/generalization/models/<job key>/``, scored on exactly the cases of their job record
  with the generalization benchmark's own data preparation and ``score_job``, so ``none`` is the
  generalization number (checked, case by case).
- Optic disc: no LODO disc models are kept by that run, so this script trains its own with
  ``generalization.train_job`` at the ``quick`` budget (one process, one thread), kept under
  ``bench/work/adaptation/models/``; ``none`` is that model's own score.

Hyper-parameters are chosen per model on its SOURCE domains only: each source domain's validation
hold-out (the split the model was selected on) is adapted towards the profile of the other source
domains (its own, for a single source), and the grid point with the best mean source-validation
Dice wins, the gentler one on a tie. The unseen domain is looked at only to score. The default
method is then the one that meets the issue's target on the unseen domains (see ``choose_default``).

    OMP_NUM_THREADS=1 nice -n 2 python bench/adaptation.py            # what exists now; rerun to extend
    python bench/adaptation.py --tasks optic_disc --seeds 0 1 2        # train + score the disc models
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import generalization as gen  # noqa: E402
import machine as bench_machine  # noqa: E402

GEN_WORK = REPO / "bench" / "work" / "generalization"
WORK = REPO / "bench" / "work" / "adaptation"
DATA = (REPO / ".." / "shared" / "data").resolve()
METHODS = ("align", "prompt", "adabn", "tent")
# Each grid runs from the gentlest setting to the strongest: a tie on the sources keeps the gentler.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "align": [{"window": w, "strength": s} for s in (0.25, 0.5, 0.75, 1.0) for w in (0.025, 0.05, 0.1)],
    "prompt": [{"window": w, "prompt_lr": lr, "prompt_steps": 1} for lr in (0.01, 0.05) for w in (0.025, 0.05)],
    "adabn": [{}],
    "tent": [{"tent_lr": lr, "tent_steps": 1} for lr in (1e-4, 1e-3)],
}
TIE = 1e-4


# ------------------------------------------------------------------------------------------ models


def vessel_models(seeds: list[int]) -> list[tuple[gen.Job, dict[str, Any], Path]]:
    """(job, generalization record, model folder) of every kept ram_dsir vessel model of these seeds."""
    found = []
    for path in sorted((GEN_WORK / "reference" / "jobs").glob("vessels__*__ram_dsir__s*.json")):
        record = json.loads(path.read_text())
        job = gen.Job(**record["job"])
        folder = GEN_WORK / "models" / job.key
        if job.seed in seeds and (folder / "model.safetensors").exists() and (folder / "model.json").exists():
            found.append((job, record, folder))
    return found


def disc_models(seeds: list[int], train: bool):
    """The optic-disc LODO models of this script (quick budget), trained here when ``train`` and missing;
    one at a time (a generator), so each is scored before the next is trained."""
    from napari_ramseg.core.checkpoint import save_model

    jobs = gen.build_jobs(["optic_disc"], "quick", seeds, ["ram_dsir"], {"device": "cpu", "threads": 1})
    for job in jobs:
        folder, record_path = WORK / "models" / job.key, WORK / "jobs" / f"{job.key}.json"
        if not record_path.exists():
            if not train:
                continue
            print(f"training {job.key} …", flush=True)
            trained = gen.train_job(job, str(DATA), str(WORK))
            save_model(trained.predictor.model, trained.predictor.metadata, folder)
            per_case = gen.score_job(job, trained)
            gen._atomic_json(record_path, {"job": asdict(job), "key": job.key, "direction": job.direction,
                                           "dice": float(np.mean([r["dice"] for r in per_case])),
                                           "per_case": per_case, **trained.record})
        yield job, json.loads(record_path.read_text()), folder


def load_trained(job: gen.Job, record: dict[str, Any], folder: Path, work: Path) -> gen.TrainedJob:
    """The kept model ready for ``gen.score_job`` on exactly the cases its record scored."""
    from napari_ramseg.core.infer import Predictor

    domains, _ = gen._prepared(job.task, str(DATA), str(work), job.params)
    predictor = Predictor.from_path(folder, device="cpu")
    disc = job.task == "optic_disc"
    by_name = {d: {p.name: p for p in cases} for d, cases in domains.items()}
    return gen.TrainedJob(predictor, predictor.labels, disc, by_name[job.target],
                          [c["case"] for c in record["per_case"]], [], {"by_name": by_name})


# --------------------------------------------------------------------------------------- scoring


def scored(job: gen.Job, trained: gen.TrainedJob, predictor: Any, domain: str, names: list[str]) -> list[dict]:
    """gen.score_job with another predictor, on ``names`` of ``domain`` (the target, or a source)."""
    by_name = trained.record["by_name"]
    probe = replace(job, target=domain)
    view = gen.TrainedJob(predictor, trained.labels, trained.disc, by_name[domain], names, [], {})
    return gen.score_job(probe, view)


def restricted(predictor: Any, keep: list[str]):
    """The predictor with its source profile cut to ``keep`` (adapting one source towards the others)."""
    from napari_ramseg.core.infer import Predictor

    profile = predictor.metadata.source_profile
    profile = replace(profile, domains={k: v for k, v in profile.domains.items() if k in keep})
    return Predictor(predictor.model, replace(predictor.metadata, source_profile=profile), predictor.device)


def select(job: gen.Job, trained: gen.TrainedJob, method: str) -> dict[str, Any]:
    """The grid point with the best mean source-validation Dice (source domains only)."""
    from napari_ramseg.core.adapt import AdaptedPredictor
    from napari_ramseg.core.config import ADAPT

    sources = gen.source_domains(job.source)
    by_name = trained.record["by_name"]
    val = {d: gen._split_cases(sorted(by_name[d]), gen.VAL_FRACTION, gen.SPLIT_SEED, d)[1] for d in sources}
    base = trained.predictor
    none = {d: float(np.mean([r["dice"] for r in scored(job, trained, base, d, names)])) for d, names in val.items()}
    rows = []
    for setting in GRIDS[method]:
        config = replace(ADAPT, **setting)
        per_domain = {}
        for d, names in val.items():
            others = [s for s in sources if s != d] or [d]
            adapted = AdaptedPredictor(restricted(base, others), method, config)
            per_domain[d] = float(np.mean([r["dice"] for r in scored(job, trained, adapted, d, names)]))
        rows.append({"setting": setting, "source_val_dice": per_domain,
                     "mean": float(np.mean(list(per_domain.values())))})
    best = rows[0]
    for row in rows[1:]:
        if row["mean"] > best["mean"] + TIE:
            best = row
    return {"chosen": best["setting"], "none_source_val": none, "none_mean": float(np.mean(list(none.values()))),
            "grid": rows, "val_cases": {d: len(n) for d, n in val.items()}}


def run_model(job: gen.Job, record: dict[str, Any], folder: Path, methods: list[str], work: Path) -> dict[str, Any]:
    """none and every method on one model's unseen domain, each result cached under WORK/scores."""
    from napari_ramseg.core.adapt import AdaptedPredictor
    from napari_ramseg.core.config import ADAPT

    trained = None
    out: dict[str, Any] = {"job": asdict(job), "key": job.key, "direction": job.direction,
                           "generalization_dice": record["dice"]}
    for method in ["none", *methods]:
        path = WORK / "scores" / f"{job.key}__{method}.json"
        if path.exists():
            out[method] = json.loads(path.read_text())
            continue
        trained = trained or load_trained(job, record, folder, work)
        start = time.perf_counter()
        if method == "none":
            per_case = gen.score_job(job, trained)
            expected = {c["case"]: c["dice"] for c in record["per_case"]}
            result = {"matches_record": all(abs(r["dice"] - expected[r["case"]]) < 1e-9 for r in per_case)}
        else:
            selection = select(job, trained, method)
            # one AdaptedPredictor for the whole unseen domain: the prompt's memory runs over its scans
            adapted = AdaptedPredictor(trained.predictor, method, replace(ADAPT, **selection["chosen"]))
            start = time.perf_counter()
            per_case = scored(job, trained, adapted, job.target, trained.test_names)
            result = {"selection": selection}
        result.update({"dice": float(np.mean([r["dice"] for r in per_case])), "per_case": per_case,
                       "seconds_per_case": (time.perf_counter() - start) / max(1, len(per_case))})
        gen._atomic_json(path, result)
        out[method] = result
        print(f"{job.key} {method}: dice {result['dice']:.4f}", flush=True)
    return out


# ---------------------------------------------------------------------------------------- timing


def timing(repeats: int = 5) -> dict[str, Any]:
    """Seconds per 512 x 512 photograph, plain and with each method at its AdaptConfig default, with
    the bundled vessel model (median of ``repeats`` after a warm-up)."""
    import torch

    from napari_ramseg.core.adapt import AdaptedPredictor
    from napari_ramseg.core.config import ADAPT
    from napari_ramseg.core.infer import Predictor
    from napari_ramseg.models import resolve_model

    predictor = Predictor.from_path(resolve_model("default"), device="cpu")
    domains, _ = gen._prepared("vessels", str(DATA), str(WORK), {"long_side": 540})
    case = domains["STARE"][0]
    image = np.asarray(torch.nn.functional.interpolate(
        torch.from_numpy(case.image).permute(2, 0, 1)[None].float(), size=(512, 512), mode="bilinear",
        antialias=True)[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy())

    def median_seconds(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    plain = median_seconds(lambda: predictor.predict_image(image))
    out = {"image": "STARE im0001 (FOV crop) resized to 512x512", "model": "bundled vessels",
           "working_shape": list(predictor.input_shape(512, 512)), "plain_s": plain, "methods": {}}
    for method in METHODS:
        for steps in ((1, 2, 3) if method == "prompt" else (None,)):
            config = ADAPT if steps is None else replace(ADAPT, prompt_steps=steps)
            adapted = AdaptedPredictor(predictor, method, config)
            seconds = median_seconds(lambda: adapted.predict_image(image))
            name = method if steps is None else f"prompt ({steps} step{'s' * (steps > 1)})"
            out["methods"][name] = {"seconds": seconds, "x_plain": seconds / plain}
    return out


# ---------------------------------------------------------------------------------------- output


def aggregate(models: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """``{task: {direction: {"none": [dice per seed], method: [...]}}}``, seeds in order."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for m in sorted(models, key=lambda m: (m["job"]["task"], m["direction"], m["job"]["seed"])):
        cell = out.setdefault(m["job"]["task"], {}).setdefault(m["direction"], {})
        for method in ["none", *methods]:
            if method in m:
                cell.setdefault(method, []).append(round(m[method]["dice"], 4))
    return out


def gains(results: dict, method: str) -> dict[str, float]:
    """Seed-mean unseen Dice gain over none per direction (only directions where the method ran on
    every seed that none ran on)."""
    out = {}
    for task, dirs in results.items():
        for direction, cell in dirs.items():
            if cell.get(method) and len(cell[method]) == len(cell["none"]):
                out[f"{task}: {direction}"] = float(np.mean(cell[method]) - np.mean(cell["none"]))
    return out


DEFAULT_RULE = ("the default is the method that improves the seed-mean unseen-domain Dice in at least 80 % of "
                "the directions run (4 of 5) and loses no more than 0.01 in any, the one with the largest mean "
                "gain if several do; if none does, no method has earned it (null) and adaptation stays off "
                "unless asked for by name")


def choose_default(results: dict, methods: list[str]) -> tuple[str | None, dict[str, Any]]:
    verdicts = {}
    for method in methods:
        g = gains(results, method)
        if not g:
            continue
        wins, worst = sum(v > 0 for v in g.values()), min(g.values())
        verdicts[method] = {"gains": g, "improves": f"{wins}/{len(g)}", "worst": worst,
                            "mean_gain": float(np.mean(list(g.values()))),
                            "meets_target": wins >= 0.8 * len(g) and worst >= -0.01}
    earned = [m for m, v in verdicts.items() if v["meets_target"]]
    return (max(earned, key=lambda m: verdicts[m]["mean_gain"]) if earned else None), verdicts


def fmt(values: list[float] | None, base: list[float] | None = None) -> str:
    if not values:
        return "–"
    text = f"{np.mean(values):.3f}" + (f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else "")
    if base and len(base) == len(values):
        text += f" ({np.mean(values) - np.mean(base):+.3f})"
    return text + f" (n={len(values)})"


def write_markdown(path: Path, results: dict, meta: dict) -> None:
    methods = meta["methods"]
    lines = ["# Test-time adaptation on the unseen domain", "",
             f"Generated by `bench/adaptation.py`: `{meta['command']}` on {bench_machine.one_line(meta['machine'])} "
             "(shared with other jobs). Reported apart from the generalization tables, never mixed into them.", "",
             "Dice on the unseen domain, mean ± sd over seeds (gain over `none` in brackets). Hyper-parameters "
             "of every method were chosen per model on its source domains' validation hold-out only "
             "(each source adapted towards the others' profile); the unseen domain was only scored.", ""]
    for task, dirs in results.items():
        lines += [f"## {task}", "", f"Models: {meta['models'][task]}", "",
                  "| direction | none | " + " | ".join(methods) + " |", "|---|" + "---|" * (len(methods) + 1)]
        for direction, cell in dirs.items():
            lines.append(f"| {direction} | {fmt(cell.get('none'))} | "
                         + " | ".join(fmt(cell.get(m), cell.get("none")) for m in methods) + " |")
        lines.append("")
    lines += ["## Default", "", f"Rule: {DEFAULT_RULE}.", "", f"**Default: {meta['default'] or 'none earned it'}**", ""]
    for method, v in meta["verdicts"].items():
        lines.append(f"- {method}: improves {v['improves']} directions, mean gain {v['mean_gain']:+.4f}, "
                     f"worst {v['worst']:+.4f}: {'meets' if v['meets_target'] else 'misses'} the target")
    t = meta.get("timing")
    if t:
        lines += ["", "## Cost per 512 x 512 image", "",
                  f"{t['model']} model, {t['image']}, working scale {t['working_shape']}; median of 5 after a "
                  f"warm-up, one thread. Plain inference: {t['plain_s']:.3f} s. Targets: training-free <= 2x, "
                  "learned prompt <= 10x.", "", "| method | seconds | x plain |", "|---|---|---|"]
        lines += [f"| {m} | {v['seconds']:.3f} | {v['x_plain']:.2f} |" for m, v in t["methods"].items()]
        lines += ["", "Each method at its `AdaptConfig` default (prompt also at 2 and 3 steps), fit check included; "
                  "measured by the last run without `--no-timing` (kept in `bench/work/adaptation/timing.json`)."]
    lines += ["", "## Chosen settings (source validation)", ""]
    for key, chosen in meta["chosen"].items():
        lines.append(f"- {key}: " + "; ".join(f"{m} {json.dumps(c)}" for m, c in chosen.items()))
    lines += ["", "`none` equals the generalization benchmark's number case by case for every vessel model: "
              f"{meta['none_matches']}.", ""]
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, results: dict, methods: list[str]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", flush=True)
        return
    rows = [(t, d, c) for t, dirs in results.items() for d, c in dirs.items()]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(rows), 3.6))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        for j, (_, _, cell) in enumerate(rows):
            if not cell.get(method) or len(cell[method]) != len(cell["none"]):
                continue
            per_seed = np.array(cell[method]) - np.array(cell["none"])
            x = j + (i - (len(methods) - 1) / 2) * width
            ax.bar(x, per_seed.mean(), width, color=f"C{i}", label=method if j == 0 else None)
            ax.plot([x] * len(per_seed), per_seed, "k.", ms=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(-0.01, color="grey", lw=0.6, ls="--")
    ax.set_xticks(range(len(rows)), [d.replace("->", "\n->") for _, d, _ in rows], fontsize=7)
    ax.set_ylabel("unseen Dice gain over none")
    ax.legend(fontsize=7, ncol=len(methods))
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["vessels", "optic_disc"], choices=["vessels", "optic_disc"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--no-train", action="store_true", help="score only the optic-disc models already trained")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    found: dict[str, list] = {}
    models = []
    for task in args.tasks:
        source = vessel_models(args.seeds) if task == "vessels" else disc_models(args.seeds, not args.no_train)
        for job, record, folder in source:
            found.setdefault(task, []).append((job, record, folder))
            models.append(run_model(job, record, folder, args.methods, WORK))
    results = aggregate(models, args.methods)
    default, verdicts = choose_default(results, args.methods)
    timing_path = WORK / "timing.json"
    if not args.no_timing:
        gen._atomic_json(timing_path, timing())
    meta = {"command": "python bench/adaptation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": bench_machine.describe(), "methods": args.methods, "default": default,
            "default_rule": DEFAULT_RULE, "verdicts": verdicts, "grids": GRIDS,
            "models": {t: ("ram_dsir, bench/generalization.py --reference (256 px crops, 400 iterations), seeds "
                           if t == "vessels" else
                           "ram_dsir trained here at generalization.py's quick budget (128 px, 80 iterations), seeds ")
                       + "; ".join(f"{d}: " + ", ".join(str(j.seed) for j, _, _ in found[t] if j.direction == d)
                                   for d in dict.fromkeys(j.direction for j, _, _ in found[t])) for t in results},
            "chosen": {m["key"]: {k: m[k]["selection"]["chosen"] for k in args.methods if k in m} for m in models},
            "none_matches": all(m["none"]["matches_record"] for m in models if m["job"]["task"] == "vessels"),
            "timing": json.loads(timing_path.read_text()) if timing_path.exists() else None,
            "per_case": {m["key"]: {k: [round(c["dice"], 4) for c in m[k]["per_case"]] for k in ["none", *args.methods]
                                    if k in m} for m in models}}
    args.out.mkdir(parents=True, exist_ok=True)
    gen._atomic_json(args.out / "adaptation.json", {**results, "default": default})
    gen._atomic_json(args.out / "adaptation_meta.json", meta)
    write_markdown(args.out / "adaptation.md", results, meta)
    write_plot(args.out / "adaptation.png", results, args.methods)
    print(f"default: {default}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
