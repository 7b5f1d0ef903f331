"""The generalization benchmark's job list: methods, directions, budgets and the fixed case splits.

For each held-out direction ``A->B`` every method trains on A with identical data, budget and seeds:

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

``bench/generalization/benchmark.py`` prepares the data, trains and scores these jobs and writes the results;
the benchmarks that start from its models (adaptation, fine-tune gain, thin vessels) rebuild the same
jobs here. A job's ``key`` hashes every field, so the cache of finished jobs follows any change.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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


@dataclass
class Job:
    """One training run and its scoring. Workers receive it pickled; cached records rebuild it with
    ``Job(**record["job"])``, so every field must stay JSON-serialisable."""

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


def split_cases(names: list[str], fraction: float, seed: int, domain: str) -> tuple[list[str], list[str]]:
    """Deterministic hold-out, the same rule as ``core.data.dataset.split_train_val``: (train, held_out)."""
    from napari_ramseg.core.data.dataset import Case, split_train_val

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
    """A run's base iterations: the profile's fixed count, or its epochs over ``n_source_train`` cases."""
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

