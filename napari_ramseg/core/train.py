"""The training engine: RAM-DSIR (or any ablation of it) on balanced multi-domain batches.

Progress and cancellation travel through plain callbacks so that the CLI, the napari widgets and a
child process can all drive the same loop. The run folder is written only through atomic renames:
at any moment it holds the last complete state or nothing.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed, resume
from ..io import atomic_write
from .checkpoint import ModelMetadata, atomic_write_json, save_model
from .config import LabelScheme, TrainConfig
from .device import autocast, autocast_dtype, resolve_device
from .fastpath import use_channels_last
from .infer import Predictor, labels_from_probabilities
from .losses import SegmentationLoss, restoration_mse, symmetric_kl
from .metrics import dice_score, structure_masks
from .model import RamSegNet
from .ram import amplitude_mixup, sample_lambda
from .sampling import SourcePool

RESUME_WEIGHTS, RESUME_STATE = resume.RESUME_WEIGHTS, resume.RESUME_STATE  # the format lives in core/resume.py
LOG_NAME = "train.log"
METRICS_NAME = "metrics.json"


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


class RamDsirObjective(nn.Module):
    """The whole training objective as one module, so that DistributedDataParallel can wrap it.

    Both views go through the encoder and segmentation decoder in one batch of 2B; the DSIR decoder
    then restores each domain's sub-batch of mixed-image bottlenecks with that domain's BatchNorm and
    is scored against the un-augmented originals. Reusing the bottleneck of the shared pass (rather
    than encoding every sub-batch again) keeps the method's overhead small.

    ``global_batch=True`` (under DDP): the segmentation loss's Dice spans all ranks, and ``forward``
    takes per-domain ``domain_weights`` and runs every domain's restoration on every rank, an empty
    sub-batch included, so that synchronised BatchNorms see the same calls everywhere and every
    parameter gets a gradient (see ``distributed``).
    """

    def __init__(self, net: RamSegNet, config: TrainConfig, global_batch: bool = False):
        super().__init__()
        self.net = net
        self.method = config.method
        self.seg_loss = (distributed.GlobalBatchSegmentationLoss(config.labels) if global_batch
                         else SegmentationLoss(config.labels))
        self.labels = config.labels

    def forward(self, images: torch.Tensor, masks: torch.Tensor, domains: torch.Tensor,
                mixed: torch.Tensor | None, domain_weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
        method = self.method
        batch = images.shape[0]
        inputs = images if mixed is None else torch.cat([images, mixed])
        features = self.net.encode(inputs)
        logits = self.net.decode(features)
        terms: dict[str, torch.Tensor] = {"seg": self.seg_loss(logits[:batch], masks)}
        if mixed is not None:
            terms["seg_ram"] = self.seg_loss(logits[batch:], masks)
            if method.consistency:
                terms["consistency"] = method.consistency_weight * symmetric_kl(logits[:batch], logits[batch:], self.labels)
        if method.dsir:
            # Restore the mixed view when RAM is on (the paper's setting), else the image itself.
            bottleneck = features[-1][batch:] if mixed is not None else features[-1]
            restoration = images.new_zeros(())
            if domain_weights is None:
                for k in torch.unique(domains).tolist():
                    select = domains == k
                    restored = self.net.restore(bottleneck[select], int(k), size=tuple(images.shape[-2:]))
                    restoration = restoration + restoration_mse(restored, images[select])
            else:
                for k, weight in enumerate(domain_weights):
                    select = domains == k
                    restored = self.net.restore(bottleneck[select], k, size=tuple(images.shape[-2:]))
                    if weight > 0:
                        restoration = restoration + weight * restoration_mse(restored, images[select])
                    else:  # no slot of this domain here: keep its decoder in the graph with a zero gradient
                        restoration = restoration + 0.0 * restored.float().sum()
            terms["restoration"] = method.restoration_weight * restoration
        terms["loss"] = sum(terms.values())
        return terms


def poly_lr(base: float, iteration: int, total: int, power: float) -> float:
    return base * (1 - iteration / max(total, 1)) ** power


def make_optimizer(net: RamSegNet, config: TrainConfig) -> torch.optim.Adam:
    """Adam without weight decay; the encoder runs at half the rate when DSIR is on (METHOD.md)."""
    groups = net.parameter_groups()
    encoder_scale = 0.5 if config.method.dsir else 1.0
    param_groups = [
        {"params": groups["encoder"], "lr": config.lr * encoder_scale, "base_lr": config.lr * encoder_scale, "name": "encoder"},
        {"params": groups["decoder"], "lr": config.lr, "base_lr": config.lr, "name": "decoder"},
    ]
    if config.method.dsir:
        param_groups.append({"params": groups["restoration"], "lr": config.lr, "base_lr": config.lr, "name": "restoration"})
    return torch.optim.Adam(param_groups, betas=(0.9, 0.999), weight_decay=0.0)


def case_validation_dice(predictor: Predictor, sample: Any, labels: LabelScheme) -> float:
    """Mean Dice over the label's structures for one held-out sample."""
    x = torch.from_numpy(np.ascontiguousarray(sample.image, dtype=np.float32))
    probs = predictor.predict_prepared(x)
    pred = labels_from_probabilities(probs, labels, predictor.threshold)
    pred_masks, true_masks = structure_masks(pred, labels), structure_masks(sample.mask, labels)
    return float(np.mean([dice_score(pred_masks[n], true_masks[n]) for n in labels.names]))


def validation_dice(predictor: Predictor, samples: Sequence, labels: LabelScheme) -> dict[str, Any]:
    """Mean Dice per label and per source domain on held-out source cases (never the target)."""
    return summarize_validation([(s.domain, case_validation_dice(predictor, s, labels)) for s in samples])


def summarize_validation(records: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """(domain, case Dice) pairs in case order -> the mean of the per-domain means, and each domain's."""
    per_domain: dict[str, list[float]] = {}
    for domain, dice in records:
        per_domain.setdefault(domain, []).append(dice)
    by_domain = {d: float(np.mean(v)) for d, v in per_domain.items()}
    mean = float(np.mean(list(by_domain.values()))) if by_domain else float("nan")
    return {"dice": mean, "dice_by_domain": by_domain, "cases": len(records)}


class Trainer:
    """Runs one training job; ``run()`` does the whole schedule and honours ``should_stop``.

    ``dist_context`` (from ``distributed.initialize`` under torchrun) makes this one rank of a
    DistributedDataParallel job: ``config.batch`` is then the global batch, each rank trains on its
    share of it, and only rank 0 writes files and calls ``on_event``. Without it nothing changes.
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
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = callbacks or TrainCallbacks()
        self.extra_metadata = dict(extra_metadata or {})
        self.val_samples = list(val_samples)
        self._train_samples = train_samples  # profiled once for model.json (_metadata)
        self.source_profile = None  # what the sources look like (core/domain_fit.py); fine-tuning keeps its base's
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
        use_channels_last(self.net, self.device)  # NHWC convolutions: ~15 % faster steps (bench/speed.py)
        self.objective = RamDsirObjective(self.net, config, global_batch=dist_context is not None)
        self.optimizer = make_optimizer(self.net, config)
        # ``pool``: a ready batch source (fine-tuning mixes corrected cases with replayed source data)
        self.pool = pool if pool is not None else SourcePool(train_samples, self.domains, config.preprocess,
                                                             config.scale_aug_p, config.scale_aug_max, seed=config.seed)
        self.lambda_generator = torch.Generator().manual_seed(config.seed + 1)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.val_every = config.val_every or max(1, config.iterations // 10)
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

    # -- one step --------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        cfg, method = self.config, self.config.method
        self.net.train()
        lr = 0.0
        for group in self.optimizer.param_groups:
            group["lr"] = poly_lr(group["base_lr"], self.iteration, cfg.iterations, cfg.poly_power)
            lr = max(lr, group["lr"])
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(cfg.grad_accumulation):
            weights = None
            if self.dist is None:
                images, masks, domains = self.pool.draw_batch(cfg.batch)
                images = images.to(self.device)  # before RAM, which runs on the training device
                mixed = None
                if method.ram:
                    partners = self.pool.draw_partners(domains)
                    lam = sample_lambda(len(images), method.lam_mode, self.lambda_generator)
                    mixed = self._mixup(images, partners, lam)
            else:
                # every rank draws the same global batch and keeps its own slots (SourcePool.draw_shard)
                shard = self.pool.draw_shard(cfg.batch, self.rank, self.world_size, partners=method.ram)
                images, masks, domains = shard.images.to(self.device), shard.masks, shard.domains
                mixed = None
                if method.ram:
                    lam = sample_lambda(cfg.batch, method.lam_mode, self.lambda_generator)  # the global batch's
                    lam = lam[torch.from_numpy(shard.slots)]
                    mixed = self._mixup(images, shard.partners, lam)
                weights = distributed.domain_weights(shard.global_domains, domains.tolist(), len(self.domains),
                                                     self.world_size)
            images, masks, domains = images.to(self.device), masks.to(self.device), domains.to(self.device)
            # DDP: reduce gradients only after the last micro-step of an accumulated step
            last = micro == cfg.grad_accumulation - 1
            sync = contextlib.nullcontext() if self.dist is None or last else self.module.no_sync()
            with sync:
                with autocast(self.device, self.dtype):
                    if weights is None:
                        terms = self.module(images, masks, domains, mixed)
                    else:
                        terms = self.module(images, masks, domains, mixed, weights)
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
            raise FloatingPointError(f"training diverged at iteration {self.iteration}: losses {totals}")
        totals["lr"] = lr
        return totals

    def _mixup(self, images: torch.Tensor, partners: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        # On the training device (``images`` is already there): done on the CPU that feeds a GPU, the
        # FFTs took ~0.12 s per batch of 8 at 256 px on the CI machine, four times a whole RAM-DSIR
        # step on an H200 (bench/results/gpu).
        return amplitude_mixup(images, partners.to(self.device), lam.to(self.device), self.config.method.window_ratio)

    def validate(self) -> dict[str, Any] | None:
        if not self.val_samples:
            return None
        if self.dist is None:
            predictor = Predictor(self.net, self._metadata(), self.device, precision=self.config.precision)
            result = validation_dice(predictor, self.val_samples, self.config.labels)
            self.net.train()
            return result
        # Each rank scores every world_size-th case, on a copy of the net (Predictor changes the memory
        # format of the model it is given, which would break DDP's gradient buckets); every rank gets
        # the same result, computed from the cases in their single-process order.
        predictor = Predictor(copy.deepcopy(self.net), self._metadata(), self.device, precision=self.config.precision)
        mine = []
        for i in range(self.rank, len(self.val_samples), self.world_size):
            sample = self.val_samples[i]
            mine.append((i, sample.domain, case_validation_dice(predictor, sample, self.config.labels)))
        del predictor
        records = sorted(r for part in distributed.gather_objects(mine) for r in part)
        return summarize_validation([(domain, dice) for _, domain, dice in records])

    # -- the schedule ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg = self.config
        start = time.perf_counter()
        stopped = False
        last_val = None
        last_saved = time.monotonic()
        while self.iteration < cfg.iterations:
            stop = self.callbacks.should_stop is not None and self.callbacks.should_stop()
            if self.dist is not None:
                stop = distributed.any_rank(stop, self.device)  # all ranks stop at the same step
            if stop:
                stopped = True
                break
            losses = self.step()
            validation = None
            if self.iteration % self.val_every == 0 or self.iteration == cfg.iterations:
                validation = last_val = self.validate()
                self._remember_best(validation)
            record = {"iteration": self.iteration, **{k: round(v, 6) for k, v in losses.items()},
                      "elapsed_s": round(time.perf_counter() - start, 3)}
            if validation is not None:
                record["val_dice"] = validation["dice"]
                record["val_dice_by_domain"] = validation["dice_by_domain"]
            self.history.append(record)
            self._append_log(record)
            # after the record (a resumed run's history misses no iteration): at each validation, and
            # every resume_every_s of wall time, so that a kill or a lost node costs minutes, not the run
            periodic = cfg.resume_every_s > 0 and time.monotonic() - last_saved >= cfg.resume_every_s
            if validation is not None or periodic:
                self.save_resume_state()
                last_saved = time.monotonic()
            if self.callbacks.on_event is not None and self.is_main:
                self.callbacks.on_event(TrainEvent(self.iteration, cfg.iterations, losses, losses["lr"],
                                                   time.perf_counter() - start, validation))
        if self.dist is not None:
            self._record_replica_digests()
        if stopped:  # a stop (core/stopping.py) keeps the finished steps: resume state, then model
            self.save_resume_state()
        if not stopped or self.iteration > 0:  # no model of untrained weights
            self.save(stopped, last_val, time.perf_counter() - start)
        if not stopped:
            self._remove_resume_state()
        if self.dist is not None:
            distributed.barrier()  # no rank reports success before rank 0 has written the model
        return TrainResult(self.run_dir, self.iteration, stopped, self.history, last_val)

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
            if not self.is_main:  # only rank 0 writes the model
                return
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}

    # -- files -----------------------------------------------------------------------------------
    def _metadata(self, metrics: dict[str, Any] | None = None) -> ModelMetadata:
        if self.source_profile is None and any(self._train_samples.get(d) for d in self.domains):
            from .domain_fit import calibrate, profile_domains

            # once per run: the source domains' colour, 2D/3D, intensity and low-frequency style, and
            # the fit threshold from the source-validation cases only (never a target domain)
            samples = [s for d in self.domains for s in self._train_samples.get(d, ())]
            profile = profile_domains(samples, self.config.preprocess, self.config.method.window_ratio)
            self.source_profile = calibrate(profile, self.val_samples, self.config.preprocess)
        from .checkpoint import portable_command

        extra = dict(self.extra_metadata)
        for key in ("command", "resumed_with"):  # what was typed, without this machine's paths
            if isinstance(extra.get(key), str):
                extra[key] = portable_command(extra[key])
            elif isinstance(extra.get(key), list):
                extra[key] = [portable_command(c) if isinstance(c, str) else c for c in extra[key]]
        return ModelMetadata(self.config, self.domains, metrics or {}, extra, self.source_profile)

    def _append_log(self, record: dict[str, Any]) -> None:
        if self.run_dir is None or not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / LOG_NAME, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def _truncate_log(self, iteration: int) -> None:
        """Drop train.log lines past ``iteration``: they are trained again after a resume, and logged again."""
        if self.run_dir is None or not self.is_main or not (self.run_dir / LOG_NAME).exists():
            return
        kept = []
        for line in (self.run_dir / LOG_NAME).read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line)["iteration"]) <= iteration:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):  # a line cut short by a kill
                continue
        atomic_write(self.run_dir / LOG_NAME,
                           lambda tmp: tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8"))

    def save(self, stopped: bool, last_val: dict[str, Any] | None, elapsed: float) -> None:
        """Write the model: the best source-validation state if there was validation, else the last."""
        if self.run_dir is None or not self.is_main:
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
        }
        net_state = self.best_state if self.best_state is not None else None
        if net_state is not None:
            current = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self.net.load_state_dict(net_state)
        save_model(self.net, self._metadata(metrics), self.run_dir)
        if net_state is not None:
            self.net.load_state_dict(current)
        atomic_write_json(self.run_dir / METRICS_NAME, {**metrics, "history": self.history})

    def save_resume_state(self) -> None:
        """Write the resume state for the current iteration (format and rules: core/resume.py)."""
        resume.save_state(self)

    def _remove_resume_state(self) -> None:
        if self.run_dir is not None and self.is_main:
            resume.remove_state(self.run_dir)

    def load_resume_state(self) -> None:
        if self.run_dir is None:
            raise ValueError("resume needs a run folder")
        resume.load_state(self)
        self._truncate_log(self.iteration)
