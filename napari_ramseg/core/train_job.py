"""From a user's request (CLI flags or widget fields) to a finished run folder.

This is the one place that turns a dataset root into source-domain training and validation samples
and a ``TrainConfig``; the CLI, the Train widget and the benchmark scripts all come through here.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RamsegInputError
from .checkpoint import METADATA_NAME
from .config import LabelScheme, MethodConfig, ModelConfig, PreprocessConfig, TrainConfig
from .data import discover, load_samples, split_train_val
from .train import RESUME_STATE, TrainCallbacks, TrainEvent, Trainer, TrainResult


@dataclass
class TrainRequest:
    """What a user asks for; None means the TrainConfig default."""

    data: Path
    format: str = "auto"
    domains: list[str] | None = None
    target: str | None = None
    out: Path | None = None
    iterations: int | None = None
    epochs: float | None = None
    size: int = 256
    long_side: int | None = None
    batch: int = 8
    lr: float = 2e-3
    seed: int = 0
    labels: list[str] | None = None
    label_kind: str | None = None
    ram: bool = True
    dsir: bool = True
    consistency: bool = True
    window_ratio: float = 0.1
    lam_mode: str = "uniform"
    val_fraction: float = 0.2
    val_every: int = 0
    threads: int = 0
    base_width: int = 16
    grad_accumulation: int = 1
    sync_batchnorm: bool = False
    device: str = "auto"
    resume: Path | None = None
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingData:
    domains: list[str]
    labels: LabelScheme
    format: str
    train: dict[str, list]  # domain -> samples
    val: list
    description: dict[str, Any]


def load_training_data(root: Path, fmt: str = "auto", domains: list[str] | None = None, target: str | None = None,
                       labels: LabelScheme | None = None, val_fraction: float = 0.2, seed: int = 0) -> TrainingData:
    """Source-domain samples split into training and validation; the target domain is never loaded."""
    if domains and target and target in domains:
        raise RamsegInputError(f"target domain {target!r} is also listed as a source domain", root)
    dataset = discover(root, fmt, domains, labels=labels, split="train")
    sources = [d for d in dataset.domains if d != target]
    if target is not None and target not in dataset.domains and not domains:
        raise RamsegInputError(f"target domain {target!r} not found; available: {', '.join(dataset.domains)}", root)
    if not sources:
        raise RamsegInputError("no source domain left after holding out the target", root)
    cases = [c for c in dataset.cases if c.domain in sources]
    train_cases, val_cases = split_train_val(cases, val_fraction, seed)
    by_domain: dict[str, list] = {d: [] for d in sources}
    for sample in load_samples(train_cases, dataset.labels, dataset.format):
        by_domain[sample.domain].append(sample)
    val = load_samples(val_cases, dataset.labels, dataset.format)
    description = {
        "root": str(Path(root).resolve()), "format": dataset.format, "source_domains": sources,
        "target_domain": target,
        "train_cases": {d: sorted({s.name for s in v}) for d, v in by_domain.items()},
        "val_cases": sorted({f"{s.domain}/{s.name}" for s in val}),
    }
    return TrainingData(sources, dataset.labels, dataset.format, by_domain, val, description)


def label_scheme_from(names: list[str] | None, kind: str | None) -> LabelScheme | None:
    if not names:
        return None
    return LabelScheme(tuple(names), kind or "nested")


def config_from_request(request: TrainRequest, labels: LabelScheme, num_train_samples: int) -> TrainConfig:
    if request.iterations is not None:
        iterations = request.iterations
    elif request.epochs is not None:
        iterations = math.ceil(request.epochs * num_train_samples / request.batch)
    else:
        iterations = TrainConfig().iterations
    if iterations < 1:
        raise ValueError("the training budget must be at least one iteration")
    if request.size < 16 or request.size % 16:
        raise ValueError(f"--size must be a positive multiple of 16 (the network's stride), not {request.size}")
    if request.batch < 1:
        raise ValueError("--batch must be at least 1")
    return TrainConfig(
        labels=labels,
        model=ModelConfig(base_width=request.base_width),
        preprocess=PreprocessConfig(size=request.size, long_side=request.long_side),
        method=MethodConfig(ram=request.ram, dsir=request.dsir, consistency=request.consistency,
                            window_ratio=request.window_ratio, lam_mode=request.lam_mode),
        iterations=iterations, batch=request.batch, lr=request.lr, seed=request.seed,
        val_fraction=request.val_fraction, val_every=request.val_every, device=request.device,
        num_threads=request.threads, grad_accumulation=request.grad_accumulation,
        sync_batchnorm=request.sync_batchnorm,
    )


def _fresh_run_dir(out: Path | None) -> Path:
    if out is None:
        out = Path("runs") / _dt.datetime.now().strftime("ramseg-%Y%m%d-%H%M%S")
    if (out / METADATA_NAME).exists() or (out / RESUME_STATE).exists():
        raise FileExistsError(f"{out}: already holds a run; choose another --out, or continue it with --resume {out}")
    return out


def run_training(request: TrainRequest, on_event: Callable[[TrainEvent], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 log: Callable[[str], None] | None = None) -> TrainResult:
    """Discover data, build the config, train (or resume), and write the run folder."""
    resume_state = None
    if request.resume is not None:
        state_path = Path(request.resume) / RESUME_STATE
        if not state_path.exists():
            raise RamsegInputError("nothing to resume: no resume.json in this run folder", request.resume)
        resume_state = json.loads(state_path.read_text(encoding="utf-8"))
        run_dir = Path(request.resume)
        config = TrainConfig.from_dict(resume_state["config"])
        data = load_training_data(request.data, request.format, resume_state["domains"], None, config.labels,
                                  config.val_fraction, config.seed)
    else:
        run_dir = _fresh_run_dir(request.out)
        data = load_training_data(request.data, request.format, request.domains, request.target,
                                  label_scheme_from(request.labels, request.label_kind),
                                  request.val_fraction, request.seed)
        config = config_from_request(request, data.labels, sum(len(v) for v in data.train.values()))
    if log is not None:
        counts = ", ".join(f"{d}: {len(v)}" for d, v in data.train.items())
        log(f"sources {counts} training samples, {len(data.val)} validation; "
            f"{config.iterations} iterations at batch {config.batch}, size {config.preprocess.size}; "
            f"RAM {'on' if config.method.ram else 'off'}, DSIR {'on' if config.method.dsir else 'off'}, "
            f"consistency {'on' if config.method.consistency else 'off'}")
    extra = {"data": data.description, "command": request.command, **request.extra}
    trainer = Trainer(config, data.domains, data.train, data.val, run_dir,
                      TrainCallbacks(on_event=on_event, should_stop=should_stop, log=log), extra)
    if resume_state is not None:
        trainer.load_resume_state()
    return trainer.run()
