#!/usr/bin/env python
"""Leave-one-domain-out generalization benchmark (issue 6).

For each task and each held-out direction ``A->B`` it trains on A and scores on every case of B, with
identical data, budget and seeds for every method:

=========  ==========================================================================================
erm        plain source-only baseline: no RAM, no DSIR, no consistency
ram        RAM alone
ram_sc     RAM + semantic consistency
ram_dsir   the full method (RAM + consistency + domain-specific restoration)
erm_long   erm with twice the iterations: as many images through the network as ram_dsir
ceiling    erm trained on B's own cases, tested on B's held-out cases: seed s trains on folds != s of
           a fixed 3-fold split of B and tests on fold s, so over three seeds every case of B is
           tested once
=========  ==========================================================================================

Model selection uses a validation split of the *source* domain only (20 %, fixed across seeds and
methods; the Trainer keeps the best source-validation state); the target is never looked at before
the final scoring. BatchNorm is in eval mode at test time (``Predictor``). Dice = mean over the
target's cases (and labels) at the benchmark's common scale (``bench/tasks.py``); vessels are scored
inside the field of view. No post-processing.

Jobs run in ``--workers`` single-thread processes side by side. Every finished job is cached under
``<work>/<profile>/jobs/`` and the results (``generalization.json``, ``_meta.json``, ``.md``,
``.png`` in ``--out``) are rewritten atomically after each one, so a run can be stopped at any time
and resumed by running the same command again (cached jobs are skipped).

    python bench/generalization.py --quick                 # this 2-core CPU, ~1.5 h
    python bench/generalization.py --reference --device cuda --workers 7 --threads 2   # GPU, ~5 min for vessels
    python bench/generalization.py --full --workers 1      # the paper's schedules, for a GPU
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import multiprocessing as mp
import os
import shlex
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import machine as bench_machine  # noqa: E402
import tasks as bench_tasks  # noqa: E402

METHODS = ("erm", "ram", "ram_sc", "ram_dsir", "erm_long", "ceiling")
MULTI_SEED_METHODS = ("erm", "erm_long", "ram_dsir", "ceiling")
METHOD_ORDER = ("erm", "ram_dsir", "erm_long", "ceiling", "ram", "ram_sc")  # scheduling priority
METHOD_SWITCHES = {  # (ram, dsir, consistency)
    "erm": (False, False, False), "erm_long": (False, False, False), "ceiling": (False, False, False),
    "ram": (True, False, False), "ram_sc": (True, False, True), "ram_dsir": (True, True, True),
}
DIRECTIONS = {
    # Leave one domain out over three cameras: two source domains each, as in the paper.
    "vessels": [("HRF+STARE", "CHASE_DB1"), ("HRF+CHASE_DB1", "STARE"), ("STARE+CHASE_DB1", "HRF")],
    "optic_disc": [("Drishti-GS", "DRIONS-DB"), ("DRIONS-DB", "Drishti-GS")],
    "synthetic": [("SynA+SynB", "SynC")],  # two sources, as the vessel rows
}
CEILING_FOLDS = 3
VAL_FRACTION = 0.2
SPLIT_SEED = 0  # the source train/val split is the same for every seed and method

# Budgets. ``iterations`` is the base budget N (erm_long gets 2N); ``val_count`` validations per run.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # Sized for ~75 min on 2 idle cores of this slow AMD EPYC (AVX2, no bf16) with two single-thread
    # workers (ERM step ~0.7 s, RAM-DSIR step ~1.9 s at batch 8, 128 px); longer when the CPU is shared.
    "quick": {
        "vessels": {"size": 128, "long_side": 540, "batch": 8, "iterations": 160, "lr": 2e-3, "val_count": 4},
        "optic_disc": {"size": 128, "roi_size": 256, "batch": 8, "iterations": 80, "lr": 2e-3, "val_count": 4},
        "prostate": {"size": 128, "batch": 8, "iterations": 20, "lr": 1e-3},
        "synthetic": {"size": 32, "batch": 4, "iterations": 2, "lr": 2e-3, "val_count": 1},
    },
    # The setup of the orientation numbers (an independent plain-RAM run: 256 px crops, batch 8,
    # 400 iterations), for a GPU: ~5 min for the vessel table on one H200 with 7 workers.
    "reference": {
        "vessels": {"size": 256, "long_side": 540, "batch": 8, "iterations": 400, "lr": 2e-3, "val_count": 8},
        "optic_disc": {"size": 256, "roi_size": 256, "batch": 8, "iterations": 400, "lr": 2e-3, "val_count": 8},
        "prostate": {"size": 256, "batch": 8, "iterations": 100, "lr": 1e-3},
        "synthetic": {"size": 32, "batch": 4, "iterations": 2, "lr": 2e-3, "val_count": 1},
    },
    # The paper's fundus schedule: 400 epochs of the source training set, batch 16, 256 px.
    "full": {
        "vessels": {"size": 256, "long_side": 540, "batch": 16, "epochs": 400, "lr": 2e-3, "val_count": 20},
        "optic_disc": {"size": 256, "roi_size": 256, "batch": 16, "epochs": 400, "lr": 2e-3, "val_count": 20},
        "prostate": {"size": 256, "batch": 8, "iterations": 200, "lr": 1e-3},
        "synthetic": {"size": 32, "batch": 4, "iterations": 4, "lr": 2e-3, "val_count": 1},
    },
}


# ------------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    task: str
    source: str
    target: str
    method: str
    seed: int
    iterations: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return f"{self.source}->{self.target}"

    @property
    def key(self) -> str:
        digest = hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.task}__{self.source}-{self.target}__{self.method}__s{self.seed}__{digest}"


def _split_cases(names: list[str], fraction: float, seed: int, domain: str) -> tuple[list[str], list[str]]:
    """Deterministic hold-out, the same rule as ``core.data.split_train_val``: (train, held_out)."""
    from napari_ramseg.core.data import Case, split_train_val

    cases = [Case(Path(n), None, domain, n) for n in names]
    train, val = split_train_val(cases, fraction, seed)
    return [c.name for c in train], [c.name for c in val]


def ceiling_folds(names: list[str], domain: str, folds: int = CEILING_FOLDS) -> list[list[str]]:
    """A fixed split of a domain's cases into ``folds`` parts (independent of seeds and methods)."""
    names = sorted(names)
    order = np.random.default_rng([1234, zlib.crc32(domain.encode())]).permutation(len(names))
    return [sorted(names[i] for i in order[f::folds]) for f in range(folds)]


def source_domains(source: str) -> list[str]:
    """The source domains of a direction's source side: ``"HRF+STARE"`` -> ``["HRF", "STARE"]``."""
    return source.split("+")


def _train_count(n: int) -> int:
    """Cases left for training out of ``n`` after the validation hold-out (``split_train_val``'s rule)."""
    return n - min(n - 1, max(1, int(np.floor(n * VAL_FRACTION + 0.5))))


def source_iterations(task: str, cfg: dict[str, Any], n_source_train: int) -> int:
    if "epochs" in cfg:
        return max(1, math.ceil(cfg["epochs"] * n_source_train / cfg["batch"]))
    return int(cfg["iterations"])


def build_jobs(task_names: list[str], profile: str, seeds: list[int], methods: list[str] | None = None,
               overrides: dict[str, Any] | None = None, case_counts: dict[str, dict[str, int]] | None = None) -> list[Job]:
    """All jobs in scheduling order: tasks in the given order; within a task seed by seed, methods by
    priority, directions interleaved, then the ablations (first seed only)."""
    methods = list(methods or METHODS)
    jobs: list[Job] = []
    for task in task_names:
        if task == "prostate":
            cfg = {**PROFILES[profile]["prostate"], **(overrides or {})}
            jobs.append(Job("prostate", "SAML-slices", "PROMISE12-Case00", "ram_dsir", seeds[0], int(cfg["iterations"]),
                            {k: v for k, v in cfg.items() if k != "iterations"}))
            continue
        cfg = {**PROFILES[profile][task], **(overrides or {})}
        if overrides and "iterations" in overrides:  # a fixed override beats the epoch schedule
            cfg.pop("epochs", None)
        params = {k: v for k, v in cfg.items() if k not in ("iterations", "epochs")}
        # Every seed of the headline methods first, the single-seed ablations last: a run cut short
        # by the clock still has complete seeds of the table's main columns.
        passes = [(seed, m) for seed in seeds for m in METHOD_ORDER if m in MULTI_SEED_METHODS]
        passes += [(seeds[0], m) for m in METHOD_ORDER if m not in MULTI_SEED_METHODS]
        for seed, method in passes:
            if method not in methods:
                continue
            for source, target in DIRECTIONS[task]:
                n_train = None
                if case_counts is not None:
                    n_train = sum(_train_count(case_counts[task][d]) for d in source_domains(source))
                base = source_iterations(task, cfg, n_train or 1)
                iterations = 2 * base if method == "erm_long" else base
                jobs.append(Job(task, source, target, method, seed, iterations, params))
    return jobs


def prepare_and_count(task: str, profile: str, data: Path, work: Path) -> tuple[dict[str, int], dict[str, Any]]:
    """Prepare (or load from the cache) a task's domains: ``({domain: case count}, preparation info)``."""
    cfg = PROFILES[profile][task]
    domains, info = bench_tasks.prepare_task(task, data, work / "prep", long_side=cfg.get("long_side") or 540,
                                             roi_size=cfg.get("roi_size") or 256)
    return {d: len(v) for d, v in domains.items()}, info


# --------------------------------------------------------------------------------------- one job

_PREPARED: dict[tuple, tuple] = {}


def _prepared(task: str, data_root: str, work: str, params: dict[str, Any]):
    key = (task, data_root, params.get("long_side"), params.get("roi_size"))
    if key not in _PREPARED:
        _PREPARED[key] = bench_tasks.prepare_task(task, Path(data_root), Path(work) / "prep",
                                                  long_side=params.get("long_side") or 540,
                                                  roi_size=params.get("roi_size") or 256)
    return _PREPARED[key]


def _to_sample(p, domain: str, mask_transform=None):
    from napari_ramseg.core.data import Sample
    from napari_ramseg.core.preprocess import to_model_channels

    mask = p.mask if mask_transform is None else mask_transform(p.mask)
    return Sample(to_model_channels(p.image), np.ascontiguousarray(mask, dtype=np.uint8), domain, p.name)


def _train_config(job: Job, labels, ram: bool, dsir: bool, consistency: bool):
    from napari_ramseg.core.config import MethodConfig, PreprocessConfig, TrainConfig

    p = job.params
    val_every = max(1, job.iterations // max(1, int(p.get("val_count", 5))))
    return TrainConfig(labels=labels, preprocess=PreprocessConfig(size=p["size"], long_side=p.get("long_side")),
                       method=MethodConfig(ram=ram, dsir=dsir, consistency=consistency),
                       iterations=job.iterations, batch=p["batch"], lr=p["lr"], seed=job.seed,
                       val_fraction=VAL_FRACTION, val_every=val_every, device=p.get("device", "cpu"),
                       num_threads=p.get("threads", 1))


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
    from napari_ramseg.core.config import LabelScheme
    from napari_ramseg.core.infer import Predictor
    from napari_ramseg.core.train import Trainer

    start, cpu_start = time.perf_counter(), time.process_time()
    domains, _ = _prepared(job.task, data_root, work, job.params)
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
        train_names, val_names = _split_cases(pool_names, VAL_FRACTION, SPLIT_SEED, domain)
        train[domain] = [_to_sample(by_name[domain][n], domain, to_train_mask) for n in train_names]
        val += [_to_sample(by_name[domain][n], domain, to_train_mask) for n in val_names]
        train_cases += [by_name[domain][n] for n in train_names]

    ram, dsir, consistency = METHOD_SWITCHES[job.method]
    config = _train_config(job, train_labels, ram, dsir, consistency)
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


def score_job(job: Job, trained: TrainedJob, transform=None) -> list[dict[str, Any]]:
    """Per-case Dice on the job's test cases; ``transform(name, image) -> image`` alters the input
    (model channels, (3, H, W)) before prediction, for diagnostics."""
    import torch

    from napari_ramseg.core.infer import labels_from_probabilities
    from napari_ramseg.core.metrics import case_metrics, dice_score

    per_case = []
    for name in trained.test_names:
        p = trained.target_cases[name]
        image = _to_sample(p, job.target).image
        if transform is not None:
            image = transform(name, image)
        probs = trained.predictor.predict_prepared(torch.from_numpy(np.ascontiguousarray(image)))
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
    from napari_ramseg.core.checkpoint import save_model

    # kept for the benchmarks that start from a source-trained model (adaptation, fine-tune gain)
    model_dir = save_model(trained.predictor.model, trained.predictor.metadata, Path(work) / "models" / job.key)
    eval_start = time.perf_counter()
    per_case = score_job(job, trained)
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
    from napari_ramseg.core.config import PROSTATE
    from napari_ramseg.core.data import discover, load_samples
    from napari_ramseg.core.infer import Predictor
    from napari_ramseg.core.metrics import case_metrics, json_safe

    start = time.perf_counter()
    root = Path(data_root)
    dataset = discover(root / "prostate_slices", "domains", labels=PROSTATE, split=None)
    samples = load_samples(dataset.cases, PROSTATE, dataset.format)
    by_domain: dict[str, list] = {}
    for s in samples:
        by_domain.setdefault(s.domain, []).append(s)
    domains = sorted(by_domain)
    config = _train_config(job, PROSTATE, True, True, True)
    from napari_ramseg.core.train import Trainer

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
    _atomic_json(Path(cache) / f"{job.key}.json", record)
    return job.key, record, None


# ------------------------------------------------------------------------------------------ output


def _atomic_write(path: Path, write) -> None:
    from napari_ramseg.io import atomic_write

    atomic_write(path, write)


def _atomic_json(path: Path, data: Any) -> None:
    from napari_ramseg.core.metrics import json_safe

    _atomic_write(path, lambda t: t.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"))


def aggregate(jobs: list[Job], records: dict[str, dict]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """``{task: {"A->B": {method: [dice per seed, in seed order]}}}`` over finished jobs."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for job in sorted(jobs, key=lambda j: (j.seed,)):
        rec = records.get(job.key)
        if job.task == "prostate" or rec is None:
            continue
        cell = out.setdefault(job.task, {}).setdefault(job.direction, {})
        cell.setdefault(job.method, []).append(round(float(rec["dice"]), 4))
    # stable method order in every direction
    return {t: {d: {m: cell[m] for m in METHODS if m in cell} for d, cell in dirs.items()} for t, dirs in out.items()}


def _stats(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")


def _fmt(values: list[float] | None) -> str:
    if not values:
        return "–"
    mean, sd = _stats(values)
    return f"{mean:.3f} ± {sd:.3f} (n={len(values)})" if len(values) > 1 else f"{mean:.3f} (n=1)"


def gap_closure(cell: dict[str, list[float]], best_erm: bool = False) -> float | None:
    """(ram_dsir - erm) / (ceiling - erm) over seed means; ``best_erm``: the better of erm and
    erm_long (equal compute) as the baseline, the stricter reading."""
    if not all(cell.get(m) for m in ("erm", "ram_dsir", "ceiling")):
        return None
    erm, dsir, ceil = (_stats(cell[m])[0] for m in ("erm", "ram_dsir", "ceiling"))
    if best_erm and cell.get("erm_long"):
        erm = max(erm, _stats(cell["erm_long"])[0])
    return None if abs(ceil - erm) < 1e-9 else (dsir - erm) / (ceil - erm)


def write_markdown(path: Path, results: dict, meta: dict) -> None:
    lines = ["# Generalization benchmark (leave one domain out)", ""]
    lines += [f"Generated by `bench/generalization.py`; status: **{meta['status']}** "
              f"({meta['jobs_done']}/{meta['jobs_total']} jobs, {meta['elapsed_minutes']:.0f} min so far).", ""]
    lines += ["Dice on the unseen domain (mean over all its cases; mean ± sd over seeds). `ceiling` is in-domain: "
              "trained on the target's own cases, each seed testing a different third of them. "
              "Gap closed = (ram_dsir − erm) / (ceiling − erm).", ""]
    for task, dirs in results.items():
        lines += [f"## {task}", ""]
        carried = meta.get("carried", {}).get(task)
        if carried:
            lines += [f"Carried over from `{carried['from']}` (profile `{carried['profile']}`, seeds {carried['seeds']}): "
                      f"`{carried['command']}` on {bench_machine.one_line(carried['machine'] or {})}.", ""]
        lines += ["| direction | " + " | ".join(METHODS) + " | gap closed | gap closed vs better ERM | ram_dsir − erm_long |",
                  "|---|" + "---|" * (len(METHODS) + 3)]
        for direction, cell in dirs.items():
            g, g_best = gap_closure(cell), gap_closure(cell, best_erm=True)
            d_long = (f"{_stats(cell['ram_dsir'])[0] - _stats(cell['erm_long'])[0]:+.3f}"
                      if cell.get("ram_dsir") and cell.get("erm_long") else "–")
            lines.append(f"| {direction} | " + " | ".join(_fmt(cell.get(m)) for m in METHODS)
                         + f" | {'–' if g is None else f'{g:.2f}'} | {'–' if g_best is None else f'{g_best:.2f}'} | {d_long} |")
        cup = meta.get("cup", {}).get(task)
        if cup:
            lines += ["", "Cup (annotated on Drishti-GS only; in-domain ceiling trained on disc + cup): "
                      + "; ".join(f"{k}: {_fmt(v)}" for k, v in cup.items())]
        lines.append("")
    smoke = meta.get("smoke", {}).get("prostate")
    if smoke:
        m = smoke["metrics_3d"]
        lines += ["## prostate (smoke run, not a result)", "",
                  f"{smoke['job']['iterations']} iterations of RAM-DSIR on {sum(smoke['train_domains'].values())} SAML slices "
                  f"({len(smoke['train_domains'])} sites), then `Predictor.predict_volume` (2.5D) on PROMISE12 Case00 "
                  f"{tuple(smoke['volume_shape_zyx'])}, spacing {tuple(round(s, 3) for s in smoke['spacing_zyx_mm'])} mm: "
                  f"3D Dice {m['dice']:.3f}, HD95 {m['hd95'] if m['hd95'] is None else round(m['hd95'], 2)} mm. "
                  "It only shows that the path runs end to end.", ""]
    b = meta["budget"]
    lines += ["## Budget and protocol", "", f"- Profile `{meta['profile']}`; command: `{meta['command']}`",
              f"- Machine: {bench_machine.one_line(meta['machine'])} (shared), "
              f"{meta['workers']} worker processes side by side, "
              f"{meta.get('threads', 1)} torch thread(s) each.",
              "- Per task: " + "; ".join(f"{t}: {json.dumps(c)}" for t, c in b["per_task"].items()),
              "- erm_long: twice the base iterations (the images ram_dsir puts through the network). "
              f"Seeds {meta['seeds']} for erm, erm_long, ram_dsir and ceiling; the first seed only for ram and ram_sc.",
              "- Selection: best Dice on a 20 % validation split of the source domain (fixed across seeds and methods), "
              "validated `val_count` times per run; never the target. BatchNorm in eval mode; threshold 0.5; no post-processing.",
              "- vessels: every domain cropped to the field-of-view bounding box and resized so its longer side is "
              f"{b['per_task'].get('vessels', {}).get('long_side', 540)} px; scored inside the FOV at that scale. "
              "optic_disc: disc-centred ROI from the ground-truth disc (side = median Drishti-GS crop/disc-diameter ratio x "
              "disc diameter), resized to 256; the disc label is trained and scored. See bench/tasks.py.",
              f"- Wall time so far: {meta['elapsed_minutes']:.1f} min; sum of job times: "
              f"{meta['job_seconds_total'] / 60:.1f} min.", ""]
    if meta["profile"] == "quick":
        lines += ["The quick budget is far below the paper's (400 epochs at 256 px): it is sized to finish on a slow shared "
                  "2-core CPU, so absolute numbers are low and seed noise is large. Use `--full` on a GPU for the real schedule.", ""]
    _atomic_write(path, lambda t: t.write_text("\n".join(lines)))


def write_plot(path: Path, results: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # optional: the table and JSON carry the numbers
        return
    panels = [(t, d, c) for t, dirs in results.items() for d, c in dirs.items()]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    colors = {"erm": "#888888", "erm_long": "#555555", "ram": "#9ecae1", "ram_sc": "#4292c6",
              "ram_dsir": "#d94801", "ceiling": "#31a354"}
    for ax, (task, direction, cell) in zip(axes[0], panels):
        for i, m in enumerate(METHODS):
            vals = cell.get(m)
            if not vals:
                continue
            mean = float(np.mean(vals))
            ax.bar(i, mean, color=colors[m], alpha=0.85)
            ax.scatter([i] * len(vals), vals, color="black", s=8, zorder=3)
        ax.set_xticks(range(len(METHODS)), METHODS, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{task}: {direction}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice on unseen domain", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _atomic_write(path, lambda t: fig.savefig(t, dpi=110, format="png"))
    plt.close(fig)


def machine_info() -> dict[str, Any]:
    return bench_machine.describe()


def carried_rows(folder: Path, skip: list[str]) -> tuple[dict, dict]:
    """Rows of the tasks not run now, from an earlier run's results folder, with where they came
    from: ``({task: rows}, {task: provenance})``. Lets one table hold, say, this run's vessel rows
    and the optic-disc rows of an earlier run, each labelled with its own command and machine."""
    results = json.loads((folder / "generalization.json").read_text())
    meta = json.loads((folder / "generalization_meta.json").read_text())
    rows = {t: r for t, r in results.items() if t not in skip}
    provenance = {t: {"from": str(folder), "command": meta.get("command"), "profile": meta.get("profile"),
                      "machine": meta.get("machine"), "budget": meta.get("budget", {}).get("per_task", {}).get(t),
                      "seeds": meta.get("seeds"), "gap_closure": meta.get("gap_closure", {}).get(t)} for t in rows}
    return rows, provenance


def write_outputs(out: Path, jobs: list[Job], records: dict[str, dict], meta: dict) -> None:
    results = {**aggregate(jobs, records), **meta.get("_carried_rows", {})}
    done = [records[j.key] for j in jobs if j.key in records]
    meta["jobs_done"] = len(done)
    meta["job_seconds_total"] = round(sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in done), 1)
    meta["elapsed_minutes"] = round((time.time() - meta["_t0"]) / 60, 2)
    meta["timings"] = {r["key"]: {"train_s": r.get("train_seconds"), "eval_s": r.get("eval_seconds"),
                                  "s_per_it": r.get("seconds_per_iteration"), "iterations": r["job"]["iterations"],
                                  "cpu_s": r.get("cpu_seconds"), "load_1min": r.get("load_average_1min"),
                                  "selection": r.get("selection")} for r in done}
    meta["selections"] = {r["key"]: r.get("selection") for r in done}
    cup: dict[str, dict[str, list[float]]] = {}
    for j in jobs:
        r = records.get(j.key)
        if r is not None and "cup_dice" in r:
            cup.setdefault(j.task, {}).setdefault(f"{j.target} {j.method}", []).append(round(r["cup_dice"], 4))
    meta["cup"] = cup
    meta["per_case_dice"] = {r["key"]: [round(c["dice"], 4) for c in r.get("per_case", [])] for r in done}
    for j in jobs:
        if j.task == "prostate" and j.key in records:
            meta.setdefault("smoke", {})["prostate"] = records[j.key]
    meta["gap_closure"] = {t: {d: gap_closure(c) for d, c in dirs.items()} for t, dirs in results.items()}
    meta["best_erm_gap_closure"] = {t: {d: gap_closure(c, best_erm=True) for d, c in dirs.items()}
                                    for t, dirs in results.items()}
    _atomic_json(out / "generalization.json", results)
    _atomic_json(out / "generalization_meta.json", {k: v for k, v in meta.items() if not k.startswith("_")})
    write_markdown(out / "generalization.md", results, meta)
    write_plot(out / "generalization.png", results)


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
    ap.add_argument("--workers", type=int, default=2, help="parallel training processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--iterations", type=int, default=None, help="override the base iterations of every task")
    ap.add_argument("--size", type=int, default=None, help="override the crop size of every task")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--work", type=Path, default=HERE / "work" / "generalization")
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

    t0 = time.time()
    prep_info: dict[str, Any] = {}
    case_counts: dict[str, dict[str, int]] = {}
    for task in task_names:
        if task != "prostate":
            case_counts[task], prep_info[task] = prepare_and_count(task, args.profile, args.data, args.work)
    jobs = build_jobs(task_names, args.profile, seeds, methods, overrides, case_counts)

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
        "started": _dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
        "workers": args.workers, "threads": args.threads, "seeds": seeds, "methods": methods, "jobs_total": len(jobs),
        "budget": {"per_task": per_task, "erm_long": "2x base iterations", "prep": prep_info},
    }
    if args.keep_rows_from is not None:
        meta["_carried_rows"], meta["carried"] = carried_rows(args.keep_rows_from, task_names)
    args.out.mkdir(parents=True, exist_ok=True)
    write_outputs(args.out, jobs, records, meta)
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
        write_outputs(args.out, jobs, records, meta)

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
    write_outputs(args.out, jobs, records, meta)
    print(f"[{_dt.datetime.now():%H:%M:%S}] {meta['status']}; results in {args.out}", flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
