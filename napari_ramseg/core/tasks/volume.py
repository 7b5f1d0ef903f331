"""A grey volume, slice by slice in 2.5D (each slice with its neighbours, ``preprocess.volume_to_slices_25d``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..labels import LabelScheme
from ..data.dataset import Sample
from ..data.preprocess import volume_to_slices_25d
from ..inference.predictor import Prediction
from .base import CaseOptions, Task


class VolumeTask(Task):
    name = "volume"

    def claims(self, labels: LabelScheme, is_volume: bool) -> bool:
        return is_volume

    def predict(self, segmenter: Any, image: Any, options: CaseOptions) -> tuple[Prediction, dict]:
        prediction = segmenter.predict(image.array, postprocess=options.postprocess, is_volume=True,
                                       spacing=image.spacing, progress=options.progress,
                                       cancelled=options.cancelled)
        return prediction, {}

    def training_samples(self, case: Any, labels: LabelScheme, in_channels: int, domain: str,
                         rng: np.random.Generator) -> list[Sample]:
        """One sample per slice, each seeing its neighbours as the prediction does."""
        slices, mask = volume_to_slices_25d(case.image), np.asarray(case.final, np.uint8)
        return [Sample(slices[j], mask[j], domain, case.case_id, slice_index=j) for j in range(len(slices))]


TASK = VolumeTask()
