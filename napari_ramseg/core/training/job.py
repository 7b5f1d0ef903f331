"""From a user's request (CLI flags or widget fields) to a finished run folder.

This is the one place that turns a dataset root into source-domain training and validation samples
and a ``TrainConfig``; ``ramseg train`` and the Train dock (through its child process) come through here.
The run folder's files are ``core/models/run_folder.py``'s. (``bench/generalization/benchmark.py`` prepares its cases
itself and builds a ``Trainer`` directly.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import RamsegInputError
from . import distributed
from ..models.checkpoint import check_config
from ..config import PreprocessConfig, TrainConfig
from ..labels import LabelScheme
from ..options import check_setting, settings_of
from ..data.dataset import cases_checksum, declared_labels, discover, load_samples, split_train_val
from ..data.geometry import resize_image, resize_mask, working_shape
from ..inference.adapt.target_style import load_style_images
from .resume import check_resumed_data, read_resume_state, resumed_config
from ..models.run_folder import RunFolder
from .trainer import TrainCallbacks, TrainEvent, Trainer, TrainResult

# Every TrainConfig option (declared in core/config.py with its flag, help and bounds) is a TrainRequest
# field of the same name, generated below, and config_from_request writes it into the config through the
# path its field has there. Nothing else maps one onto the other.
TRAIN_SETTINGS = settings_of(TrainConfig)
CONFIG_FIELDS: dict[str, str] = {s.name: s.path for s in TRAIN_SETTINGS}
# a request's None for these means: iterations from --epochs (else the config's); resume_every_s the
# config's, or the resumed run's
NONE_MEANS_DEFAULT = ("iterations", "resume_every_s")


@dataclass
class _RequestBase:
    data: Path
    format: str = "auto"
    domains: list[str] | None = None
    target: str | None = None
    out: Path | None = None
    epochs: float | None = None  # with iterations None: passes over the source training cases
    labels: list[str] | None = None
    label_kind: str | None = None
    resume: Path | None = None
    # unlabelled images (any camera, no masks) whose amplitude RAM mixes in beside the other sources'
    partners: Path | None = None
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # refused as the request is made (CLI or dock), not after minutes of reading the data
        for setting in TRAIN_SETTINGS:
            value = getattr(self, setting.name)
            if not (value is None and setting.name in NONE_MEANS_DEFAULT):
                check_setting(setting, value)


TrainRequest = make_dataclass(
    "TrainRequest",
    [(s.name, s.annotation | None if s.name in NONE_MEANS_DEFAULT else s.annotation,
      field(default=None if s.name in NONE_MEANS_DEFAULT else s.default)) for s in TRAIN_SETTINGS],
    bases=(_RequestBase,),
    namespace={"__doc__": "What a user asks for: the data, and every TrainConfig option under its own name "
                          "(core/config.py's defaults; None for iterations and resume_every_s means the config's)."})
TrainRequest.__module__ = __name__  # pickled to the Train dock's child process by this name


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
    settings = {path: getattr(request, name) for name, path in CONFIG_FIELDS.items()
                if not (name in NONE_MEANS_DEFAULT and getattr(request, name) is None)}
    settings["iterations"] = iterations
    config = TrainConfig(labels=labels).with_settings(settings)
    try:  # the schema a model.json is read back with: a NaN or 1e30 --lr or -4 threads is refused now
        check_config(config)
    except ValueError as exc:
        raise RamsegInputError(f"invalid training settings ({exc})") from None
    return config


def run_training(request: TrainRequest, on_event: Callable[[TrainEvent], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 log: Callable[[str], None] | None = None) -> TrainResult:
    """Discover data, build the config, train (or resume), and write the run folder.

    Launched by torchrun this is one rank of a DistributedDataParallel job (``core/training/distributed.py``):
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
        if request.partners is not None:  # before a resume state is loaded: the pool's fingerprint names them
            lend_partner_styles(trainer, request.partners, config)
        if resume is not None:
            trainer.load_resume_state()  # every rank reads the state rank 0 wrote
        return trainer.run()


def lend_partner_styles(trainer: Trainer, folder: Path, config: TrainConfig) -> None:
    """Every image of ``folder`` lends its low-frequency amplitude as a RAM partner (``partner_share`` of
    them), never trained on as an image: every fundus photograph is a camera style, labelled or not."""
    images, info = load_style_images(folder, config.model.in_channels)
    trainer.pool.set_style_images(images, config.partner_share)
    trainer.extra_metadata["ram_partners"] = {**info, "share": config.partner_share}


def _prepare(request: TrainRequest, log: Callable[[str], None] | None,
             is_main: bool) -> tuple[Path, TrainConfig, TrainingData, dict[str, Any] | None]:
    resume_state = None
    started = time.perf_counter()
    if request.resume is not None:
        resume_state = read_resume_state(request.resume)  # validated: one clear line if broken
        run_dir = Path(request.resume)
        # how to run (device, SyncBatchNorm under torchrun) may change on resume; what to train may not
        config = resumed_config(request, resume_state, CONFIG_FIELDS)
        data = load_training_data(request.data, request.format, resume_state["domains"], None, config.labels,
                                  config.val_fraction, config.seed, preprocess=config.preprocess)
        check_resumed_data(resume_state, data.description, run_dir)  # the data the run started with
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
        log(f"read the data in {time.perf_counter() - started:.1f} s: "
            f"sources {counts} training samples, {len(data.val)} validation; "
            f"{config.iterations} iterations at batch {config.batch}, size {config.preprocess.size}; "
            f"RAM {'on' if config.method.ram else 'off'}, DSIR {'on' if config.method.dsir else 'off'}, "
            f"consistency {'on' if config.method.consistency else 'off'}")
        if config.sync_batchnorm and distributed.torchrun_env() is None:
            log("--sync-batchnorm has no effect in a single process (it matters under torchrun)")
        if resume_state is None and not request.labels and declared_labels(request.data, data.format) is None:
            log(f"ramseg: warning: no --labels given and the data name none (no dataset.json): the model's classes "
                f"are called {', '.join(config.labels.names)}; name them with --labels, e.g. --labels vessel")
    return run_dir, config, data, resume_state
