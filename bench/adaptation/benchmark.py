#!/usr/bin/env python
"""Test-time adaptation benchmark (issue 15): does adapting to the scan help on an unseen domain?

For every leave-one-domain-out model, the unseen domain's cases are scored with no adaptation
(``none``) and with each method of ``core/inference/adapt/`` (align, prompt, adabn, tent), per seed.

- Vessels: the ``ram_dsir`` models that ``python -m bench.generalization.benchmark --reference`` keeps under
  ``bench/work/generalization/models/<job key>/``, scored on exactly the cases of their job record
  with the generalization benchmark's own data preparation and ``score_job``, so ``none`` is the
  generalization number (checked, case by case).
- Optic disc: no LODO disc models are kept by that run, so this script trains its own with
  ``generalization.train_job`` at the ``quick`` budget (one process, one thread), kept under
  ``bench/work/adaptation/models/``; ``none`` is that model's own score.

Hyper-parameters are chosen per model on its SOURCE domains only: each source domain's validation
hold-out (the split the model was selected on) is adapted towards the profile of the other source
domains (its own, for a single source), and the grid point with the best mean source-validation
Dice wins, the gentler one on a tie. The default method is chosen from the same source-validation
grids, leave-one-source-out (``adaptation_report.choose_default``); the unseen domain is looked at
only to score, and the issue's target is checked on it afterwards.

Each model's numbers go to ``bench/results/adaptation_runs/<model key>.json`` as soon as each method
is scored (committed; see ``adaptation_report``), and the report is rebuilt from every record there,
so results outlive their models under the git-ignored ``bench/work/``. A model whose record already
holds every method asked for is not loaded (nor, for the optic disc, trained) again.

    OMP_NUM_THREADS=1 nice -n 5 python -m bench.adaptation.benchmark --tasks vessels --seeds 1 2   # score what is kept
    python -m bench.adaptation.benchmark --tasks optic_disc --seeds 0 1 2   # train + score disc models lacking a record
    python -m bench.adaptation.benchmark --report-only                      # rebuild the report from the records
    python -m bench.adaptation.benchmark --timing --report-only             # re-measure the cost (an idle machine)
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

import numpy as np

from bench.adaptation import report
from bench.generalization import benchmark as gen
from bench.common import results_io
from bench.common import machine as bench_machine

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent

GEN_WORK = REPO / "bench" / "work" / "generalization"
WORK = REPO / "bench" / "work" / "adaptation"
DATA = (REPO / ".." / "shared" / "data").resolve()
METHODS = report.METHODS
# Each grid runs from the gentlest setting to the strongest: a tie on the sources keeps the gentler.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "align": [{"window": w, "strength": s} for s in (0.25, 0.5, 0.75, 1.0) for w in (0.025, 0.05, 0.1)],
    "prompt": [{"window": w, "prompt_lr": lr, "prompt_steps": 1} for lr in (0.01, 0.05) for w in (0.025, 0.05)],
    "adabn": [{}],
    "tent": [{"tent_lr": lr, "tent_steps": 1} for lr in (1e-4, 1e-3)],
}
TIE = report.TIE


# ------------------------------------------------------------------------------------------ models


def vessel_models(seeds: list[int], gen_work: Path = GEN_WORK) -> list[tuple[gen.Job, dict[str, Any], Path]]:
    """(job, generalization record, model folder) of every kept ram_dsir vessel model of these seeds,
    from the ``--work`` folder of a ``python -m bench.generalization.benchmark --reference`` run."""
    found = []
    for path in sorted((gen_work / "reference" / "jobs").glob("vessels__*__ram_dsir__s*.json")):
        record = json.loads(path.read_text())
        job = gen.Job(**record["job"])
        folder = gen_work / "models" / job.key
        if job.seed in seeds and (folder / "model.safetensors").exists() and (folder / "model.json").exists():
            found.append((job, record, folder))
    return found


def disc_models(seeds: list[int], train: bool, methods: list[str]):
    """The optic-disc LODO models of this script (quick budget), trained here when ``train`` and missing;
    one at a time (a generator), so each is scored before the next is trained. A model whose committed
    record already holds every method is skipped: its numbers are kept, there is nothing to recompute."""
    from napari_ramseg.core.models.checkpoint import save_model

    jobs = gen.build_jobs(["optic_disc"], "quick", seeds, ["ram_dsir"], {"device": "cpu", "threads": 1})
    for job in jobs:
        if report.complete(report.load_record(job.key), methods):
            continue
        folder, record_path = WORK / "models" / job.key, WORK / "jobs" / f"{job.key}.json"
        if not record_path.exists():
            if not train:
                continue
            print(f"training {job.key} …", flush=True)
            trained = gen.train_job(job, str(DATA), str(WORK))
            save_model(trained.predictor.model, trained.predictor.metadata, folder)
            per_case = gen.score_job(job, trained)
            results_io.write_json(record_path, {"job": asdict(job), "key": job.key, "direction": job.direction,
                                           "dice": float(np.mean([r["dice"] for r in per_case])),
                                           "per_case": per_case, **trained.record})
        yield job, json.loads(record_path.read_text()), folder


def load_trained(job: gen.Job, record: dict[str, Any], folder: Path, work: Path) -> gen.TrainedJob:
    """The kept model ready for ``gen.score_job`` on exactly the cases its record scored."""
    from napari_ramseg.core.inference.predictor import Predictor

    domains, _ = gen.prepared_domains(job.task, str(DATA), str(work), job.params)
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
    from napari_ramseg.core.inference.predictor import Predictor

    profile = predictor.metadata.source_profile
    profile = replace(profile, domains={k: v for k, v in profile.domains.items() if k in keep})
    return Predictor(predictor.model, replace(predictor.metadata, source_profile=profile), predictor.device)


def select(job: gen.Job, trained: gen.TrainedJob, method: str, none_cache: dict[str, float]) -> dict[str, Any]:
    """The grid point with the best mean source-validation Dice (source domains only); the whole grid
    is kept, per source domain, for the leave-one-source-out default rule. ``none_cache`` holds the
    unadapted source-validation Dice across methods of one model."""
    from napari_ramseg.core.inference.adapt import AdaptedPredictor
    from napari_ramseg.core.config import ADAPT

    sources = gen.source_domains(job.source)
    by_name = trained.record["by_name"]
    val = {d: gen.split_cases(sorted(by_name[d]), gen.VAL_FRACTION, gen.SPLIT_SEED, d)[1] for d in sources}
    base = trained.predictor
    for d, names in val.items():
        if d not in none_cache:
            none_cache[d] = float(np.mean([r["dice"] for r in scored(job, trained, base, d, names)]))
    none = {d: none_cache[d] for d in sources}
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


def new_record(job: gen.Job, gen_record: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    return {"key": job.key, "task": job.task, "direction": job.direction, "seed": job.seed, "job": asdict(job),
            "generalization_dice": gen_record["dice"], "cases": [c["case"] for c in gen_record["per_case"]],
            "provenance": provenance, "methods": {}}


def run_model(job: gen.Job, gen_record: dict[str, Any], folder: Path, methods: list[str], work: Path,
              provenance: dict[str, Any]) -> dict[str, Any]:
    """none and every method on one model's unseen domain; the model's record (bench/results/
    adaptation_runs/) is written after each method, and a method it already holds is not rerun."""
    from napari_ramseg.core.inference.adapt import AdaptedPredictor
    from napari_ramseg.core.config import ADAPT

    path = report.RUNS / f"{job.key}.json"
    out = report.load_record(job.key) or new_record(job, gen_record, provenance)
    trained, none_cache = None, {}
    for method in ["none", *methods]:
        if method in out["methods"]:
            continue
        trained = trained or load_trained(job, gen_record, folder, work)
        start = time.perf_counter()
        if method == "none":
            per_case = gen.score_job(job, trained)
            expected = {c["case"]: c["dice"] for c in gen_record["per_case"]}
            result = {"matches_record": all(abs(r["dice"] - expected[r["case"]]) < 1e-9 for r in per_case)}
        else:
            selection = select(job, trained, method, none_cache)
            # one AdaptedPredictor for the whole unseen domain: the prompt's memory runs over its scans
            adapted = AdaptedPredictor(trained.predictor, method, replace(ADAPT, **selection["chosen"]))
            start = time.perf_counter()
            per_case = scored(job, trained, adapted, job.target, trained.test_names)
            result = {"selection": selection}
        result = {"dice": float(np.mean([r["dice"] for r in per_case])),
                  "per_case_dice": [round(r["dice"], 4) for r in per_case], **result,
                  "seconds_per_case": round((time.perf_counter() - start) / max(1, len(per_case)), 3),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if any("cup_dice" in r for r in per_case):
            result["cup_dice"] = float(np.mean([r["cup_dice"] for r in per_case]))
        out["methods"][method] = result
        report.write_json(path, out)
        print(f"{job.key} {method}: dice {result['dice']:.4f}", flush=True)
    return out


# ---------------------------------------------------------------------------------------- timing


def timing(repeats: int = 5) -> dict[str, Any]:
    """Seconds per 512 x 512 photograph, plain and with each method at its AdaptConfig default, with
    the bundled vessel model (median of ``repeats`` after a warm-up)."""
    import torch

    from napari_ramseg.core.inference.adapt import AdaptedPredictor
    from napari_ramseg.core.config import ADAPT
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.models import resolve_model

    predictor = Predictor.from_path(resolve_model("default"), device="cpu")
    domains, _ = gen.prepared_domains("vessels", str(DATA), str(WORK), {"long_side": 540})
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


def describe_models(records: list[dict[str, Any]], task: str) -> str:
    what = ("ram_dsir, bench/generalization/benchmark.py --reference (256 px crops, 400 iterations)" if task == "vessels" else
            "ram_dsir trained here at generalization.py's quick budget (128 px, 80 iterations)")
    by_dir: dict[str, list[str]] = {}
    for r in sorted((r for r in records if r["task"] == task), key=lambda r: (r["direction"], r["seed"])):
        by_dir.setdefault(r["direction"], []).append(f"{r['seed']} ({r['provenance']['kind']})")
    return what + "; seeds " + "; ".join(f"{d}: {', '.join(s)}" for d, s in by_dir.items())


def provenance_lines(records: list[dict[str, Any]]) -> list[str]:
    groups: dict[tuple, list[str]] = {}
    for r in records:
        p = r["provenance"]
        groups.setdefault((p["kind"], p.get("command", "?"), bench_machine.one_line(p["machine"]), p.get("from", "")),
                          []).append(f"{r['task']} {r['direction']} s{r['seed']}")
    lines = []
    for (kind, command, machine, source), models in groups.items():
        text = f"{kind}: {len(models)} model(s) ({'; '.join(models)}), `{command}` on {machine}"
        lines.append(text + (f"; {source}" if source else "") + ("" if kind == "measured" else
                     "; no source-validation grid kept, so these models do not enter the default rule"))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["vessels", "optic_disc"], choices=["vessels", "optic_disc"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--no-train", action="store_true", help="score only the optic-disc models already trained")
    ap.add_argument("--report-only", action="store_true", help="score nothing: rebuild the report from the records")
    ap.add_argument("--timing", action="store_true", help="re-measure the cost per image (wants an idle machine)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--gen-work", type=Path, default=GEN_WORK,
                    help="the --work folder of the generalization run whose vessel models to score")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    command = "python -m bench.adaptation.benchmark " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = bench_machine.describe()
    provenance = {"kind": "measured", "command": command, "machine": machine}
    for task in ([] if args.report_only else args.tasks):
        source = (vessel_models(args.seeds, args.gen_work) if task == "vessels"
                  else disc_models(args.seeds, not args.no_train, args.methods))
        for job, gen_record, folder in source:
            if not report.complete(report.load_record(job.key), args.methods):
                run_model(job, gen_record, folder, args.methods, WORK, provenance)
    if args.timing:
        report.write_json(report.TIMING, {**timing(), "machine": machine, "provenance": f"Measured by `{command}`."})
    records = report.load_records()
    results = report.aggregate(records, args.methods)
    timing_record = json.loads(report.TIMING.read_text()) if report.TIMING.exists() else None
    default, verdicts = report.choose_default(records, args.methods, timing_record)
    basis = None if default is None else (
        "shows a benefit on the held-out sources" if verdicts[default]["benefit"]
        else "no method shows a benefit on the held-out sources; the cheapest safe one")
    meta = {"command": command, "machine": machine, "methods": args.methods, "default": default, "default_basis": basis,
            "default_rule": report.DEFAULT_RULE, "verdicts": verdicts, "target_rule": report.TARGET,
            "target": report.target_check(results, args.methods), "grids": GRIDS,
            "models": {t: describe_models(records, t) for t in results}, "provenance": provenance_lines(records),
            "chosen": {r["key"]: {m: r["methods"][m]["selection"]["chosen"] for m in args.methods if m in r["methods"]}
                       for r in records},
            "none_matches": all(r["methods"]["none"].get("matches_record", False) for r in records
                                if r["task"] == "vessels"),
            "timing": timing_record,
            "records": "bench/results/adaptation_runs/<model key>.json (per-case Dice, selection grids)"}
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(args.out / "adaptation.json", {**results, "default": default})
    report.write_json(args.out / "adaptation_meta.json", meta)
    report.write_markdown(args.out / "adaptation.md", results, meta, bench_machine.one_line)
    report.write_plot(args.out / "adaptation.png", results, args.methods)
    print(f"default (source domains only): {default}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
