#!/usr/bin/env python
"""Leave-one-domain-out generalization benchmark (issue 6).

For each task and each held-out direction ``A->B`` it trains on A and scores on every case of B, with
identical data, budget and seeds for every method. The methods (erm, ram, ram_sc, ram_dsir, erm_long
and the in-domain ceiling), directions and budgets are the job list of ``generalization_jobs.py``.

Model selection uses a validation split of the *source* domain only (20 %, fixed across seeds and
methods; the Trainer keeps the best source-validation state); the target is never looked at before
the final scoring. BatchNorm is in eval mode at test time (``Predictor``). Dice = mean over the
target's cases (and labels) at the benchmark's common scale (``bench/common/tasks.py``); vessels are scored
inside the field of view. No post-processing.

Jobs run in ``--workers`` single-thread processes side by side. Every finished job is cached under
``<work>/<profile>/jobs/`` and the results (``generalization.json``, ``_meta.json``, ``.md``,
``.png`` in ``--out``) are rewritten atomically after each one, so a run can be stopped at any time
and resumed by running the same command again (cached jobs are skipped).

    python -m bench.generalization.benchmark --quick                 # this 2-core CPU, ~1.5 h
    python -m bench.generalization.benchmark --reference --device cuda --workers 7 --threads 2   # GPU, ~5 min for vessels
    python -m bench.generalization.benchmark --full --workers 1      # the paper's schedules, for a GPU
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.generalization import report
# the job list has its own module; bench/adaptation/benchmark.py still reads Job, build_jobs and the splits here
from bench.generalization.jobs import (
    CEILING_FOLDS, METHOD_SWITCHES, METHODS, PROFILES, SPLIT_SEED, VAL_FRACTION, Job, split_cases, build_jobs,
    ceiling_folds, source_domains)
from bench.common import machine as bench_machine
from bench.common import results_io
from bench.common import tasks as bench_tasks

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent

# ------------------------------------------------------------------------------------ preparation


def prepare_and_count(task: str, profile: str, data: Path, work: Path) -> tuple[dict[str, int], dict[str, Any]]:
    """Prepare (or load from the cache) a task's domains: ``({domain: case count}, preparation info)``."""
    cfg = PROFILES[profile][task]
    domains, info = bench_tasks.prepare_task(task, data, work / "prep", long_side=cfg.get("long_side") or 540,
                                             roi_size=cfg.get("roi_size") or 256)
    return {d: len(v) for d, v in domains.items()}, info


# --------------------------------------------------------------------------------------- one job

_PREPARED: dict[tuple, tuple] = {}


def prepared_domains(task: str, data_root: str, work: str, params: dict[str, Any]):
    key = (task, data_root, params.get("long_side"), params.get("roi_size"))
    if key not in _PREPARED:
        _PREPARED[key] = bench_tasks.prepare_task(task, Path(data_root), Path(work) / "prep",
                                                  long_side=params.get("long_side") or 540,
                                                  roi_size=params.get("roi_size") or 256)
    return _PREPARED[key]


def to_sample(p, domain: str, mask_transform=None):
    from napari_ramseg.core.data.dataset import Sample
    from napari_ramseg.core.data.preprocess import to_model_channels

    mask = p.mask if mask_transform is None else mask_transform(p.mask)
    return Sample(to_model_channels(p.image), np.ascontiguousarray(mask, dtype=np.uint8), domain, p.name)


def train_config(job: Job, labels, ram: bool, dsir: bool, consistency: bool):
    from napari_ramseg.core.config import MethodConfig, PreprocessConfig, TrainConfig

    p = job.params
    val_every = max(1, job.iterations // max(1, int(p.get("val_count", 5))))
    return TrainConfig(labels=labels, preprocess=PreprocessConfig(size=p["size"], long_side=p.get("long_side")),
                       method=MethodConfig(ram=ram, dsir=dsir, consistency=consistency),
                       iterations=job.iterations, batch=p["batch"], lr=p["lr"], seed=job.seed,
                       val_fraction=VAL_FRACTION, val_every=val_every, device=p.get("device", "cpu"),
                       num_threads=p.get("threads", 1), photometric=p.get("photometric", 0.0))


@dataclass
class TrainedJob:
    """A job's trained network and what scoring it needs."""

    predictor: Any
    labels: Any
    disc: bool
    target_cases: dict[str, Any]  # name -> Prepared, of the domain the job is scored on
    test_names: list[str]
    source_cases: list[Any]  # the Prepared cases the network was trained on
    record: dict[str, Any]  # train/val counts, selection, timings


def train_job(job: Job, data_root: str, work: str) -> TrainedJob:
    """Train one job's network (source-only selection) and return it ready to score."""
    import torch

    torch.set_num_threads(int(job.params.get("threads", 1)))
    from napari_ramseg.core.labels import LabelScheme
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.core.training.trainer import Trainer

    start, cpu_start = time.perf_counter(), time.process_time()
    domains, _ = prepared_domains(job.task, data_root, work, job.params)
    disc = job.task == "optic_disc"
    train_labels = LabelScheme(("disc",), "nested") if disc else LabelScheme(("vessel",), "nested")
    to_train_mask = (lambda m: (m >= 1).astype(np.uint8)) if disc else None
    by_name = {d: {p.name: p for p in cases} for d, cases in domains.items()}

    if job.method == "ceiling":
        folds = ceiling_folds(list(by_name[job.target]), job.target)
        test_names = folds[job.seed % CEILING_FOLDS]
        pools = {job.target: sorted(set(by_name[job.target]) - set(test_names))}
        # The cup is annotated on Drishti-GS only: its in-domain ceiling learns disc and cup, and
        # reports the cup beside the disc (the headline number stays the disc, as for every method).
        has_cup = disc and any(int(p.mask.max()) >= 2 for p in domains[job.target])
        if has_cup:
            train_labels, to_train_mask = LabelScheme(("disc", "cup"), "nested"), None
    else:
        test_names = sorted(by_name[job.target])
        pools = {d: sorted(by_name[d]) for d in source_domains(job.source)}
    # Each source domain keeps its own fixed validation hold-out, so selection sees every source.
    train, val, train_cases = {}, [], []
    for domain, pool_names in pools.items():
        train_names, val_names = split_cases(pool_names, VAL_FRACTION, SPLIT_SEED, domain)
        train[domain] = [to_sample(by_name[domain][n], domain, to_train_mask) for n in train_names]
        val += [to_sample(by_name[domain][n], domain, to_train_mask) for n in val_names]
        train_cases += [by_name[domain][n] for n in train_names]

    ram, dsir, consistency = METHOD_SWITCHES[job.method]
    config = train_config(job, train_labels, ram, dsir, consistency)
    trainer = Trainer(config, list(pools), train, val, run_dir=None)
    trainer.run()
    train_seconds = time.perf_counter() - start
    selected = "last"
    if trainer.best_state is not None:
        trainer.net.load_state_dict(trainer.best_state)
        selected = f"best source validation (iteration {trainer.best['iteration']}, dice {trainer.best['dice']:.4f})"
    record = {"train_cases": len(train_cases), "val_cases": len(val), "selection": selected,
              "train_seconds": round(train_seconds, 1), "seconds_per_iteration": round(train_seconds / job.iterations, 3),
              "cpu_seconds": round(time.process_time() - cpu_start, 1)}  # wall >> cpu means a shared CPU
    return TrainedJob(Predictor(trainer.net, trainer.metadata(), config.device), train_labels, disc,
                      by_name[job.target], test_names, train_cases, record)


def score_grid(job: Job, data_root: str, work: str) -> dict[str, Any] | None:
    """The target's cases at the job's ``score_long_side`` (None: score at the working scale)."""
    if not job.params.get("score_long_side"):
        return None
    domains, _ = prepared_domains(job.task, data_root, work, {**job.params, "long_side": job.params["score_long_side"]})
    return {p.name: p for p in domains[job.target]}


def score_job(job: Job, trained: TrainedJob, transform=None, grid: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per-case Dice on the job's test cases; ``transform(name, image) -> image`` alters the input
    (model channels, (3, H, W)) before prediction, for diagnostics."""
    import torch

    from napari_ramseg.core.inference.predictor import labels_from_probabilities
    from napari_ramseg.core.evaluation.metrics import case_metrics, dice_score

    per_case = []
    scored_cases = grid or trained.target_cases
    for name in trained.test_names:
        p = trained.target_cases[name]
        image = to_sample(p, job.target).image
        if transform is not None:
            image = transform(name, image)
        probs = trained.predictor.predict_prepared(torch.from_numpy(np.ascontiguousarray(image)))
        p = scored_cases[name]
        if probs.shape[-2:] != p.mask.shape:  # the working scale differs from the scoring grid
            probs = torch.nn.functional.interpolate(torch.as_tensor(probs)[None].float(), size=p.mask.shape,
                                                    mode="bilinear", align_corners=False)[0]
        pred = labels_from_probabilities(probs, trained.labels, trained.predictor.threshold)
        if trained.disc:
            metrics = case_metrics(pred, p.mask, trained.labels)
            rec = {"case": name, "dice": metrics["disc"]["dice"],
                   **{f"{lab}_{k}": v for lab, m in metrics.items() for k, v in m.items()}}
        else:
            fov = p.fov if p.fov is not None else np.ones(p.mask.shape, bool)
            rec = {"case": name, "dice": dice_score((pred >= 1) & fov, (p.mask >= 1) & fov)}
        per_case.append(rec)
    return per_case


def run_job(job: Job, data_root: str, work: str) -> dict[str, Any]:
    """Train and score one job; returns the cache record (also written by the caller)."""
    if job.task == "prostate":
        import torch

        torch.set_num_threads(int(job.params.get("threads", 1)))
        return _run_prostate_smoke(job, data_root)
    trained = train_job(job, data_root, work)
    from napari_ramseg.core.models.checkpoint import save_model

    # kept for the benchmarks that start from a source-trained model (adaptation, fine-tune gain)
    model_dir = save_model(trained.predictor.model, trained.predictor.metadata, Path(work) / "models" / job.key)
    eval_start = time.perf_counter()
    per_case = score_job(job, trained, grid=score_grid(job, data_root, work))
    dice = float(np.mean([r["dice"] for r in per_case]))
    out = {
        "job": asdict(job), "key": job.key, "direction": job.direction, "dice": dice,
        "cases_scored": len(per_case), "model": str(model_dir), **trained.record,
        "eval_seconds": round(time.perf_counter() - eval_start, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "per_case": per_case, "finished": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    if any("cup_dice" in r for r in per_case):
        out["cup_dice"] = float(np.mean([r["cup_dice"] for r in per_case]))
    return out


def _run_prostate_smoke(job: Job, data_root: str) -> dict[str, Any]:
    """2.5D path end to end: train a few iterations on the SAML slices, predict a NIfTI volume slice by
    slice with (j-1, j, j+1) as channels, and score it in 3D with the voxel spacing. Not a result."""
    from napari_ramseg import io as rio
    from napari_ramseg.core.labels import PROSTATE
    from napari_ramseg.core.data.dataset import discover, load_samples
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.core.evaluation.metrics import case_metrics, json_safe

    start = time.perf_counter()
    root = Path(data_root)
    dataset = discover(root / "prostate_slices", "domains", labels=PROSTATE, split=None)
    samples = load_samples(dataset.cases, PROSTATE, dataset.format)
    by_domain: dict[str, list] = {}
    for s in samples:
        by_domain.setdefault(s.domain, []).append(s)
    domains = sorted(by_domain)
    config = train_config(job, PROSTATE, True, True, True)
    from napari_ramseg.core.training.trainer import Trainer

    trainer = Trainer(config, domains, by_domain, (), run_dir=None)
    trainer.run()
    train_seconds = time.perf_counter() - start
    image = rio.read_image(root / "prostate_volume" / "Case00.nii.gz")
    truth = rio.read_mask(root / "prostate_volume" / "Case00_segmentation.nii.gz")
    truth = (truth > 0).astype(np.uint8)
    predictor = Predictor(trainer.net, trainer.metadata(), config.device)
    prediction = predictor.predict_volume(image.array)
    metrics = case_metrics(prediction.labels, truth, PROSTATE, spacing=image.spacing)
    return json_safe({
        "job": asdict(job), "key": job.key, "direction": job.direction, "smoke": True,
        "train_domains": {d: len(v) for d, v in by_domain.items()},
        "volume_shape_zyx": list(image.array.shape), "spacing_zyx_mm": list(image.spacing or ()),
        "predicted_voxels": int((prediction.labels > 0).sum()), "truth_voxels": int(truth.sum()),
        "metrics_3d": metrics["prostate"], "dice": metrics["prostate"]["dice"],
        "train_seconds": round(train_seconds, 1), "eval_seconds": round(time.perf_counter() - start - train_seconds, 1),
        "note": "smoke run: a handful of training slices and one volume; shows the 2.5D path works, scores nothing",
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
    })


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    try:
        os.nice(0)
    except OSError:
        pass


def _worker(args: tuple[Job, str, str, str]) -> tuple[str, dict[str, Any] | None, str | None]:
    job, data_root, work, cache = args
    try:
        record = run_job(job, data_root, work)
    except Exception as exc:  # one failed job must not lose the others
        import traceback

        return job.key, None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    results_io.write_json(Path(cache) / f"{job.key}.json", record)
    return job.key, record, None


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    prof = ap.add_mutually_exclusive_group()
    prof.add_argument("--quick", action="store_const", dest="profile", const="quick", help="CPU budget (default)")
    prof.add_argument("--full", action="store_const", dest="profile", const="full", help="paper schedules, for a GPU")
    prof.add_argument("--reference", action="store_const", dest="profile", const="reference",
                      help="the issue's reference setup (256 px, batch 8, 400 iterations), for a GPU")
    ap.add_argument("--tasks", default="vessels,optic_disc,prostate", help="comma list, in priority order")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2", help="seeds for erm, erm_long, ram_dsir, ceiling; ablations use the first")
    ap.add_argument("--targets", default="", help="comma list of held-out domains to run (default: every "
                    "direction); a run of some directions, same --work, is reported with the others by --report-only")
    ap.add_argument("--workers", type=int, default=2, help="parallel training processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--iterations", type=int, default=None, help="override the base iterations of every task")
    ap.add_argument("--size", type=int, default=None, help="override the crop size of every task")
    ap.add_argument("--long-side", type=int, default=None,
                    help="vessels: override the working scale (field-of-view long side, px) trained and predicted at")
    ap.add_argument("--photometric", type=float, default=None,
                    help="probability of a photometric change per training image beside RAM (core/data/photometric.py)")
    ap.add_argument("--score-long-side", type=int, default=None,
                    help="vessels: score at this field-of-view long side whatever the working scale (predictions "
                         "are resized to it), so that runs at different working scales are compared on one grid")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--work", type=Path, default=BENCH / "work" / "generalization")
    ap.add_argument("--keep-rows-from", type=Path, default=None,
                    help="a results folder whose rows of the tasks not run now are kept in the table (labelled)")
    ap.add_argument("--dry-run", action="store_true", help="list the jobs and exit")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the table, JSON and plot from the finished jobs' cache; train nothing")
    args = ap.parse_args(argv)
    args.profile = args.profile or "quick"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
    task_names = [t for t in args.tasks.split(",") if t]
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS] + [t for t in task_names if t not in PROFILES[args.profile]]
    if unknown:
        raise SystemExit(f"unknown method or task: {unknown}")
    overrides: dict[str, Any] = {"device": args.device, "threads": args.threads}
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    if args.size is not None:
        overrides["size"] = args.size
    if args.long_side is not None:
        overrides["long_side"] = args.long_side
    if args.photometric:
        overrides["photometric"] = args.photometric
    if args.score_long_side is not None:
        overrides["score_long_side"] = args.score_long_side

    t0 = time.time()
    prep_info: dict[str, Any] = {}
    case_counts: dict[str, dict[str, int]] = {}
    for task in task_names:
        if task != "prostate":
            case_counts[task], prep_info[task] = prepare_and_count(task, args.profile, args.data, args.work)
    jobs = build_jobs(task_names, args.profile, seeds, methods, overrides, case_counts)
    targets = {t for t in args.targets.split(",") if t}
    if targets:
        if not targets <= {j.target for j in jobs}:
            raise SystemExit(f"unknown target: {sorted(targets - {j.target for j in jobs})}; "
                             f"directions hold {sorted({j.target for j in jobs})}")
        jobs = [j for j in jobs if j.target in targets]

    cache = args.work / args.profile / "jobs"
    cache.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    for job in jobs:
        f = cache / f"{job.key}.json"
        if f.exists():
            records[job.key] = json.loads(f.read_text())
    todo = [j for j in jobs if j.key not in records]
    print(f"[{_dt.datetime.now():%H:%M:%S}] {len(jobs)} jobs, {len(records)} cached, {len(todo)} to run "
          f"with {args.workers} worker(s)", flush=True)
    if args.dry_run:
        for j in jobs:
            print(("  cached " if j.key in records else "  todo   ") + f"{j.task:10s} {j.direction:24s} {j.method:9s} "
                  f"seed {j.seed} it {j.iterations}")
        return 0

    per_task = {t: {**{k: v for k, v in PROFILES[args.profile][t].items()}, **overrides} for t in task_names}
    meta: dict[str, Any] = {
        "_t0": t0, "status": "running", "profile": args.profile,
        "command": "python " + " ".join(shlex.quote(a) for a in ([str(Path(sys.argv[0]))] + (argv if argv is not None else sys.argv[1:]))),
        "started": _dt.datetime.now().isoformat(timespec="seconds"), "machine": bench_machine.describe(),
        "workers": args.workers, "threads": args.threads, "seeds": seeds, "methods": methods, "jobs_total": len(jobs),
        "budget": {"per_task": per_task, "erm_long": "2x base iterations", "prep": prep_info},
    }
    if args.keep_rows_from is not None:
        meta["_carried_rows"], meta["carried"] = report.carried_rows(args.keep_rows_from, task_names)
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_outputs(args.out, jobs, records, meta, METHODS)
    payload = [] if args.report_only else [(j, str(args.data), str(args.work), str(cache)) for j in todo]
    failures: dict[str, str] = {}

    def finished(key: str, record: dict | None, error: str | None) -> None:
        job = next(j for j in jobs if j.key == key)
        if record is None:
            failures[key] = error or "failed"
            print(f"[{_dt.datetime.now():%H:%M:%S}] FAILED {key}\n{error}", flush=True)
        else:
            records[key] = record
            print(f"[{_dt.datetime.now():%H:%M:%S}] done {job.task} {job.direction} {job.method} seed {job.seed}: "
                  f"dice {record['dice']:.4f} (train {record['train_seconds']}s, eval {record['eval_seconds']}s) "
                  f"[{len(records)}/{len(jobs)}]", flush=True)
        meta["failures"] = failures
        report.write_outputs(args.out, jobs, records, meta, METHODS)

    if args.workers <= 1:
        for item in payload:
            finished(*_worker(item))
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_worker_init) as pool:
            for result in pool.imap_unordered(_worker, payload, chunksize=1):
                finished(*result)
    if len(records) == len(jobs):
        meta["status"] = "complete"
    elif args.report_only:
        meta["status"] = f"partial: {len(records)} of {len(jobs)} jobs finished, the rest not run"
    else:
        meta["status"] = f"incomplete ({len(failures)} failed)"
    meta["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    report.write_outputs(args.out, jobs, records, meta, METHODS)
    print(f"[{_dt.datetime.now():%H:%M:%S}] {meta['status']}; results in {args.out}", flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
