"""Learning from corrected masks: a NEW, versioned model from a base model and a corrections project.

What a fine-tune round does:

- Starts from the base model's weights and config, with the source learning rate times
  ``FinetuneConfig.lr_scale`` and the new iteration budget. The base model folder is only read, never written.
- Trains on the latest revision of every *training* case of the corrections project (its "final"
  mask). Held-out (validation) cases, fixed by the project's split, are never trained on and never used
  to pick a checkpoint: the last state is kept, and Dice on the held-out cases before and after the round
  is an honest estimate, comparable from round to round.
- Batches: the corrected cases form one extra pool "domain" (``corrections``) that fills
  ``correction_share`` of every batch; the rest is balanced over the replayed source domains
  (``replay_root``, read through ``load_training_data`` with the base model's own train/val split, so
  replay sees only the base's training cases). Replay keeps the model from forgetting the source domains. An optic disc model
  learns from the disc-centred ROIs of each corrected fundus image, cut as its training ROIs were, and
  its held-out corrections are scored through the two stages on the whole image
  (``core/finetune/data.py``, ``core/tasks/disc/corrections.py``).
- RAM stays on: a partner is drawn from another pool domain, so corrected images are trained with
  source-domain styles and source images with the new site's style (without replay, partners come from
  the corrections themselves). Consistency follows the base config.
- DSIR is OFF during fine-tuning. Its decoder has one BatchNorm per *source* domain; corrected cases come
  from a deployment site that is none of them, so restoring them through a source domain's BatchNorm
  would corrupt that domain's statistics (and the Restoration preview), and adding a domain would change
  the architecture. The restoration decoder is not used for segmentation, and a round of a few hundred
  steps on a handful of cases gains little from its regularisation. Its weights and statistics are
  carried over unchanged, so the Restoration preview still works on the new model.
- Output: ``<out_root>/v001``, ``v002``, ... (the next free number). The model is written into a hidden
  temporary folder inside ``out_root`` and renamed into place only when complete, so a stopped or
  failed round leaves no version folder and no temporary folder. ``model.json`` records the parent
  model (path, model.json SHA-256, version), the round number, the cases used, the split rule and the
  before/after Dice on the held-out corrected cases.

The work is a generator (:func:`iter_finetune`) that yields :class:`FinetuneEvent` progress; it drives the
one training loop (``Trainer.iter_run``). The napari widget drives it from a ``thread_worker`` and
``ramseg finetune`` through ``core/finetune/job.py`` (corrections from files, then :func:`finetune`).
The round's own defaults are ``config.FinetuneConfig``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import re
import shutil
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import RamsegInputError
from ...files import file_sha256, json_safe, temporary_folder
from ..models.checkpoint import ModelMetadata, load_model, resolve_model_path
from ..config import FinetuneConfig
from ..labels import LabelScheme
from ..data.dataset import discover
from ..device import resolve_device
from ..evaluation.evaluate import validation_dice
from ..events import drive, relay
from ..inference.adapt.target_style import load_style_images
from ..inference.predictor import Predictor
from ..options import check_settings
from ..tasks import task_for
from ..training.job import load_training_data
from ..training.trainer import TrainCallbacks, Trainer, TrainResult
from .corrections import SPLIT_RULE, CorrectionStore
from .data import CORRECTIONS_DOMAIN, CorrectionPool, case_samples, check_project_labels, score_heldout

__all__ = ["finetune", "iter_finetune", "FinetuneEvent", "FinetuneResult", "CorrectionPool",
           "next_version", "list_versions", "CORRECTIONS_DOMAIN", "LR_SCALE"]

LR_SCALE = FinetuneConfig().lr_scale  # fine-tuning learning rate = base learning rate x this
_VERSION = re.compile(r"^v(\d{3,})$")
_PARTIAL_PREFIX = ".partial-"
WHY_DSIR_OFF = ("the restoration decoder has one BatchNorm per source domain and corrected cases come from none "
                "of them; it is kept unchanged")


@dataclass
class FinetuneEvent:
    """Progress: ``phase`` is prepare, evaluate_before, train, evaluate_after, write or done."""

    phase: str
    message: str = ""
    iteration: int = 0
    total: int = 0
    losses: dict[str, float] | None = None
    dice: float | None = None


@dataclass
class FinetuneResult:
    """``model_dir`` is None when the round was stopped; Dice is None without held-out cases."""

    model_dir: Path | None
    before_dice: float | None
    after_dice: float | None
    stopped: bool
    version: str | None = None
    round: int = 0
    train_cases: list[str] = field(default_factory=list)
    val_cases: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def worse(self) -> bool:
        """True when the new version scores lower than its parent on the held-out corrected cases: the
        dock then keeps the parent selected and says so, and ``ramseg finetune`` warns."""
        return self.before_dice is not None and self.after_dice is not None and self.after_dice < self.before_dice


# ---------------------------------------------------------------------------------------- versions


def list_versions(out_root: str | Path) -> list[Path]:
    """Complete model versions ``vNNN`` in ``out_root``, oldest first."""
    root = Path(out_root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _VERSION.match(p.name))]
    return [p for _, p in sorted(found)]


def next_version(out_root: str | Path) -> str:
    """The next free version name: ``v001`` in an empty folder, else one more than the highest name
    taken, by a version or by anything else (a file ``v002`` would otherwise be chosen forever)."""
    root = Path(out_root)
    taken = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION.match(p.name))] if root.is_dir() else []
    return f"v{max(taken, default=0) + 1:03d}"


def _mean(values: dict[str, float]) -> float | None:
    return float(np.mean(list(values.values()))) if values else None


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# -------------------------------------------------------------------------------------- the round


def _replay_data(root: Path, base: ModelMetadata) -> tuple[dict[str, list], list, dict[str, Any]]:
    """The base's source domains found under ``root`` (all of them when none matches), at the working scale
    as each sample is read: (training samples by domain, validation samples, what model.json records)."""
    labels = base.config.labels
    available = discover(root, "auto", labels=labels).domains
    chosen = [d for d in base.domains if d in available] or available
    # shrunk as read: a full-size source set (HRF's 3504 x 2336 photographs) would otherwise sit in
    # memory at full size and be resized at every draw
    data = load_training_data(root, "auto", chosen, None, labels, base.config.val_fraction, base.config.seed,
                              base.config.preprocess)
    info = {"name": root.resolve().name, "sha256": data.description["sha256"], "domains": data.domains,
            "train_samples": {d: len(v) for d, v in data.train.items()}, "val_samples": len(data.val)}
    return dict(data.train), data.val, info


def _score_heldout_set(predictor: Predictor, val_cases: dict[str, Any], replay_val: list, labels: LabelScheme,
                       in_channels: int, stop: Callable[[], bool]) -> tuple[dict[str, float], float | None] | None:
    """Each held-out correction's Dice and the replay sources' validation Dice, the same path before and
    after a round; None when a stop was asked for on the way."""
    scores: dict[str, float] = {}
    for case_id, case in val_cases.items():
        if stop():
            return None
        scores[case_id] = score_heldout(predictor, case, labels, in_channels)
    return scores, validation_dice(predictor, replay_val, labels)["dice"] if replay_val else None


def _write_version(trainer: Trainer, out_root: Path, record: dict[str, Any], heldout: dict[str, Any],
                   seconds: float) -> Path:
    """The round's model as the next free version folder of ``out_root``, never half-written: saved into a
    temporary folder, renamed into place (the name is in model.json, so it is saved again if taken)."""
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(out_root, _PARTIAL_PREFIX)  # the user's umask, not mkdtemp's drwx------
    try:
        trainer.run_dir = tmp
        trainer.folder.write_log(trainer.history)
        while True:
            version = next_version(out_root)
            target = out_root / version
            record["version"] = version
            trainer.extra_metadata["finetune"] = json_safe(record)
            trainer.save(False, None, seconds, extra_metrics={"heldout_corrections": heldout})
            if target.exists():
                continue
            try:
                os.rename(tmp, target)
                return target
            except OSError:
                if not target.exists():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _round_trainer(config: Any, base: ModelMetadata, init_state: dict, pool: CorrectionPool,
                   stop: Callable[[], bool], command: str, freeze: str) -> Trainer:
    """The round's Trainer: the base's weights, the pool of corrections (and replay), no run folder while
    training (a round is written only when complete) and no validation cases (the held-out corrections
    are scored before and after instead); what the base chose for its sources stays as it was."""
    extra = {k: v for k, v in base.extra.items() if k not in ("finetune", "command")}
    extra["command"] = command
    trainer = Trainer(config, base.domains, {}, (), run_dir=None, callbacks=TrainCallbacks(should_stop=stop),
                      extra_metadata=extra, init_state=init_state, pool=pool)
    trainer.source_profile = base.source_profile  # the same source domains: the fit check stays as it was
    trainer.disc_settings = base.disc  # the locator's settings were chosen for these sources, not the corrections
    trainer.adapt_settings = base.adapt  # so were the adaptation settings
    if freeze == "encoder":
        # no gradient reaches the encoder, so backward stops at the decoder: a cheaper step, and the
        # features the sources taught stay as they were (its BatchNorm statistics still follow the batches)
        trainer.net.encoder.requires_grad_(False)
    return trainer


def _corrected_cases(store: CorrectionStore, labels: LabelScheme, in_channels: int,
                     seed: int) -> tuple[list[str], list[str], list, str]:
    """The project's latest training and held-out case ids, the training samples they make (an optic
    disc model's ROIs, say) and the task's note on them; refused when there is nothing to learn from."""
    train_ids = store.latest_cases("train")
    val_ids = store.latest_cases("val")
    if not train_ids:
        raise RamsegInputError("no corrected training cases saved yet; save at least one correction first", store.root)
    check_project_labels(store, train_ids + val_ids, labels)
    rois = np.random.default_rng(seed)  # an optic disc model's training ROIs' jitter
    by_case = {c: case_samples(store.load(c), labels, in_channels, rng=rois) for c in train_ids}
    train_samples = [s for samples in by_case.values() for s in samples]
    if not train_samples:
        raise RamsegInputError("none of the corrected training cases draws an optic disc; a disc-centred ROI to "
                               "learn from needs one", store.root)
    return train_ids, val_ids, train_samples, task_for(labels).samples_note(by_case)


def _round_config(base: ModelMetadata, settings: FinetuneConfig, parent: dict[str, Any],
                  target_style: bool) -> tuple[Any, float]:
    """The round's training config and the source learning rate it scales: the base's, with DSIR off
    (see the module doc), RAM and consistency on for target-style RAM, no validation."""
    method = dataclasses.replace(base.config.method, dsir=False)
    if target_style:
        method = dataclasses.replace(method, ram=True, consistency=True)
    source_lr = float(parent.get("source_lr", base.config.lr))  # rounds do not compound the /10
    config = base.config.replace(iterations=settings.iterations, lr=source_lr * settings.lr_scale, seed=settings.seed,
                                 device=settings.device, method=method, val_every=0,
                                 batch=settings.batch or base.config.batch, num_threads=0, sync_batchnorm=False,
                                 precision=settings.precision)
    return config, source_lr


def _scoring_phase(phase: str, whose: str, predictor: Callable[[], Predictor], val_cases: dict[str, Any],
                   replay_val: list, labels: LabelScheme, in_channels: int, stop: Callable[[], bool]
                   ) -> Generator[FinetuneEvent, None, tuple[dict[str, float], float | None] | None]:
    """Score ``whose`` model before or after the round (see :func:`_score_heldout_set`); nothing to score
    without held-out cases or replay validation; None when stopped."""
    if not (val_cases or replay_val):
        return {}, None
    yield FinetuneEvent(phase, f"scoring {whose} on {len(val_cases)} held-out cases")
    return _score_heldout_set(predictor(), val_cases, replay_val, labels, in_channels, stop)


def _training_events(trainer: Trainer) -> Generator[FinetuneEvent, None, TrainResult]:
    """The round's training steps as progress events; returns the Trainer's result."""
    return (yield from relay(trainer.iter_run(), lambda event: FinetuneEvent(
        "train", iteration=event.iteration, total=event.total, losses=event.losses)))


def _lineage_record(base_path: Path, base_meta_path: Path, parent: dict[str, Any], round_number: int) -> dict:
    """Where the new version comes from: its parent model and the parents before it."""
    return {"parent_model": str(base_path.resolve()), "parent_model_json_sha256": file_sha256(base_meta_path),
            "parent_version": parent.get("version"),
            "lineage": list(parent.get("lineage", [])) + [str(base_path.resolve())],
            "round": round_number, "version": None}


def _scores_record(val_ids: list[str], before: tuple[dict[str, float], float | None],
                   after: tuple[dict[str, float], float | None], replay_info: dict[str, Any] | None) -> dict:
    """The held-out Dice before and after the round (mean and per case), and the replay sources'."""
    return {"before_dice": _mean(before[0]), "after_dice": _mean(after[0]),
            "dice_by_case": {c: {"before": before[0].get(c), "after": after[0].get(c)} for c in val_ids},
            "replay": replay_info,
            "replay_source_dice": None if replay_info is None else {"before": before[1], "after": after[1]}}


def _recipe_record(config: Any, settings: FinetuneConfig, source_lr: float, replay_info: dict[str, Any] | None,
                   style_info: dict[str, Any] | None) -> dict:
    """How the round trained."""
    return {"dsir": "off", "why_dsir_off": WHY_DSIR_OFF,
            "correction_share": settings.correction_share if replay_info else 1.0,
            "lr": config.lr, "lr_scale": settings.lr_scale, "source_lr": source_lr,
            "iterations": settings.iterations, "seed": settings.seed, "batch": config.batch,
            "freeze": settings.freeze, "target_style": style_info}


def iter_finetune(base_model_path: str | Path, store: CorrectionStore, out_root: str | Path,
                  settings: FinetuneConfig = FinetuneConfig(), replay_root: str | Path | None = None, *,
                  should_stop: Callable[[], bool] | None = None, command: str = "",
                  target_style: str | Path | None = None) -> Generator[FinetuneEvent, None, FinetuneResult]:
    """Fine-tune as a generator of progress events; its return value is the :class:`FinetuneResult`.

    ``settings``: the round's own settings (iterations, seed, device, learning rate scale, ...; checked
    against their declared bounds). ``target_style``: a folder of unlabelled scans of the new site; they
    supply RAM partner amplitudes (``settings.target_style_share`` of them) next to the source domains,
    with the consistency loss on the images mixed with them ("target-style RAM"; RAM and consistency are
    switched on for the round)."""
    check_settings(settings)
    stop = should_stop or (lambda: False)
    base_path, out_root = Path(base_model_path), Path(out_root)
    _, base_meta_path = resolve_model_path(base_path)
    yield FinetuneEvent("prepare", f"loading {base_path}")
    base_model, base = load_model(base_path, "cpu")
    init_state = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
    labels, in_channels = base.config.labels, base.config.model.in_channels
    parent = base.extra.get("finetune") or {}
    train_ids, val_ids, train_samples, note = _corrected_cases(store, labels, in_channels, settings.seed)
    if note:  # what the round learns from: the disc's ROIs, say
        yield FinetuneEvent("prepare", note)
    val_cases = {c: store.load(c) for c in val_ids}
    pool_samples: dict[str, list] = {}
    replay_info, replay_val = None, []
    if replay_root is not None:
        yield FinetuneEvent("prepare", f"loading replay data from {replay_root}")
        pool_samples, replay_val, replay_info = _replay_data(Path(replay_root), base)
    pool_samples[CORRECTIONS_DOMAIN] = train_samples
    style_images, style_info = [], None
    if target_style is not None:
        yield FinetuneEvent("prepare", f"loading unlabelled scans of the new site from {target_style}")
        style_images, style_info = load_style_images(target_style, in_channels)
        style_info["share"] = float(settings.target_style_share)
    config, source_lr = _round_config(base, settings, parent, target_style=target_style is not None)
    dev = resolve_device(settings.device)
    score = (val_cases, replay_val, labels, in_channels, stop)

    before = yield from _scoring_phase("evaluate_before", "the base model", lambda: Predictor(base_model, base, dev),
                                       *score)
    if before is None:
        return FinetuneResult(None, None, None, True, train_cases=train_ids, val_cases=val_ids)
    yield FinetuneEvent("evaluate_before", "held-out Dice before fine-tuning", dice=_mean(before[0]))
    del base_model

    torch.manual_seed(settings.seed)
    pool_domains = [d for d in pool_samples if d != CORRECTIONS_DOMAIN] + [CORRECTIONS_DOMAIN]
    pool = CorrectionPool(pool_samples, pool_domains, config.preprocess, config.scale_aug_p, config.scale_aug_max,
                          seed=settings.seed, correction_share=settings.correction_share)
    if style_images:
        pool.set_style_images(style_images, settings.target_style_share)
    round_number = int(parent.get("round", 0)) + 1
    trainer = _round_trainer(config, base, init_state, pool, stop, command, settings.freeze)
    trained = yield from _training_events(trainer)
    # the base's two-stage settings, so that before and after are the same path
    after = None if trained.stopped or stop() else (yield from _scoring_phase(
        "evaluate_after", "the fine-tuned model",
        lambda: Predictor(trainer.net, ModelMetadata(config, base.domains, disc=base.disc), trainer.device), *score))
    if after is None:
        return FinetuneResult(None, _mean(before[0]), None, True, round=round_number, train_cases=train_ids,
                              val_cases=val_ids, history=trainer.history)
    yield FinetuneEvent("evaluate_after", "held-out Dice after fine-tuning", dice=_mean(after[0]))

    record = {**_lineage_record(base_path, base_meta_path, parent, round_number),
              "corrections_project": str(store.root.resolve()), "cases_train": train_ids, "cases_val": val_ids,
              "split_rule": SPLIT_RULE, **_scores_record(val_ids, before, after, replay_info),
              **_recipe_record(config, settings, source_lr, replay_info, style_info), "finished_at": _utc_now()}
    yield FinetuneEvent("write", "writing the new model version")
    # model.json keeps the base's method switches: "dsir" says whether the restoration decoder is trained
    # (it is, unchanged, when the base had it); the round's own recipe goes into the "finetune" record.
    trainer.config = config.replace(method=base.config.method)
    before_dice, after_dice = record["before_dice"], record["after_dice"]
    heldout = json_safe({"before_dice": before_dice, "after_dice": after_dice, "cases": len(val_ids)})
    target = _write_version(trainer, out_root, record, heldout, trained.seconds)
    yield FinetuneEvent("done", f"wrote {target}", dice=after_dice)
    return FinetuneResult(target, before_dice, after_dice, False, target.name, round_number, train_ids, val_ids,
                          trainer.history)


def finetune(base_model_path: str | Path, store: CorrectionStore, out_root: str | Path,
             settings: FinetuneConfig = FinetuneConfig(), replay_root: str | Path | None = None, *,
             on_event: Callable[[FinetuneEvent], None] | None = None,
             should_stop: Callable[[], bool] | None = None, **kwargs: Any) -> FinetuneResult:
    """Learn from the project's corrected training cases and write ``<out_root>/vNNN`` (see module doc);
    ``kwargs``: :func:`iter_finetune`'s ``command`` and ``target_style``."""
    return drive(iter_finetune(base_model_path, store, out_root, settings, replay_root, should_stop=should_stop,
                               **kwargs), on_event)
