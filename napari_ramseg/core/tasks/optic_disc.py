"""The optic disc and cup: two stages on any colour fundus image (``core/tasks/disc/``).

A disc/cup model was trained on disc-centred ROIs, so it never sees a whole photograph: stage one finds
the disc, stage two segments its ROI and the result is pasted back (``disc.predict``). An image that is
not a colour fundus image (a grey image, an MRI slice stored as RGB, a volume) is refused before
either stage, in every entry point alike. Corrections are cut into the ROIs the model learns from
(``disc.corrections``), and the review scores look at the ROI the two stages segmented.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import RamsegInputError
from ..labels import LabelScheme
from ..data.dataset import Sample
from ..data.preprocess import to_model_channels
from .disc import DiscPredictor, is_disc_labels, segmented_region
from .disc.corrections import correction_rois, score_correction
from .disc.roi import Roi
from ..inference.predictor import Prediction
from .base import CaseOptions, Task
from .plain import TASK as PLAIN
from .volume import TASK as VOLUME


def _colour_2d(image: np.ndarray) -> bool:
    return np.ndim(image) == 3 and np.shape(image)[-1] in (3, 4)


class OpticDiscTask(Task):
    name = "optic-disc"

    def claims(self, labels: LabelScheme, is_volume: bool) -> bool:
        return is_disc_labels(labels)

    def check(self, image: Any) -> None:
        if image.is_volume or not _colour_2d(image.array):
            what = "a volume" if image.is_volume else f"an image of shape {np.shape(image.array)}"
            raise RamsegInputError(f"the optic disc model takes a colour fundus image (a photograph of the "
                                   f"retina or a disc-centred crop), not {what}")

    def predict(self, segmenter: Any, image: Any, options: CaseOptions) -> tuple[Prediction, dict]:
        # postprocess always: the measures need one disc and one cup (largest components, holes filled)
        found = DiscPredictor(segmenter).predict(image.array, postprocess=True)
        return found.prediction, found.summary()

    def review_region(self, predictor: Any, image: Any, extras: dict | None) -> np.ndarray:
        """The ROI the two stages segmented (found again when the case was segmented in an earlier
        session), not a whole photograph the model never sees."""
        if extras is None:
            extras = self.predict(predictor, image, CaseOptions())[1]
        return segmented_region(image.array, extras)

    def training_samples(self, case: Any, labels: LabelScheme, in_channels: int, domain: str,
                         rng: np.random.Generator) -> list[Sample]:
        """A corrected colour image as the disc-centred ROIs the model is trained on (none when the
        correction draws no disc); anything else as the plain or volume task takes it."""
        if case.is_volume or not _colour_2d(case.image):
            return (VOLUME if case.is_volume else PLAIN).training_samples(case, labels, in_channels, domain, rng)
        pairs = correction_rois(case.image, np.asarray(case.final, np.uint8), rng)
        return [Sample(to_model_channels(img, in_channels), m, domain, f"{case.case_id}_r{j}")
                for j, (img, m) in enumerate(pairs)]

    def score_heldout(self, predictor: Any, case: Any, labels: LabelScheme, in_channels: int) -> float:
        """Through the two stages on the whole image, as the clinician meets the model."""
        if case.is_volume or not _colour_2d(case.image):
            return super().score_heldout(predictor, case, labels, in_channels)
        return score_correction(predictor, case.image, np.asarray(case.final))

    def samples_note(self, samples_by_case: dict[str, list]) -> str:
        empty = [c for c, samples in samples_by_case.items() if not samples]
        total = sum(len(s) for s in samples_by_case.values())
        return (f"{len(samples_by_case) - len(empty)} corrected image(s) cut into {total} disc-centred ROIs"
                + (f"; left out, drawing no disc: {', '.join(empty)}" if empty else ""))

    def settings_line(self, segmenter: Any) -> str:
        return DiscPredictor(segmenter).settings_line()

    def summary_line(self, result: Any) -> str:
        """The cup-to-disc ratios and areas, and where the disc was found."""
        m, roi = result.measures, result.extras.get("roi")
        if roi:
            cy, cx = Roi(**roi).center
            where = f"whole photograph, disc at ({cx:.0f}, {cy:.0f}) px (x, y)"
        else:
            where = "disc-centred crop"
        areas = (f"disc {m['disc_mm2']:.2f} mm², cup {m['cup_mm2']:.2f} mm², rim {m['rim_mm2']:.2f} mm²"
                 if "disc_mm2" in m else f"disc {m['disc_px']} px, cup {m['cup_px']} px, rim {m['rim_px']} px")
        ratio = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
        inside = "" if m["cup_inside_disc"] else "; check it: the cup reaches the disc's outline"
        return f"vCDR {ratio(m['vcdr'])}, horizontal CDR {ratio(m['hcdr'])}; {areas} ({where}){inside}"


TASK = OpticDiscTask()
