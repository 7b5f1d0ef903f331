"""Fine-tuning an optic disc model: corrected photographs become the disc-centred ROIs the model is
trained on (never whole photographs), held-out ones are scored through the two stages, and disc-only
corrections (DRIONS-DB's kind) teach the disc without teaching "no cup"."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from helpers import BrightDiscModel, synthetic_fundus
from napari_ramseg.core.config import (DiscConfig, DiscRoiSampling, MethodConfig, ModelConfig, PreprocessConfig,
                                       TrainConfig)
from napari_ramseg.core.data.dataset import Sample
from napari_ramseg.core.labels import OPTIC_DISC_CUP, VESSELS
from napari_ramseg.core.tasks.disc import DiscPredictor
from napari_ramseg.core.tasks.disc.corrections import correction_rois, score_correction
from napari_ramseg.core.tasks.disc.roi import Roi, disc_diameter, negative_rois, training_rois
from napari_ramseg.core.finetune.data import CORRECTIONS_DOMAIN, CorrectionPool, case_samples, score_heldout
from napari_ramseg.core.training.trainer import Trainer

DISC = (150, 420)


def _mask(shape=(400, 600), centre=DISC, radius=40, cup=15):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    r = np.hypot(yy - centre[0], xx - centre[1])
    return ((r <= radius).astype(np.uint8) + (r <= cup)).astype(np.uint8) if cup else (r <= radius).astype(np.uint8)


@dataclass
class _Case:  # what CorrectionStore.load gives, as far as the fine-tune reads it
    image: np.ndarray
    final: np.ndarray
    case_id: str = "c1"
    provenance: dict = field(default_factory=dict)

    @property
    def is_volume(self) -> bool:
        return False


def test_training_rois_put_the_disc_in_the_centre_at_the_roi_scale():
    mask = _mask()
    assert disc_diameter(mask) == 81
    roi = Roi.of_mask(mask, 1.34)
    assert abs(roi.center[0] - DISC[0]) <= 1 and abs(roi.center[1] - DISC[1]) <= 1 and roi.side == round(1.34 * 81)
    sampling = DiscRoiSampling(size=64, jitter=3)
    pairs = training_rois(synthetic_fundus(disc=DISC), mask, np.random.default_rng(0), 1.34, sampling)
    assert len(pairs) == 4 and all(img.shape == (64, 64, 3) and m.shape == (64, 64) for img, m in pairs)
    first = pairs[0][1]
    ys, xs = np.nonzero(first >= 1)
    assert abs(ys.mean() - 31.5) < 2 and abs(xs.mean() - 31.5) < 2  # the ground-truth ROI: centred
    assert (first >= 1).any(axis=1).sum() == pytest.approx(64 / 1.34, abs=2)  # the disc spans side / ratio
    assert all((m == 2).any() for _, m in pairs)  # the cup comes along
    negatives = negative_rois(synthetic_fundus(disc=DISC), mask, np.random.default_rng(0), 3, sampling)
    assert negatives and all(not m.any() for _, m in negatives)


def test_a_corrected_photograph_becomes_rois_and_a_crop_keeps_its_scale():
    photo, mask = synthetic_fundus(disc=DISC), _mask()
    samples = case_samples(_Case(photo, mask), OPTIC_DISC_CUP, rng=np.random.default_rng(0))
    sampling = DiscRoiSampling()
    # the ground-truth ROI, the jittered copies and (a whole photograph) a ROI without the disc
    assert len(samples) == 1 + sampling.jitter + sampling.negatives
    assert all(s.image.shape == (3, sampling.size, sampling.size) for s in samples)
    assert [s.name for s in samples] == [f"c1_r{j}" for j in range(len(samples))]
    assert sum(not s.mask.any() for s in samples) == sampling.negatives
    assert samples[0].mask.mean() > 0.2  # the disc fills its ROI, as in the training folders
    # a disc-centred crop (Drishti-GS, DoFE) has no room for a negative: only the disc's ROIs
    crop, crop_mask = photo[60:240, 330:510], mask[60:240, 330:510]
    assert len(correction_rois(crop, crop_mask, np.random.default_rng(0))) == 1 + sampling.jitter
    # a correction that draws no disc gives nothing to centre on; a vessel model's photograph stays whole
    assert case_samples(_Case(photo, np.zeros_like(mask)), OPTIC_DISC_CUP) == []
    whole = case_samples(_Case(photo, (mask >= 1).astype(np.uint8)), VESSELS)
    assert len(whole) == 1 and whole[0].image.shape[-2:] == photo.shape[:2]


def test_a_held_out_correction_is_scored_through_the_two_stages_on_the_whole_photograph():
    photo = synthetic_fundus(disc=DISC)
    two_stage = DiscPredictor(BrightDiscModel()).predict(photo).labels  # what the clinician was shown
    model = BrightDiscModel()
    disc_only = (two_stage >= 1).astype(np.uint8)  # DRIONS-DB's kind of mask: the disc, no cup drawn
    assert score_heldout(model, _Case(photo, disc_only), OPTIC_DISC_CUP) == pytest.approx(1.0)
    assert model.calls[0] != photo.shape and all(shape[0] < photo.shape[0] for shape in model.calls)  # ROIs only
    with_cup = disc_only.copy()
    with_cup[DISC[0] - 5:DISC[0] + 5, DISC[1] - 5:DISC[1] + 5] = 2  # a cup the stand-in never draws
    assert score_correction(BrightDiscModel(), photo, with_cup) == pytest.approx(0.5)  # disc 1, cup 0
    # no disc found (no bright disc in the field of view): an empty mask, not an error
    blank = synthetic_fundus(disc=DISC, radius=0.1)
    assert score_correction(BrightDiscModel(), blank, disc_only) == 0.0


def test_disc_only_corrections_do_not_teach_no_cup():
    """Partial labels per *pool* domain: replayed sources with a cup, corrections without one."""
    def samples(domain, cup):
        rng = np.random.default_rng(1)
        out = []
        for i in range(3):
            m = _mask((32, 32), (16, 16), 8, 3 if cup else 0)
            image = (rng.normal(0, 0.3, (3, 32, 32)) + m * 0.5).astype(np.float32)
            out.append(Sample(image, m, domain, f"{domain}{i}"))
        return out

    config = TrainConfig(labels=OPTIC_DISC_CUP, model=ModelConfig(base_width=4, depth=3),
                         method=MethodConfig(dsir=False),  # as in a fine-tune round
                         preprocess=PreprocessConfig(size=32), batch=4, iterations=1, device="cpu", val_every=0)
    pool = CorrectionPool({"Drishti-GS": samples("Drishti-GS", True), CORRECTIONS_DOMAIN: samples("c", False)},
                          ["Drishti-GS", CORRECTIONS_DOMAIN], config.preprocess)
    trainer = Trainer(config, ["Drishti-GS"], {}, (), pool=pool)
    assert trainer.objective.annotated.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    assert trainer.unannotated == {CORRECTIONS_DOMAIN: ["cup"]}
    assert "unannotated_labels" not in trainer.extra_metadata  # the base model's record stays
    trainer.run()


def test_the_bench_training_folders_are_cut_by_the_same_code():
    """bench/recipes/optic_disc_data.py (the shipped models' ROIs) and the fine-tune share one owner."""
    from pathlib import Path

    source = (Path(__file__).resolve().parents[3] / "bench" / "recipes" / "optic_disc_data.py").read_text()
    assert "training_rois(" in source and "negative_rois(" in source and "def rois(" not in source
    assert DiscConfig().roi_ratio > 1
