"""``core/review/pipeline.segment_case`` and the task registry (``core/tasks``), with stand-in models: each case
gets its task, a task refuses what it cannot take before any network pass, and the refusal is a result.
Issue 29's findings 4 (the optic disc model on an MRI slice), 9 (no ROI square in the maps) and 18
(measures marked unreliable) at the core."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import BrightDiscModel, synthetic_fundus
from napari_ramseg.core.labels import OPTIC_DISC_CUP, VESSELS
from napari_ramseg.core.shift.domain_fit import FitResult
from napari_ramseg.core.inference.predictor import Prediction
from napari_ramseg.core.review.pipeline import CaseOptions, segment_case
from napari_ramseg.core.tasks import TASKS, task_for
from napari_ramseg.io import ImageData


class DiscModel(BrightDiscModel):
    """The stand-in disc model with what the pipeline asks of a model besides predicting."""

    channel_names = ["disc", "cup"]

    def __init__(self, fits=True, **kwargs):
        super().__init__(**kwargs)
        self.fits = fits

    def check_fit(self, image, is_volume=None):
        return FitResult(self.fits, 0.9 if self.fits else 0.1, 0.5, "colour 2D image",
                         "" if self.fits else "unlike the sources")


def _grey(image):
    return np.repeat(image[..., :3].mean(-1, keepdims=True), 3, axis=-1).round().astype(np.uint8)


def test_each_case_gets_its_task_and_a_task_is_one_registry_line():
    assert [t.name for t in TASKS] == ["optic-disc", "volume", "2d"]
    assert task_for(OPTIC_DISC_CUP, False).name == task_for(OPTIC_DISC_CUP, True).name == "optic-disc"
    assert task_for(VESSELS, True).name == "volume" and task_for(VESSELS, False).name == "2d"


@pytest.mark.parametrize("image", [
    ImageData(_grey(synthetic_fundus(disc=(150, 420), radius=40))[..., 0]),  # a grey slice (an MRI PNG)
    ImageData(_grey(synthetic_fundus(disc=(150, 420), radius=40))),  # a grey slice stored as RGB
    ImageData(np.zeros((6, 40, 40), np.float32), axes="ZYX"),  # a volume
], ids=["grey", "grey-rgb", "volume"])
def test_the_optic_disc_model_refuses_what_is_not_a_colour_fundus_image_before_any_pass(image):
    """Finding 4: before, the dock and the worklist segmented a grey MRI slice with the disc model in
    one pass over the whole image and reported a vCDR."""
    model = DiscModel()
    result = segment_case(model, image)
    assert result.refused and result.prediction is None and model.calls == []
    assert "colour fundus image" in result.refusal and not result.reliable
    row = result.row("mri", "mri.png", OPTIC_DISC_CUP, model.channel_names, image.spatial_shape)
    assert row.get("vcdr") is None and row["fits"] is False and "colour fundus image" in row["fit_note"]
    assert row["mean_uncertainty"] == 1.0 and row["measures_reliable"] is False


def test_a_fundus_photograph_is_segmented_and_measured_in_its_two_stages():
    model = DiscModel()
    image = ImageData(synthetic_fundus(disc=(150, 420), radius=40))
    result = segment_case(model, image, CaseOptions())
    assert not result.refused and result.task.name == "optic-disc" and result.reliable
    assert result.prediction.labels.shape == (400, 600) and result.prediction.labels[150, 420] >= 1
    assert all(s[0] == s[1] < 300 for s in model.calls)  # ROIs only
    assert result.extras["kind"] == "photograph" and "vcdr" in result.measures
    assert result.task.summary_line(result).startswith("vCDR ")


def test_measures_of_a_scan_that_does_not_fit_are_marked_unreliable():
    """Finding 18: the measures are still given (the user decides), and marked."""
    image = ImageData(synthetic_fundus(disc=(150, 420), radius=40))
    result = segment_case(DiscModel(fits=False), image)
    assert not result.refused and not result.reliable and result.measures["disc_px"] > 0
    row = result.row("a", "a.png", OPTIC_DISC_CUP, ["disc", "cup"], (400, 600))
    assert row["measures_reliable"] is False and row["disc_px"] == result.measures["disc_px"]
    fitting = segment_case(DiscModel(), image).row("a", "a.png", OPTIC_DISC_CUP, ["disc", "cup"], (400, 600))
    assert fitting["measures_reliable"] is True


class NoisyDiscModel(DiscModel):
    """Its background is not certain: probability 0.05 and entropy 0.3 everywhere outside the disc."""

    def predict_image(self, image, postprocess=False):
        out = super().predict_image(image, postprocess)
        entropy = np.where(out.labels >= 1, 0.1, 0.3).astype(np.float32)
        return Prediction(out.labels, out.probabilities, entropy, out.channel_names)


def test_the_disc_roi_leaves_no_square_in_the_probability_and_uncertainty_maps():
    """Finding 9: the maps pasted back from the ROI stepped from the model's background values inside it
    to exact zeros outside, a faint square around the disc in those layers."""
    result = segment_case(NoisyDiscModel(), ImageData(synthetic_fundus(disc=(150, 420), radius=40)))
    roi = result.extras["roi"]
    top, left, side = roi["top"], roi["left"], roi["side"]
    bottom, right = top + side, left + side  # the first row and column past the ROI
    assert top > 0 and left > 0 and bottom < 400 and right < 600  # four edges inside the photograph
    for name, field in (("probability", result.prediction.probabilities[0]), ("uncertainty", result.prediction.entropy)):
        steps = [field[top, left:right] - field[top - 1, left:right], field[bottom - 1, left:right] - field[bottom, left:right],
                 field[top:bottom, left] - field[top:bottom, left - 1], field[top:bottom, right - 1] - field[top:bottom, right]]
        step = max(float(np.abs(s).max()) for s in steps)
        assert step < 0.03, f"the {name} map steps by {step:.3f} at the ROI's edge"
    centre = result.prediction.probabilities[0][150, 420]
    assert centre == pytest.approx(0.95)  # inside the disc the model's values are kept
    assert (result.prediction.labels >= 1).sum() > 0
