"""A clinician's corrected fundus images as the optic disc model learns from them and is scored on them.

The model is trained on disc-centred ROIs (``roi.training_rois``), and stage two only ever shows it such
ROIs. A corrected *photograph* fed to a fine-tune round as it is would teach the model to find a disc
filling a whole photograph, which breaks the two stages. So each correction is cut the way the
training folders were (``DiscRoiSampling``): the ROI of the corrected disc, jittered copies, and on a
whole photograph ROIs away from the disc with empty masks (the model's veto). A held-out correction is
scored the way the clinician meets the model: the two-stage path on the whole image
(``predict.predict_2d``), against the corrected mask.
"""

from __future__ import annotations

import numpy as np

from ....errors import RamsegInputError
from ...config import DiscConfig, DiscRoiSampling
from ...evaluation.metrics import case_dice
from .locate import locate
from .predict import predict_2d
from .roi import negative_rois, training_rois

__all__ = ["correction_rois", "score_correction"]


def correction_rois(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                    cfg: DiscConfig | None = None, sampling: DiscRoiSampling = DiscRoiSampling(),
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """One corrected image as training ROIs (RGB uint8 or float, index mask): [] when the correction
    draws no disc (nothing to centre a ROI on; the round says so)."""
    cfg = cfg or DiscConfig()
    image, mask = np.asarray(image)[..., :3], np.asarray(mask)
    if not (mask >= 1).any():
        return []
    pairs = training_rois(image, mask, rng, cfg.roi_ratio, sampling)
    if locate(image, cfg).photograph:  # the whole fundus in view: there is room for ROIs without the disc
        pairs += negative_rois(image, mask, rng, sampling.negatives, sampling)
    return pairs


def score_correction(predictor, image: np.ndarray, mask: np.ndarray) -> float:
    """Dice of the two-stage prediction on a whole corrected image: over disc and cup, or the disc alone
    when the correction draws no cup (a disc-only annotation, as DRIONS-DB's). A photograph in which no
    disc is found scores as an empty mask."""
    labels = predictor.labels
    mask = np.asarray(mask)
    try:
        predicted = predict_2d(predictor, image)[0].labels
    except RamsegInputError:
        predicted = np.zeros(mask.shape, np.uint8)
    names = None if int(mask.max(initial=0)) >= labels.num_classes else list(labels.names[:max(1, int(mask.max()))])
    return case_dice(predicted[None], mask[None], labels, names)
