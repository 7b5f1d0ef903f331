"""From corrected masks on disk to a new model version: what ``ramseg finetune`` asks of the engine.

Corrections come from a project folder (saved by the Correct and fine-tune dock) or from image/mask
file pairs, which are first saved into a project (``<out>/corrections`` unless one is given), with the
model's own prediction as each case's "original". Then one round of :func:`core.finetune.round.finetune`.
Progress and messages leave through callbacks; the terminal (progress bar, printing) is ``cli.py``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RamsegInputError
from ..config import FinetuneConfig
from ..data.dataset import convert_mask
from ..inference.predictor import Predictor
from ..models.checkpoint import load_metadata
from .corrections import CorrectionStore
from .round import FinetuneEvent, FinetuneResult, finetune

__all__ = ["finetune_from_files", "import_corrections"]

def finetune_from_files(model: str | Path, out: str | Path, settings: FinetuneConfig | None = None, *,
                        project: str | Path | None = None, images: Sequence[Path] = (), masks: Sequence[Path] = (),
                        replay: str | Path | None = None, target_style: str | Path | None = None,
                        command: str = "", on_event: Callable[[FinetuneEvent], None] | None = None,
                        log: Callable[[str], None] | None = None,
                        should_stop: Callable[[], bool] | None = None, **changes: Any) -> FinetuneResult:
    """Save ``images``/``masks`` pairs (if any) into the project, then fine-tune ``model`` on the
    project's corrected cases into ``<out>/vNNN``. ``model`` is a model folder or file (a bundled
    model's name is resolved by the caller, ``models.resolve_model``). ``settings``: the round's
    ``FinetuneConfig`` (its defaults when None); ``changes``: fields of it to change (``iterations=10``)."""
    settings = dataclasses.replace(settings or FinetuneConfig(), **changes)
    store = CorrectionStore(project if project is not None else Path(out) / "corrections")
    if images or masks:
        added, unchanged = import_corrections(store, model, images, masks, settings.device)
        if log is not None:
            log(f"saved {len(added)} corrected case(s) in {store.root}"
                + (f" ({unchanged} unchanged)" if unchanged else ""))
    if not store.list_cases():
        raise RamsegInputError("no corrected cases saved in this project", store.root)
    return finetune(model, store, out, settings, replay, on_event=on_event, should_stop=should_stop,
                    command=command, target_style=target_style)


def import_corrections(store: CorrectionStore, model_path: str | Path, images: Sequence[Path], masks: Sequence[Path],
                       device: str = FinetuneConfig().device) -> tuple[list[str], int]:
    """Save image/mask file pairs into ``store`` with the model's prediction as "original".

    Returns (new case ids, pairs skipped because the latest saved revision already has that mask).
    """
    from ...io import read_image, read_mask, stem_of

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
        added.append(store.save(data.array, original, final, model_path, stem_of(image_path), meta))
    return added, unchanged


def _stored_image(array: np.ndarray) -> np.ndarray:
    """The array as the store keeps it (alpha dropped), so revisions of one image are recognised."""
    return array[..., :3] if array.ndim == 3 and array.shape[-1] == 4 else array
