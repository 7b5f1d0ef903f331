"""Score a model on every labelled case of one domain: Dice, HD95 and ASD per case and per label.

BatchNorm stays in eval mode (the Predictor's), and every slice of a volume is predicted: no
ground-truth-guided slice selection. Distances are in physical units when the file gives a spacing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import RamsegInputError, naming
from ..labels import LabelScheme
from ..data.dataset import MaskLabelsError, declared_labels, discover, read_case_image, read_case_mask
from ..inference.predictor import Predictor, labels_from_probabilities
from .metrics import case_dice, case_metrics, mean_dice, summarize


def evaluate_domain(model: str | Path | Predictor, data_root: str | Path, domain: str, fmt: str = "auto",
                    split: str | None = None, postprocess: bool = False, device: str = "auto",
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """``{"summary": {label: {dice, hd95, asd}}, "cases": [...], "mean_dice": ...}`` for one domain.

    ``model`` may also be anything with a Predictor's ``predict``, ``labels`` and ``threshold``, such as
    a ``core.inference.adapt.AdaptedPredictor`` (test-time adaptation, one adaptation per case)."""
    predictor = Predictor.from_path(model, device=device) if isinstance(model, (str, Path)) else model
    labels = predictor.labels
    dataset = discover(data_root, fmt, [domain], labels=labels, split=split)
    _check_labels_fit(labels, dataset.root, dataset.format)
    cases = []
    for index, case in enumerate(dataset.cases):
        image = read_case_image(case)
        try:
            truth = read_case_mask(case, labels)
        except MaskLabelsError as exc:
            raise RamsegInputError(f"{exc.problem}; the model's labels do not fit these masks", exc.path) from None
        with naming(case.image):
            prediction = predictor.predict(image.array, postprocess=postprocess, is_volume=image.is_volume)
        if truth.shape != prediction.labels.shape:
            raise RamsegInputError(
                f"mask shape {truth.shape} differs from image shape {prediction.labels.shape} ({case.image.name})",
                case.mask)
        spacing = image.spacing if image.spacing is not None and len(image.spacing) == truth.ndim else None
        cases.append({"case": case.name, "domain": case.domain, "spacing": list(spacing) if spacing else None,
                      **case_metrics(prediction.labels, truth, labels, spacing)})
        if progress is not None:
            progress(index + 1, len(dataset.cases))
    summary = summarize([{name: c[name] for name in labels.names} for c in cases])
    return {
        "summary": summary,
        "mean_dice": mean_dice(summary),
        "cases": cases,
        "domain": domain,
        "format": dataset.format,
        "postprocess": postprocess,
        "threshold": predictor.threshold,
        "units": "physical (file spacing)" if any(c["spacing"] for c in cases) else "pixels",
    }


def _check_labels_fit(labels: LabelScheme, root: Path, fmt: str) -> None:
    """Refuse a model whose number of labels differs from what the dataset declares it holds."""
    declared = declared_labels(root, fmt)
    if declared is None:
        return  # a plain domains dataset: convert_mask checks each mask's values against the model
    scheme, source = declared
    if scheme.num_classes != labels.num_classes:
        raise RamsegInputError(
            f"the model predicts {labels.num_classes} label(s) ({', '.join(labels.names)}) but this dataset's masks "
            f"hold {scheme.num_classes} ({', '.join(scheme.names)}, per {source}); evaluate a model trained for "
            "these labels", root)


# ---------------------------------------------- held-out source cases (validation, fine-tuning)
def score_case(predictor: Predictor, samples: Sequence, labels: LabelScheme,
               names: Sequence[str] | None = None) -> float:
    """Predict one held-out case (its samples: one image, or a volume's slices) and score it
    (``metrics.case_dice``: the mean Dice over the label's structures, or over ``names``: those its
    domain annotates)."""
    preds = []
    for s in samples:
        probs = predictor.predict_prepared(torch.from_numpy(np.ascontiguousarray(s.image, dtype=np.float32)))
        preds.append(labels_from_probabilities(probs, labels, predictor.threshold))
    return case_dice(np.stack(preds), np.stack([s.mask for s in samples]), labels, names)


def validation_dice(predictor: Predictor, samples: Sequence, labels: LabelScheme,
                    annotated: dict[str, Sequence[str]] | None = None,
                    share: tuple[int, int, Callable[[Any], list[Any]]] | None = None) -> dict[str, Any]:
    """Mean Dice per label and per source domain on held-out source cases (never the target);
    ``annotated``: per domain, the structures it annotates (partial labels), default all.

    ``share``: ``(part, parts, gather)`` when ``parts`` processes score the cases together (the ranks of a
    DDP run): this one scores every ``parts``-th case from ``part``, ``gather``
    (``training.distributed.gather_objects``) brings every part's scores to every process, and each gets
    the result of all the cases in their single-process order."""
    annotated = annotated or {}
    part, parts, gather = share or (0, 1, None)
    mine = [(i, s.domain, score_case(predictor, [s], labels, annotated.get(s.domain)))
            for i, s in enumerate(samples) if i % parts == part]
    records = mine if gather is None else sorted(r for piece in gather(mine) for r in piece)
    return summarize_validation([(domain, dice) for _, domain, dice in records])


def summarize_validation(records: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """(domain, case Dice) pairs in case order -> the mean of the per-domain means, and each domain's."""
    per_domain: dict[str, list[float]] = {}
    for domain, dice in records:
        per_domain.setdefault(domain, []).append(dice)
    by_domain = {d: float(np.mean(v)) for d, v in per_domain.items()}
    mean = float(np.mean(list(by_domain.values()))) if by_domain else float("nan")
    return {"dice": mean, "dice_by_domain": by_domain, "cases": len(records)}
