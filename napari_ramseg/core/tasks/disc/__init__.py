"""The optic disc and cup on any fundus photograph: a coarse locator (``locate``), the disc-centred ROI
(``roi``), the two-stage prediction that hides both from the user (``predict``), the check that an image is a
colour fundus image at all (``fundus``), the clinical measures (``measures``: vCDR, horizontal CDR, rim, cup
inside the disc, registered with ``core/evaluation/measures.py``) and how a clinician's corrections become training
ROIs and are scored (``corrections``)."""

from . import measures  # noqa: F401  (registers the disc/cup measures with core.evaluation.measures)
from .fundus import check_fundus, red_excess
from .locate import Candidate, Located, locate
from .predict import (DiscPrediction, DiscPredictor, is_disc_labels, predict_2d,
                      segmented_region)
from .roi import Roi, crop, paste

__all__ = ["Candidate", "DiscPrediction", "DiscPredictor", "Located", "Roi", "check_fundus", "crop",
           "is_disc_labels", "locate", "paste", "predict_2d", "red_excess", "segmented_region"]
