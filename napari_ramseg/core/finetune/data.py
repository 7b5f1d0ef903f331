"""What a fine-tune round learns from and is scored on (``core/finetune/round.py``): the corrected cases as
training samples, the batch pool that mixes them with replayed source cases, and a held-out
correction's score.

Each case trains and scores the way its task says (``core/tasks``): an optic disc model's corrected
fundus images are cut into the disc-centred ROIs it was trained on and scored through the two stages, a
volume's slices are samples of their own, every other case trains and scores as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import RamsegInputError
from ..config import FinetuneConfig, PreprocessConfig
from ..labels import LabelScheme
from .correction_case import CorrectionCase
from .corrections import CorrectionStore
from ..data.dataset import Sample
from ..inference.predictor import Predictor
from ..method.sampling import SourcePool
from ..tasks import task_for

__all__ = ["CORRECTIONS_DOMAIN", "CorrectionPool", "case_samples", "check_project_labels", "score_heldout"]

CORRECTIONS_DOMAIN = "corrections"
CORRECTION_SHARE = FinetuneConfig().correction_share  # of every batch, from the corrected cases when replaying


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


def case_samples(case: CorrectionCase, labels: LabelScheme, in_channels: int = 3,
                 domain: str = CORRECTIONS_DOMAIN, rng: np.random.Generator | None = None) -> list[Sample]:
    """A corrected case as training samples, with its "final" mask: one per slice for a volume; for an
    optic disc model's fundus image, the disc-centred ROIs it is trained on (``core/tasks/disc/corrections.py``,
    jittered with ``rng``; none when the correction draws no disc)."""
    mask = np.asarray(case.final)
    if mask.size and int(mask.max()) > labels.num_classes:
        raise RamsegInputError(f"case {case.case_id}: the corrected mask uses label {int(mask.max())}, but the model "
                               f"has labels 1..{labels.num_classes} ({', '.join(labels.names)})")
    task = task_for(labels, case.is_volume)
    try:
        return task.training_samples(case, labels, in_channels, domain,
                                     rng if rng is not None else np.random.default_rng(0))
    except ValueError as exc:
        raise RamsegInputError(f"case {case.case_id}: {exc}") from None


def score_heldout(predictor: Predictor, case: CorrectionCase, labels: LabelScheme,
                  in_channels: int = 3) -> float:
    """A held-out correction's Dice as the clinician meets the model (its task's way: an optic disc
    model's fundus image through the two stages, on the whole image)."""
    return task_for(labels, case.is_volume).score_heldout(predictor, case, labels, in_channels)


def check_project_labels(store: CorrectionStore, case_ids: Sequence[str], labels: LabelScheme) -> None:
    """Refuse, in one line, corrections saved for a model with other labels (a vessel project and a disc model)."""
    for case_id in case_ids:
        saved = store.info(case_id).get("labels")
        if saved and tuple(saved.get("names", ())) != tuple(labels.names):
            raise RamsegInputError(
                f"case {case_id} was saved with labels {', '.join(saved['names'])}, but the model segments "
                f"{', '.join(labels.names)}; use a corrections project made with this kind of model", store.root)
