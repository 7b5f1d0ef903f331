"""The training engine: RAM-DSIR (or any ablation of it, ``core/method/objective.py``) on balanced multi-domain batches.

There is one training loop, :meth:`Trainer.iter_run`, a generator of :class:`TrainEvent`. ``Trainer.run``
drives it with plain callbacks (the CLI, the Train dock's child process, the benchmarks) and
fine-tuning (``core/finetune/round.py``) drives it itself. The run folder (``core/models/run_folder.py``) is
written only through atomic renames: at any moment it holds the last complete state or nothing.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import TrainingDiverged
from . import distributed, resume
from .batches import BatchDrawer
from ..models.checkpoint import ModelMetadata, portable_provenance, save_model
from ..config import TrainConfig
from ..device import autocast, autocast_dtype, resolve_device
from ..inference.fastpath import use_channels_last
from ..evaluation.evaluate import validation_dice
from ..events import drive
from ..inference.predictor import Predictor
from ..method.model import RamSegNet
from ..method.losses import annotated_channels, unannotated_names
from ..method.objective import RamDsirObjective, make_optimizer, poly_lr
from ..models.run_folder import RunFolder
from ..method.sampling import SourcePool
from ..shift.domain_fit import profile_sources
from .training_state import (StateLayout, TrainingState, load_optimizer_moments, optimizer_moments,
                             parameter_shapes)


@dataclass
class TrainEvent:
    """One report from the loop: losses of the last step, and validation when it just ran."""

    iteration: int
    total: int
    losses: dict[str, float]
    lr: float
    elapsed: float
    validation: dict[str, Any] | None = None


@dataclass
class TrainCallbacks:
    on_event: Callable[[TrainEvent], None] | None = None
    should_stop: Callable[[], bool] | None = None
    log: Callable[[str], None] | None = None


@dataclass
class TrainResult:
    run_dir: Path | None
    iterations_done: int
    stopped: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, Any] | None = None
    seconds: float = 0.0  # wall time of this (part of the) run


class Trainer:
    """Runs one training job: :meth:`iter_run` is the training loop, :meth:`run` drives it to the end.

    ``dist_context`` (from ``distributed.initialize`` under torchrun) makes this one rank of a
    DistributedDataParallel job: ``config.batch`` is then the global batch, each rank trains on its
    share of it, and only rank 0 writes files (:attr:`writer`) and calls ``on_event``. Without it
    nothing changes. Every other DDP difference sits in the batches (``core/training/batches.py``),
    :meth:`step` (gradient sync and loss averaging), :meth:`validate` (cases shared out) and
    :meth:`_stop_requested` (all ranks agree).
    """

    def __init__(self, config: TrainConfig, domains: Sequence[str], train_samples: dict[str, Sequence],
                 val_samples: Sequence = (), run_dir: str | Path | None = None,
                 callbacks: TrainCallbacks | None = None, extra_metadata: dict[str, Any] | None = None,
                 init_state: dict[str, torch.Tensor] | None = None, pool: SourcePool | None = None,
                 dist_context: distributed.DistContext | None = None):
        self.dist = dist_context
        self.rank = dist_context.rank if dist_context else 0
        self.world_size = dist_context.world_size if dist_context else 1
        self.is_main = self.rank == 0
        if config.batch % self.world_size:
            raise ValueError(f"--batch ({config.batch}) is the global batch and must be divisible by the number of "
                             f"processes ({self.world_size})")
        self.config = config
        self.domains = list(domains)
        self.run_dir = run_dir
        self.callbacks = callbacks or TrainCallbacks()
        self.extra_metadata = dict(extra_metadata or {})
        self.val_samples = list(val_samples)
        self._train_samples = train_samples  # profiled once for model.json (metadata)
        self.source_profile = None  # what the sources look like (core/shift/domain_fit.py); fine-tuning keeps its base's
        self.disc_settings = None  # an optic disc model's two-stage settings (model.json "disc"); likewise kept
        self.adapt_settings = None  # the source-chosen test-time adaptation settings (model.json "adapt"); likewise
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        torch.manual_seed(config.seed)
        self.device = dist_context.device if dist_context else resolve_device(config.device)
        self.dtype = autocast_dtype(self.device, config.precision)
        # fp16 (CUDA without bf16) needs loss scaling; bf16 and fp32 do not
        self.scaler = distributed.grad_scaler(self.device) if self.dtype == torch.float16 else None
        self.net = RamSegNet(config.model, config.labels, num_domains=len(self.domains))
        if init_state is not None:
            self.net.load_state_dict(init_state)
        if dist_context is not None and config.sync_batchnorm:
            distributed.convert_sync_batchnorm(self.net)
        self.net.to(self.device)
        use_channels_last(self.net, self.device)  # NHWC convolutions: ~15 % faster steps (bench/speed/benchmark.py)
        # ``pool``: a ready batch source (fine-tuning mixes corrected cases with replayed source data)
        self.pool = pool if pool is not None else SourcePool(train_samples, self.domains, config.preprocess,
                                                             config.scale_aug_p, config.scale_aug_max, seed=config.seed,
                                                             photometric_p=config.photometric)
        # partial labels, per domain of the pool (a batch's domain indices are the pool's): DRIONS-DB draws
        # no cup, whether it comes as a source, as replay or as a clinician's disc-only corrections
        annotated = annotated_channels([[c.mask for c in cached] for cached in self.pool.cache], config.labels)
        self.unannotated = unannotated_names(annotated, self.pool.domains, config.labels)
        if self.unannotated and pool is None:  # a model's own sources' (a fine-tune keeps its base's record)
            self.extra_metadata["unannotated_labels"] = self.unannotated
        # under DDP the segmentation Dice spans all ranks: the global batch's objective
        seg_loss = distributed.GlobalBatchSegmentationLoss(config.labels) if dist_context is not None else None
        self.objective = RamDsirObjective(self.net, config, seg_loss, annotated=annotated.to(self.device))
        self.optimizer = make_optimizer(self.net, config)
        self.lambda_generator = torch.Generator().manual_seed(config.seed + 1)
        self.batches = BatchDrawer(self.pool, self.lambda_generator, self.device, len(self.domains),
                                   dist_context)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.val_every = config.validation_interval()
        self.extra_metadata["world_size"] = self.world_size
        self.extra_metadata.pop("distributed", None)
        self.module: nn.Module = self.objective  # what a training step calls: the objective, or DDP around it
        if dist_context is not None:
            self.extra_metadata["distributed"] = {
                **dist_context.describe(), "global_batch": config.batch,
                "per_rank_batch": config.batch // self.world_size, "sync_batchnorm": config.sync_batchnorm}
            distributed.check_same_everywhere(
                self.pool.fingerprint() + "|" + "|".join(f"{s.domain}/{s.name}" for s in self.val_samples),
                "training and validation cases")
            if not config.method.dsir:  # never used nor optimised: keep it out of DDP's gradient reduction
                self.net.restoration.requires_grad_(False)
            self.module = distributed.wrap_ddp(self.objective, dist_context)

    # -- the run folder --------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path | None:
        return None if self.folder is None else self.folder.path

    @run_dir.setter
    def run_dir(self, value: str | Path | None) -> None:
        self.folder: RunFolder | None = None if value is None else RunFolder(value)

    @property
    def writer(self) -> RunFolder | None:
        """The run folder this process writes, or None: the one place that decides that only rank 0 writes."""
        return self.folder if self.is_main else None

    # -- one step --------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        cfg = self.config
        self.net.train()
        lr = 0.0
        for group in self.optimizer.param_groups:
            group["lr"] = poly_lr(group["base_lr"], self.iteration, cfg.iterations, cfg.poly_power)
            lr = max(lr, group["lr"])
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(cfg.grad_accumulation):
            images, masks, domains, mixed, weights = self.batches.draw(cfg.batch, cfg.method)
            # DDP: reduce gradients only after the last micro-step of an accumulated step
            last = micro == cfg.grad_accumulation - 1
            sync = contextlib.nullcontext() if self.dist is None or last else self.module.no_sync()
            with sync:
                with autocast(self.device, self.dtype):
                    terms = self.module(images, masks, domains, mixed, *(() if weights is None else (weights,)))
                loss = terms["loss"] / cfg.grad_accumulation
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / cfg.grad_accumulation
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step when fp16 gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.dist is not None:
            totals = distributed.mean_over_ranks(totals, self.device)  # the global batch's losses
        self.iteration += 1
        if not all(math.isfinite(v) for v in totals.values()):
            shown = ", ".join(f"{k} {v:.3g}" for k, v in totals.items())
            raise TrainingDiverged(f"training diverged at iteration {self.iteration} (losses: {shown}); lower the "
                                   f"learning rate (--lr, now {cfg.lr:g}) or check the data for NaN values")
        totals["lr"] = lr
        return totals

    def validate(self) -> dict[str, Any] | None:
        if not self.val_samples:
            return None
        # Under DDP each rank scores every world_size-th case, on a copy of the net (Predictor changes the
        # memory format of the model it is given, which would break DDP's gradient buckets); every rank
        # gets the same result, computed from the cases in their single-process order.
        net = self.net if self.dist is None else copy.deepcopy(self.net)
        predictor = Predictor(net, self.metadata(), self.device, precision=self.config.precision)
        share = None if self.dist is None else (self.rank, self.world_size, distributed.gather_objects)
        result = validation_dice(predictor, self.val_samples, self.config.labels, self._annotated_names(), share)
        self.net.train()
        return result

    def _annotated_names(self) -> dict[str, list[str]]:
        """Per partially labelled domain, the structures it does annotate (validation scores only those)."""
        return {d: [n for n in self.config.labels.names if n not in missing] for d, missing in self.unannotated.items()}

    # -- the schedule ----------------------------------------------------------------------------
    def iter_run(self) -> Generator[TrainEvent, None, TrainResult]:
        """The training loop, as a generator: one :class:`TrainEvent` after every step (its losses, and
        its validation when one ran), then the :class:`TrainResult` as its return value.

        ``callbacks.should_stop`` is asked before every step. Validation, model selection, the log and
        the resume states happen inside; what a caller adds (a progress bar, fine-tuning's own events)
        it does between steps. :meth:`run` is this loop driven to the end with ``callbacks.on_event``.
        """
        cfg = self.config
        start = time.perf_counter()
        stopped = False
        last_val = None
        last_saved = time.monotonic()
        while self.iteration < cfg.iterations:
            if self._stop_requested():
                stopped = True
                break
            losses = self.step()
            validation = None
            if self.iteration % self.val_every == 0 or self.iteration == cfg.iterations:
                validation = last_val = self.validate()
                self._remember_best(validation)
            self._record(losses, validation, time.perf_counter() - start)
            # after the record (a resumed run's history misses no iteration): at each validation, and
            # every resume_every_s of wall time, so that a kill or a lost node costs minutes, not the run
            periodic = cfg.resume_every_s > 0 and time.monotonic() - last_saved >= cfg.resume_every_s
            if validation is not None or periodic:
                self.save_resume_state()
                last_saved = time.monotonic()
            if cfg.snapshot_every and self.iteration % cfg.snapshot_every == 0:
                self.save_snapshot()
            yield TrainEvent(self.iteration, cfg.iterations, losses, losses["lr"], time.perf_counter() - start,
                             validation)
        return self._finish(stopped, last_val, start)

    def run(self) -> TrainResult:
        """The whole schedule (:meth:`iter_run`), reporting every event to ``callbacks.on_event`` (rank 0)."""
        on_event = self.callbacks.on_event if self.is_main else None
        return drive(self.iter_run(), on_event)

    def _stop_requested(self) -> bool:
        stop = self.callbacks.should_stop is not None and self.callbacks.should_stop()
        if self.dist is not None:
            stop = distributed.any_rank(stop, self.device)  # all ranks stop at the same step
        return stop

    def _record(self, losses: dict[str, float], validation: dict[str, Any] | None, elapsed: float) -> None:
        record = {"iteration": self.iteration, **{k: round(v, 6) for k, v in losses.items()},
                  "elapsed_s": round(elapsed, 3)}
        if validation is not None:
            record["val_dice"] = validation["dice"]
            record["val_dice_by_domain"] = validation["dice_by_domain"]
        self.history.append(record)
        if self.writer is not None:
            self.writer.append_log(record)

    def _finish(self, stopped: bool, last_val: dict[str, Any] | None, start: float) -> TrainResult:
        if self.dist is not None:
            self._record_replica_digests()
        if stopped:  # a stop (core/training/stopping.py) keeps the finished steps: resume state, then model
            self.save_resume_state()
        elapsed = time.perf_counter() - start
        if not stopped or self.iteration > 0:  # no model of untrained weights
            self.save(stopped, last_val, elapsed)
        if not stopped and self.writer is not None:
            self.writer.remove_resume_state()
        if self.dist is not None:
            distributed.barrier()  # no rank reports success before rank 0 has written the model
        return TrainResult(self.run_dir, self.iteration, stopped, self.history, last_val, round(elapsed, 2))

    def _record_replica_digests(self) -> None:
        """Hash every rank's final weights into model.json: DDP replicas must end identical."""
        digests = distributed.gather_objects(distributed.state_digests(self.net))
        info = self.extra_metadata["distributed"]
        info["parameters_sha256_by_rank"] = [d["parameters"] for d in digests]
        info["buffers_sha256_by_rank"] = [d["buffers"] for d in digests]
        info["replicas_identical"] = len({d["parameters"] for d in digests}) == 1
        if not info["replicas_identical"] and self.is_main and self.callbacks.log is not None:
            self.callbacks.log("warning: the ranks' parameters differ at the end of training; rank 0's are saved")

    def _remember_best(self, validation: dict[str, Any] | None) -> None:
        if validation is None or not math.isfinite(validation["dice"]):
            return
        # ">=": among equal scores the later, longer-trained state wins
        if self.best is None or validation["dice"] >= self.best["dice"]:
            self.best = {**validation, "iteration": self.iteration}
            if not self.is_main:  # only rank 0 writes the model, so only it keeps a copy of the weights
                return
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}

    # -- files -----------------------------------------------------------------------------------
    def metadata(self, metrics: dict[str, Any] | None = None) -> ModelMetadata:
        """What model.json says of the network as it is now: config, source domains and profile, provenance.

        The public way to wrap a trained network for inference: ``Predictor(trainer.net, trainer.metadata())``.
        """
        if self.source_profile is None and any(self._train_samples.get(d) for d in self.domains):
            # once per run: the source domains' colour, 2D/3D, intensity and low-frequency style
            samples = [s for d in self.domains for s in self._train_samples.get(d, ())]
            self.source_profile = profile_sources(samples, self.val_samples, self.config.preprocess,
                                                  self.config.method.window_ratio)
        return ModelMetadata(self.config, self.domains, metrics or {}, portable_provenance(self.extra_metadata),
                             self.source_profile, self.disc_settings, self.adapt_settings)

    def save(self, stopped: bool, last_val: dict[str, Any] | None, elapsed: float,
             extra_metrics: dict[str, Any] | None = None) -> None:
        """Write the model, metrics.json (selection, validation, history; plus ``extra_metrics``, which
        model.json's metrics carry too): the best source-validation state if there was validation, else the last."""
        folder = self.writer
        if folder is None:
            return
        selected = "best_source_validation" if self.best_state is not None else "last"
        metrics = {
            "selection": selected,
            "selected_iteration": self.best["iteration"] if self.best else self.iteration,
            "validation": self.best or last_val,
            "iterations_done": self.iteration,
            "iterations_planned": self.config.iterations,
            "status": "stopped" if stopped else "complete",
            "train_seconds": round(elapsed, 2),
            **(extra_metrics or {}),
        }
        net_state = self.best_state if self.best_state is not None else None
        if net_state is not None:
            current = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self.net.load_state_dict(net_state)
        save_model(self.net, self.metadata(metrics), folder.path)
        if net_state is not None:
            self.net.load_state_dict(current)
        folder.write_metrics({**metrics, "history": self.history})

    def save_snapshot(self) -> None:
        """Keep the network as it is now, as a model folder of its own (``TrainConfig.snapshot_every``)."""
        if self.writer is not None:
            metrics = {"selection": "snapshot", "selected_iteration": self.iteration,
                       "iterations_planned": self.config.iterations}
            save_model(self.net, self.metadata(metrics), self.writer.snapshot(self.iteration).path)

    def save_resume_state(self) -> None:
        """Write the resume state for the current iteration (format and rules: core/training/resume.py)."""
        resume.save_state(self)

    def load_resume_state(self) -> None:
        if self.folder is None:
            raise ValueError("resume needs a run folder")
        resume.load_state(self)  # every rank reads the state rank 0 wrote
        if self.writer is not None:
            self.writer.truncate_log(self.iteration)

    # -- the state a resume continues from (its files: core/training/resume.py) ----------------------------
    def state_dict(self) -> TrainingState:
        """Everything this run needs to continue exactly from here, on any rank at any world size (every
        rank holds the same weights, generators and pool after each step)."""
        return TrainingState(
            iteration=self.iteration, config=self.config, domains=self.domains, history=self.history,
            best=self.best, net={k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
            best_net=None if self.best_state is None else {k: v.contiguous() for k, v in self.best_state.items()},
            optimizer=optimizer_moments(self.optimizer), torch_rng=torch.get_rng_state(),
            lambda_rng=self.lambda_generator.get_state(), pool=self.pool.state(),
            grad_scaler=None if self.scaler is None else self.scaler.state_dict(), metadata=self.extra_metadata)

    def state_layout(self) -> StateLayout:
        """What a state must look like to fit this trainer (checked before :meth:`load_state_dict`)."""
        return StateLayout(self.net.state_dict(), parameter_shapes(self.optimizer),
                           [len(cached) for cached in self.pool.cache])

    def load_state_dict(self, state: TrainingState) -> None:
        """Continue from ``state`` (one that fits :meth:`state_layout`); the config and domains stay this
        trainer's own (``core/training/resume.resumed_config`` chose them)."""
        self.net.load_state_dict(state.net)
        load_optimizer_moments(self.optimizer, state.optimizer, self.device)
        torch.set_rng_state(state.torch_rng)
        self.lambda_generator.set_state(state.lambda_rng)
        self.best_state = state.best_net
        self.best = state.best
        self.iteration = int(state.iteration)
        self.history = list(state.history)
        self.pool.load_state(state.pool)
        if self.scaler is not None and state.grad_scaler:
            self.scaler.load_state_dict(state.grad_scaler)
