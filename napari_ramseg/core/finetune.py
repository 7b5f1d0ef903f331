"""Learning from corrected masks: a NEW, versioned model from a base model and a corrections project.

What a fine-tune round does:

- Starts from the base model's weights and config, with the learning rate divided by 10 and the new
  iteration budget. The base model folder is only read, never written.
- Trains on the latest revision of every *training* case of the corrections project (its "final"
  mask). Held-out (validation) cases, fixed by the project's split, are never trained on and never used
  to pick a checkpoint: the last state is kept, and Dice on the held-out cases before and after the round
  is an honest estimate, comparable from round to round.
- Batches: the corrected cases form one extra pool "domain" (``corrections``) that fills half of every
  batch; the other half is balanced over the replayed source domains (``replay_root``, read through
  ``load_training_data`` with the base model's own train/val split, so replay sees only the base's
  training cases). Replay keeps the model from forgetting the source domains.
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

The work is a generator (:func:`iter_finetune`) that yields :class:`FinetuneEvent` progress; the napari
widget drives it from a ``thread_worker`` and the CLI through :func:`finetune`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import RamsegInputError
from .checkpoint import METADATA_NAME, ModelMetadata, atomic_write_json, load_model, resolve_model_path
from .config import LabelScheme, PreprocessConfig
from .corrections import SPLIT_RULE, CorrectionCase, CorrectionStore, file_sha256
from .data import Sample
from .device import resolve_device
from .infer import Predictor, labels_from_probabilities
from .metrics import dice_score, structure_masks
from .preprocess import to_model_channels, volume_to_slices_25d
from .sampling import SourcePool
from .train import LOG_NAME, METRICS_NAME, Trainer, validation_dice

__all__ = ["finetune", "iter_finetune", "finetune_from_cli", "FinetuneEvent", "FinetuneResult", "CorrectionPool",
           "next_version", "list_versions", "CORRECTIONS_DOMAIN", "LR_SCALE"]

CORRECTIONS_DOMAIN = "corrections"
LR_SCALE = 0.1  # fine-tuning learning rate = base learning rate x this
CORRECTION_SHARE = 0.5  # fraction of every batch drawn from the corrected cases when replaying
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


class CorrectionPool(SourcePool):
    """A SourcePool whose last domain holds the corrected cases and fills a fixed share of each batch."""

    def __init__(self, samples_by_domain: dict[str, Sequence], domains: Sequence[str], preprocess: PreprocessConfig,
                 scale_aug_p: float = 0.5, scale_aug_max: float = 1.5, seed: int = 0,
                 correction_share: float = CORRECTION_SHARE):
        if not domains or domains[-1] != CORRECTIONS_DOMAIN:
            raise ValueError(f"the last pool domain must be {CORRECTIONS_DOMAIN!r}")
        super().__init__(samples_by_domain, domains, preprocess, scale_aug_p, scale_aug_max, seed)
        self.correction_share = correction_share

    def batch_domains(self, batch: int) -> np.ndarray:
        sources = self.num_domains - 1
        if sources == 0:
            return np.zeros(batch, dtype=np.int64)
        n_corr = min(batch, max(1, round(batch * self.correction_share)))
        n_src = batch - n_corr
        src = [np.arange(sources)] * (n_src // sources) + [self.rng.permutation(sources)[: n_src % sources]]
        slots = np.concatenate(src + [np.full(n_corr, sources)])
        return np.sort(slots).astype(np.int64)


# ---------------------------------------------------------------------------------------- versions


def list_versions(out_root: str | Path) -> list[Path]:
    """Complete model versions ``vNNN`` in ``out_root``, oldest first."""
    root = Path(out_root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _VERSION.match(p.name))]
    return [p for _, p in sorted(found)]


def next_version(out_root: str | Path) -> str:
    """The next free version name: ``v001`` in an empty folder, else one more than the highest."""
    versions = list_versions(out_root)
    number = int(_VERSION.match(versions[-1].name).group(1)) + 1 if versions else 1
    return f"v{number:03d}"


# ------------------------------------------------------------------------------------------ samples


def case_samples(case: CorrectionCase, labels: LabelScheme, in_channels: int = 3,
                 domain: str = CORRECTIONS_DOMAIN) -> list[Sample]:
    """A corrected case as training samples (one per slice for a volume), with its "final" mask."""
    mask = np.asarray(case.final)
    if mask.size and int(mask.max()) > labels.num_classes:
        raise RamsegInputError(f"case {case.case_id}: the corrected mask uses label {int(mask.max())}, but the model "
                               f"has labels 1..{labels.num_classes} ({', '.join(labels.names)})")
    mask = mask.astype(np.uint8)
    try:
        if case.is_volume:
            slices = volume_to_slices_25d(case.image)
            return [Sample(slices[j], mask[j], domain, case.case_id, slice_index=j) for j in range(len(slices))]
        return [Sample(to_model_channels(case.image, in_channels), mask, domain, case.case_id)]
    except ValueError as exc:
        raise RamsegInputError(f"case {case.case_id}: {exc}") from None


def case_dice(predictor: Predictor, samples: Sequence[Sample], labels: LabelScheme) -> float:
    """Mean Dice over the label's structures for one case (all its slices together)."""
    preds, truths = [], []
    for sample in samples:
        probs = predictor.predict_prepared(torch.from_numpy(np.ascontiguousarray(sample.image, dtype=np.float32)))
        preds.append(labels_from_probabilities(probs, labels, predictor.threshold))
        truths.append(sample.mask)
    pred_masks, true_masks = structure_masks(np.stack(preds), labels), structure_masks(np.stack(truths), labels)
    return float(np.mean([dice_score(pred_masks[n], true_masks[n]) for n in labels.names]))


def _mean(values: dict[str, float]) -> float | None:
    return float(np.mean(list(values.values()))) if values else None


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _check_project_labels(store: CorrectionStore, case_ids: Sequence[str], labels: LabelScheme) -> None:
    for case_id in case_ids:
        saved = store.info(case_id).get("labels")
        if saved and tuple(saved.get("names", ())) != tuple(labels.names):
            raise RamsegInputError(
                f"case {case_id} was saved with labels {', '.join(saved['names'])}, but the model segments "
                f"{', '.join(labels.names)}; use a corrections project made with this kind of model", store.root)


# -------------------------------------------------------------------------------------- the round


def iter_finetune(base_model_path: str | Path, store: CorrectionStore, out_root: str | Path, iterations: int,
                  replay_root: str | Path | None = None, seed: int = 0, device: str = "auto", *,
                  should_stop: Callable[[], bool] | None = None, batch: int | None = None,
                  lr_scale: float = LR_SCALE, correction_share: float = CORRECTION_SHARE,
                  command: str = "") -> Generator[FinetuneEvent, None, FinetuneResult]:
    """Fine-tune as a generator of progress events; its return value is the :class:`FinetuneResult`."""
    if iterations < 1:
        raise ValueError("fine-tuning needs at least one iteration")
    stop = should_stop or (lambda: False)
    base_path = Path(base_model_path)
    out_root = Path(out_root)
    _, base_meta_path = resolve_model_path(base_path)
    yield FinetuneEvent("prepare", f"loading {base_path}")
    base_model, base = load_model(base_path, "cpu")
    init_state = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
    labels, in_channels = base.config.labels, base.config.model.in_channels
    parent = base.extra.get("finetune") or {}

    train_ids = store.latest_cases("train")
    val_ids = store.latest_cases("val")
    if not train_ids:
        raise RamsegInputError("no corrected training cases saved yet; save at least one correction first", store.root)
    _check_project_labels(store, train_ids + val_ids, labels)
    train_samples = [s for c in train_ids for s in case_samples(store.load(c), labels, in_channels)]
    val_samples = {c: case_samples(store.load(c), labels, in_channels) for c in val_ids}

    pool_samples: dict[str, list] = {}
    replay_info, replay_val = None, []
    if replay_root is not None:
        from .data import discover
        from .train_job import load_training_data

        yield FinetuneEvent("prepare", f"loading replay data from {replay_root}")
        available = discover(replay_root, "auto", labels=labels).domains
        chosen = [d for d in base.domains if d in available] or available
        data = load_training_data(Path(replay_root), "auto", chosen, None, labels,
                                  base.config.val_fraction, base.config.seed)
        pool_samples.update(data.train)
        replay_val = data.val
        replay_info = {"name": Path(replay_root).resolve().name, "sha256": data.description["sha256"],
                       "domains": data.domains,
                       "train_samples": {d: len(v) for d, v in data.train.items()}, "val_samples": len(data.val)}
    pool_samples[CORRECTIONS_DOMAIN] = train_samples

    method = dataclasses.replace(base.config.method, dsir=False)
    source_lr = float(parent.get("source_lr", base.config.lr))  # rounds do not compound the /10
    config = base.config.replace(iterations=iterations, lr=source_lr * lr_scale, seed=seed, device=device,
                                 method=method, val_every=0, batch=batch or base.config.batch, num_threads=0,
                                 sync_batchnorm=False)
    dev = resolve_device(device)

    # -- before ---------------------------------------------------------------------------------
    before: dict[str, float] = {}
    replay_before = None
    if val_samples or replay_val:
        yield FinetuneEvent("evaluate_before", f"scoring the base model on {len(val_samples)} held-out cases")
        predictor = Predictor(base_model, base, dev)
        for case_id, samples in val_samples.items():
            if stop():
                return FinetuneResult(None, None, None, True, train_cases=train_ids, val_cases=val_ids)
            before[case_id] = case_dice(predictor, samples, labels)
        if replay_val:
            replay_before = validation_dice(predictor, replay_val, labels)["dice"]
        del predictor
    before_dice = _mean(before)
    yield FinetuneEvent("evaluate_before", "held-out Dice before fine-tuning", dice=before_dice)
    del base_model

    # -- train ----------------------------------------------------------------------------------
    torch.manual_seed(seed)
    pool_domains = [d for d in pool_samples if d != CORRECTIONS_DOMAIN] + [CORRECTIONS_DOMAIN]
    pool = CorrectionPool(pool_samples, pool_domains, config.preprocess, config.scale_aug_p, config.scale_aug_max,
                          seed=seed, correction_share=correction_share)
    round_number = int(parent.get("round", 0)) + 1
    extra = {k: v for k, v in base.extra.items() if k not in ("finetune", "command")}
    extra["command"] = command
    trainer = Trainer(config, base.domains, {}, (), run_dir=None, extra_metadata=extra, init_state=init_state,
                      pool=pool)
    trainer.source_profile = base.source_profile  # the same source domains: the fit check stays as it was
    start = time.perf_counter()
    stopped = False
    for _ in range(iterations):
        if stop():
            stopped = True
            break
        losses = trainer.step()
        record = {"iteration": trainer.iteration, **{k: round(v, 6) for k, v in losses.items()},
                  "elapsed_s": round(time.perf_counter() - start, 3)}
        trainer.history.append(record)
        yield FinetuneEvent("train", iteration=trainer.iteration, total=iterations, losses=losses)
    if stopped or stop():
        return FinetuneResult(None, before_dice, None, True, round=round_number, train_cases=train_ids,
                              val_cases=val_ids, history=trainer.history)
    elapsed = time.perf_counter() - start

    # -- after ----------------------------------------------------------------------------------
    after: dict[str, float] = {}
    replay_after = None
    if val_samples or replay_val:
        yield FinetuneEvent("evaluate_after", f"scoring the fine-tuned model on {len(val_samples)} held-out cases")
        predictor = Predictor(trainer.net, ModelMetadata(config, base.domains), trainer.device)
        for case_id, samples in val_samples.items():
            if stop():
                return FinetuneResult(None, before_dice, None, True, round=round_number, train_cases=train_ids,
                                      val_cases=val_ids, history=trainer.history)
            after[case_id] = case_dice(predictor, samples, labels)
        if replay_val:
            replay_after = validation_dice(predictor, replay_val, labels)["dice"]
    after_dice = _mean(after)
    yield FinetuneEvent("evaluate_after", "held-out Dice after fine-tuning", dice=after_dice)

    # -- write ----------------------------------------------------------------------------------
    finetune_record: dict[str, Any] = {
        "parent_model": str(base_path.resolve()),
        "parent_model_json_sha256": file_sha256(base_meta_path),
        "parent_version": parent.get("version"),
        "lineage": list(parent.get("lineage", [])) + [str(base_path.resolve())],
        "round": round_number,
        "version": None,
        "corrections_project": str(store.root.resolve()),
        "cases_train": train_ids,
        "cases_val": val_ids,
        "split_rule": SPLIT_RULE,
        "before_dice": before_dice,
        "after_dice": after_dice,
        "dice_by_case": {c: {"before": before.get(c), "after": after.get(c)} for c in val_ids},
        "replay": replay_info,
        "replay_source_dice": None if replay_info is None else {"before": replay_before, "after": replay_after},
        "dsir": "off", "why_dsir_off": WHY_DSIR_OFF,
        "correction_share": correction_share if replay_info else 1.0,
        "lr": config.lr, "lr_scale": lr_scale, "source_lr": source_lr, "iterations": iterations, "seed": seed,
        "finished_at": _utc_now(),
    }
    yield FinetuneEvent("write", "writing the new model version")
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_PARTIAL_PREFIX, dir=out_root))
    try:
        trainer.run_dir = tmp
        # model.json keeps the base's method switches: "dsir" says whether the restoration decoder is trained
        # (it is, unchanged, when the base had it); the round's own recipe goes into the "finetune" record.
        trainer.config = config.replace(method=base.config.method)
        trainer.save(False, None, elapsed)
        heldout = {"before_dice": before_dice, "after_dice": after_dice, "cases": len(val_ids)}
        metrics = json.loads((tmp / METRICS_NAME).read_text(encoding="utf-8"))
        metrics["heldout_corrections"] = heldout
        atomic_write_json(tmp / METRICS_NAME, _finite(metrics))
        with open(tmp / LOG_NAME, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in trainer.history)
        while True:
            version = next_version(out_root)
            target = out_root / version
            finetune_record["version"] = version
            meta = json.loads((tmp / METADATA_NAME).read_text(encoding="utf-8"))
            meta["metrics"]["heldout_corrections"] = heldout
            meta["finetune"] = finetune_record
            atomic_write_json(tmp / METADATA_NAME, _finite(meta))
            if target.exists():
                continue
            try:
                os.rename(tmp, target)
                break
            except OSError:
                if not target.exists():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    yield FinetuneEvent("done", f"wrote {target}", dice=after_dice)
    return FinetuneResult(target, before_dice, after_dice, False, version, round_number, train_ids, val_ids,
                          trainer.history)


def _finite(obj: Any) -> Any:
    """NaN/Inf -> None, so the metadata stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def finetune(base_model_path: str | Path, store: CorrectionStore, out_root: str | Path, iterations: int,
             replay_root: str | Path | None = None, seed: int = 0, device: str = "auto",
             on_event: Callable[[FinetuneEvent], None] | None = None,
             should_stop: Callable[[], bool] | None = None, **kwargs: Any) -> FinetuneResult:
    """Learn from the project's corrected training cases and write ``<out_root>/vNNN`` (see module doc)."""
    gen = iter_finetune(base_model_path, store, out_root, iterations, replay_root, seed, device,
                        should_stop=should_stop, **kwargs)
    while True:
        try:
            event = next(gen)
        except StopIteration as done:
            return done.value
        if on_event is not None:
            on_event(event)


# ------------------------------------------------------------------------------------------- CLI


def import_corrections(store: CorrectionStore, model_path: str | Path, images: Sequence[Path], masks: Sequence[Path],
                       device: str = "auto") -> tuple[list[str], int]:
    """Save image/mask file pairs into ``store`` with the model's prediction as "original".

    Returns (new case ids, pairs skipped because the latest saved revision already has that mask).
    """
    from ..io import read_image, read_mask
    from .data import convert_mask
    from .checkpoint import load_metadata

    if len(images) != len(masks):
        raise RamsegInputError(f"{len(images)} images but {len(masks)} label files; give one mask per image, in the same order")
    labels = load_metadata(model_path).config.labels
    predictor = None
    added, unchanged = [], 0
    for image_path, mask_path in zip(images, masks):
        data = read_image(image_path)
        raw = read_mask(mask_path)
        if tuple(raw.shape) != tuple(data.spatial_shape):
            raise RamsegInputError(f"mask shape {tuple(raw.shape)} does not match image {image_path} "
                                   f"shape {tuple(data.spatial_shape)}", mask_path)
        final = convert_mask(raw, "domains", labels, mask_path)
        previous = store.find_image(_stored_image(data.array))
        if previous and np.array_equal(store.load(previous[-1]).final, final):
            unchanged += 1
            continue
        if predictor is None:
            predictor = Predictor.from_path(model_path, device=device)
        original = predictor.predict(data.array, is_volume=data.is_volume).labels
        meta = {"source": str(Path(image_path).resolve()), "mask_source": str(Path(mask_path).resolve()),
                "affine": data.affine, "spacing": data.spacing}
        from ..io import stem_of

        added.append(store.save(data.array, original, final, model_path, stem_of(image_path), meta))
    return added, unchanged


def _stored_image(array: np.ndarray) -> np.ndarray:
    """The array as the store keeps it (alpha dropped), so revisions of one image are recognised."""
    return array[..., :3] if array.ndim == 3 and array.shape[-1] == 4 else array


def finetune_from_cli(args: Any) -> int:
    """``ramseg finetune``: corrections from --project or --images/--labels, then a new version in --out."""
    from ..models import resolve_model

    model = resolve_model(args.model)
    resolve_model_path(model)
    images, masks = args.images or [], args.labels or []
    if bool(images) != bool(masks):
        raise RamsegInputError("give --images and --labels together (one mask per image, same order)")
    if not images and args.project is None:
        raise RamsegInputError("nothing to learn from: give --project DIR (saved by the napari widget) "
                               "or --images ... --labels ...")
    if args.iterations < 1:
        raise ValueError("--iterations must be at least 1")
    store = CorrectionStore(args.project if args.project is not None else Path(args.out) / "corrections")
    if images:
        added, unchanged = import_corrections(store, model, images, masks, args.device)
        _stderr(f"saved {len(added)} corrected case(s) in {store.root}" + (f" ({unchanged} unchanged)" if unchanged else ""))
    if not store.list_cases():
        raise RamsegInputError("no corrected cases saved in this project", store.root)

    from tqdm import tqdm

    bar = None

    def on_event(event: FinetuneEvent) -> None:
        nonlocal bar
        if event.phase == "train":
            if bar is None:
                bar = tqdm(total=event.total, desc="finetune", unit="it", dynamic_ncols=True, file=sys.stderr)
            bar.update(1)
            bar.set_postfix({"loss": f"{event.losses['loss']:.3f}"}, refresh=False)
        elif event.message and event.phase != "done":
            _stderr(event.message + ("" if event.dice is None else f": {event.dice:.4f}"))

    command = " ".join(["ramseg", *sys.argv[1:]])
    try:
        result = finetune(model, store, args.out, args.iterations, args.replay, args.seed, args.device,
                          on_event=on_event, command=command)
    finally:
        if bar is not None:
            bar.close()
    if result.model_dir is None:
        _stderr("fine-tuning stopped; no new model was written")
        return 1
    line = (f"wrote {result.model_dir} (round {result.round}, {len(result.train_cases)} training case(s), "
            f"{len(result.val_cases)} held out)")
    if result.before_dice is not None:
        line += f"; held-out Dice {result.before_dice:.4f} -> {result.after_dice:.4f}"
    _stderr(line)
    print(result.model_dir)
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)
