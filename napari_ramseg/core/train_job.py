"""From a user's request (CLI flags or widget fields) to a finished run folder.

This is the one place that turns a dataset root into source-domain training and validation samples
and a ``TrainConfig``; ``ramseg train`` and the Train dock (through its child process) come through here.
The run folder's files are ``core/run_folder.py``'s. (``bench/generalization.py`` prepares its cases
itself and builds a ``Trainer`` directly.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import RamsegInputError
from . import distributed
from .config import LabelScheme, PreprocessConfig, TrainConfig
from .checkpoint import check_config
from .data import cases_checksum, discover, load_samples, split_train_val
from .sampling import resize_image, resize_mask, working_shape
from .resume import read_resume_state
from .run_folder import RunFolder
from .train import TrainCallbacks, TrainEvent, Trainer, TrainResult

# Every TrainRequest field that is a TrainConfig setting, and where the config keeps it: the request's
# defaults are read from the config (core/config.py) through this table, and config_from_request
# writes the request into a config through it. Nothing else maps one onto the other.
CONFIG_FIELDS: dict[str, str] = {
    "size": "preprocess.size", "long_side": "preprocess.long_side",
    "batch": "batch", "lr": "lr", "seed": "seed",
    "ram": "method.ram", "dsir": "method.dsir", "consistency": "method.consistency",
    "window_ratio": "method.window_ratio", "lam_mode": "method.lam_mode",
    "val_fraction": "val_fraction", "val_every": "val_every", "threads": "num_threads",
    "base_width": "model.base_width", "grad_accumulation": "grad_accumulation",
    "sync_batchnorm": "sync_batchnorm", "device": "device", "precision": "precision",
    "resume_every_s": "resume_every_s", "cldice_weight": "cldice_weight",
}


def _default(name: str) -> Any:
    return TrainConfig.default(CONFIG_FIELDS[name])


@dataclass
class TrainRequest:
    """What a user asks for; every default is the config's (core/config.py), None means that default."""

    data: Path
    format: str = "auto"
    domains: list[str] | None = None
    target: str | None = None
    out: Path | None = None
    iterations: int | None = None  # None: --epochs, else TrainConfig's iterations
    epochs: float | None = None
    size: int = _default("size")
    long_side: int | None = _default("long_side")
    batch: int = _default("batch")
    lr: float = _default("lr")
    seed: int = _default("seed")
    labels: list[str] | None = None
    label_kind: str | None = None
    ram: bool = _default("ram")
    dsir: bool = _default("dsir")
    consistency: bool = _default("consistency")
    window_ratio: float = _default("window_ratio")
    lam_mode: str = _default("lam_mode")
    val_fraction: float = _default("val_fraction")
    val_every: int = _default("val_every")
    threads: int = _default("threads")
    base_width: int = _default("base_width")
    grad_accumulation: int = _default("grad_accumulation")
    sync_batchnorm: bool = _default("sync_batchnorm")
    device: str = _default("device")
    precision: str = _default("precision")
    cldice_weight: float = _default("cldice_weight")
    resume_every_s: float | None = None  # between periodic resume states; None: the config's (or the resumed run's)
    resume: Path | None = None
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # refused as the request is made (CLI or dock), not after minutes of reading the data
        if not (math.isfinite(self.cldice_weight) and self.cldice_weight >= 0):
            raise RamsegInputError(f"--cldice-weight must be a number >= 0 (0 leaves clDice out), "
                                   f"not {self.cldice_weight:g}")


@dataclass
class TrainingData:
    domains: list[str]
    labels: LabelScheme
    format: str
    train: dict[str, list]  # domain -> samples
    val: list
    description: dict[str, Any]


def _at_working_scale(samples: list, preprocess: PreprocessConfig | None) -> list:
    """Shrink samples to the network's scale right after decoding, so that a folder of full-resolution
    photographs (HRF: 3504x2336, ~100 MB each as float) never sits in memory at full size."""
    if preprocess is None:
        return samples
    out = []
    for s in samples:
        shape = working_shape(*s.image.shape[-2:], preprocess)
        if shape[0] < s.image.shape[-2] or shape[1] < s.image.shape[-1]:
            # readers may hand back read-only (memory-mapped) arrays; the resize only reads them
            image = resize_image(torch.from_numpy(np.require(s.image, requirements='W')), shape).numpy()
            mask = None if s.mask is None else resize_mask(torch.from_numpy(np.require(s.mask, requirements='W')), shape).numpy()
            spacing = s.spacing
            if spacing is not None and len(spacing) >= 2:  # the spacing of the pixels kept
                h, w = s.image.shape[-2:]
                spacing = (*spacing[:-2], spacing[-2] * h / shape[0], spacing[-1] * w / shape[1])
            s = replace(s, image=image, mask=mask, spacing=spacing)
        out.append(s)
    return out


def load_training_data(root: Path, fmt: str = "auto", domains: list[str] | None = None, target: str | None = None,
                       labels: LabelScheme | None = None, val_fraction: float = 0.2, seed: int = 0,
                       preprocess: PreprocessConfig | None = None) -> TrainingData:
    """Source-domain samples split into training and validation; the target domain is never loaded.

    With ``preprocess`` every sample is brought down to the working scale as soon as it is read
    (validation Dice is then measured at that scale too).
    """
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
    for case in train_cases:
        for sample in _at_working_scale(load_samples([case], dataset.labels, dataset.format), preprocess):
            by_domain[sample.domain].append(sample)
    val = [s for case in val_cases
           for s in _at_working_scale(load_samples([case], dataset.labels, dataset.format), preprocess)]
    # the data by name and content, never by machine path (model.json files are shared between sites)
    checksum, files = cases_checksum(root, train_cases + val_cases)
    description = {
        "name": Path(root).resolve().name, "sha256": checksum, "files": files,
        "format": dataset.format, "source_domains": sources,
        "target_domain": target,
        "train_cases": {d: sorted({s.name for s in v}) for d, v in by_domain.items()},
        "val_cases": sorted({f"{s.domain}/{s.name}" for s in val}),
    }
    return TrainingData(sources, dataset.labels, dataset.format, by_domain, val, description)


def label_scheme_from(names: list[str] | None, kind: str | None) -> LabelScheme | None:
    if not names:
        return None
    return LabelScheme(tuple(names), kind or "nested")


def preprocess_from(request: TrainRequest) -> PreprocessConfig:
    return PreprocessConfig(size=request.size, long_side=request.long_side)


def config_from_request(request: TrainRequest, labels: LabelScheme, num_train_samples: int) -> TrainConfig:
    if request.iterations is not None:
        iterations = request.iterations
    elif request.epochs is not None:
        iterations = math.ceil(request.epochs * num_train_samples / request.batch)
    else:
        iterations = TrainConfig.default("iterations")
    if iterations < 1:
        raise ValueError("the training budget must be at least one iteration")
    if request.size < 16 or request.size % 16:
        raise ValueError(f"--size must be a positive multiple of 16 (the network's stride), not {request.size}")
    if request.batch < 1:
        raise ValueError("--batch must be at least 1")
    if request.grad_accumulation < 1:
        raise ValueError("--grad-accumulation must be at least 1")
    settings = {path: getattr(request, name) for name, path in CONFIG_FIELDS.items()}
    if request.resume_every_s is None:
        del settings["resume_every_s"]
    config = TrainConfig(labels=labels, iterations=iterations).with_settings(settings)
    try:  # the schema a model.json is read back with: a NaN or 1e30 --lr or -4 threads is refused now
        check_config(config)
    except ValueError as exc:
        raise RamsegInputError(f"invalid training settings ({exc})") from None
    return config


def run_training(request: TrainRequest, on_event: Callable[[TrainEvent], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 log: Callable[[str], None] | None = None) -> TrainResult:
    """Discover data, build the config, train (or resume), and write the run folder.

    Launched by torchrun this is one rank of a DistributedDataParallel job (``core/distributed.py``):
    every rank loads the same data and trains on its share of each global batch; only rank 0 logs,
    reports events and writes the run folder. Without torchrun's environment nothing of that runs.
    """
    with distributed.initialize(request.device) as context:
        if context is None:
            run_dir, config, data, resume = _prepare(request, log, True)
        else:
            if not context.is_main:
                on_event, log = None, None
            prepared, error = None, None
            try:
                prepared = _prepare(request, log, context.is_main)
            except Exception as exc:  # every rank must learn of it, or the others wait forever
                error = exc
            distributed.raise_if_any_failed(error)
            run_dir, config, data, resume = prepared
            run_dir = Path(distributed.gather_objects(str(run_dir))[0])  # rank 0's (the default name has a time)
            if log is not None:
                log(f"distributed: {context.world_size} processes ({context.backend}), global batch {config.batch}, "
                    f"{config.batch // context.world_size} per process; SyncBatchNorm "
                    f"{'on' if config.sync_batchnorm else 'off'}")
        extra = {"data": data.description, "command": request.command, **request.extra}
        if resume is not None:  # the first run's command stays; each resume is added after it
            provenance = resume.get("provenance", {})
            extra["command"] = provenance.get("command", request.command)
            extra["resumed_with"] = [*provenance.get("resumed_with", []), request.command]
        trainer = Trainer(config, data.domains, data.train, data.val, run_dir,
                          TrainCallbacks(on_event=on_event, should_stop=should_stop, log=log), extra,
                          dist_context=context)
        if resume is not None:
            trainer.load_resume_state()  # every rank reads the state rank 0 wrote
        return trainer.run()


def _prepare(request: TrainRequest, log: Callable[[str], None] | None,
             is_main: bool) -> tuple[Path, TrainConfig, TrainingData, dict[str, Any] | None]:
    resume_state = None
    if request.resume is not None:
        resume_state = read_resume_state(request.resume)  # validated: one clear line if broken
        run_dir = Path(request.resume)
        # how to run (SyncBatchNorm under torchrun) may change on resume; what to train may not
        config = TrainConfig.from_dict(resume_state["config"]).replace(sync_batchnorm=request.sync_batchnorm)
        if request.resume_every_s is not None:
            config = config.replace(resume_every_s=request.resume_every_s)
        data = load_training_data(request.data, request.format, resume_state["domains"], None, config.labels,
                                  config.val_fraction, config.seed, preprocess=config.preprocess)
    else:
        # only rank 0 writes, so only rank 0 decides the folder (the others get its path)
        run_dir = RunFolder.fresh(request.out).path if is_main else Path(request.out or ".")
        # shrunk to the working scale as read: a 3504x2336 HRF photograph is never held at full size
        data = load_training_data(request.data, request.format, request.domains, request.target,
                                  label_scheme_from(request.labels, request.label_kind),
                                  request.val_fraction, request.seed, preprocess=preprocess_from(request))
        config = config_from_request(request, data.labels, sum(len(v) for v in data.train.values()))
    if log is not None:
        counts = ", ".join(f"{d}: {len(v)}" for d, v in data.train.items())
        log(f"sources {counts} training samples, {len(data.val)} validation; "
            f"{config.iterations} iterations at batch {config.batch}, size {config.preprocess.size}; "
            f"RAM {'on' if config.method.ram else 'off'}, DSIR {'on' if config.method.dsir else 'off'}, "
            f"consistency {'on' if config.method.consistency else 'off'}")
        if config.sync_batchnorm and distributed.torchrun_env() is None:
            log("--sync-batchnorm has no effect in a single process (it matters under torchrun)")
    return run_dir, config, data, resume_state
