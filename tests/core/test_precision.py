"""Reduced precision (bf16 autocast) on every CPU.

bf16 is what ``precision="auto"`` runs on CPUs with native bf16 (AVX-512 BF16, AMX) and on GPUs. These
tests ask for it explicitly, so the bf16 path is tested on every machine: on a CPU without native bf16
it is emulated (slow) but computes the same numbers. Tests elsewhere that compare two paths for
equality pin ``precision="fp32"``.

Tolerances follow from bf16's precision: 8 significant bits, so one rounding moves a value by up to
2^-9 relative, and ``EPS = 2^-7`` (about 7.8e-3) is the spacing of bf16 numbers just below 1.0.
Probabilities lie in [0, 1] and the sigmoid's slope is at most 1/4, which damps the logits' rounding
errors; a correct bf16 pass stays well within one EPS of fp32, while a broken path (wrong layout, a
BatchNorm not folded, a wrong head) is off by tenths.
"""

import numpy as np
import pytest
import torch

from napari_ramseg.core.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.labels import OPTIC_DISC_CUP, PROSTATE, VESSELS
from napari_ramseg.core.data.dataset import Sample
from napari_ramseg.core.device import PRECISION_CHOICES, autocast_dtype, cpu_supports_bf16
from napari_ramseg.core.training.trainer import Trainer

from test_infer import _image, _predictor  # the same tiny network and images as the fp32 tests

EPS_BF16 = 2.0 ** -7
CPU = torch.device("cpu")


def test_precision_choice_on_the_cpu():
    assert autocast_dtype(CPU, "fp32") is None
    assert autocast_dtype(CPU, "bf16") is torch.bfloat16
    assert autocast_dtype(CPU, "auto") is (torch.bfloat16 if cpu_supports_bf16() else None)
    assert set(PRECISION_CHOICES) == {"auto", "fp32", "bf16", "fp16"}
    with pytest.raises(ValueError, match="unknown precision"):
        autocast_dtype(CPU, "int8")


@pytest.mark.parametrize("labels", [VESSELS, OPTIC_DISC_CUP, PROSTATE])
def test_bf16_inference_agrees_with_fp32(labels):
    image = _image((61, 47, 3), seed=2)
    exact = _predictor(labels, PreprocessConfig(size=48), precision="fp32")
    reduced = _predictor(labels, PreprocessConfig(size=48), precision="bf16")
    assert exact.dtype is None and reduced.dtype is torch.bfloat16
    a, b = exact.predict_image(image), reduced.predict_image(image)
    diff = np.abs(a.probabilities - b.probabilities)
    assert b.probabilities.dtype == np.float32 and np.isfinite(b.probabilities).all()
    assert diff.max() < EPS_BF16 / 2 and diff.mean() < EPS_BF16 / 8  # seen: 6e-4 and 2e-4
    # labels differ only where fp32 itself is within the rounding error of the threshold
    near = np.abs(a.probabilities - exact.threshold).min(axis=0) < EPS_BF16 / 2 if labels.kind == "nested" else None
    disagree = a.labels != b.labels
    assert (disagree & ~near).sum() == 0 if near is not None else disagree.mean() < 0.01


def test_bf16_volume_agrees_with_fp32():
    volume = _image((5, 30, 26), seed=3).astype(np.int16)
    a = _predictor(PROSTATE, PreprocessConfig(size=24), precision="fp32").predict_volume(volume)
    b = _predictor(PROSTATE, PreprocessConfig(size=24), precision="bf16").predict_volume(volume)
    assert np.abs(a.probabilities - b.probabilities).max() < EPS_BF16 / 2


def _samples(domains=("A", "B"), n=3, size=40, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for d in domains:
        items = []
        for i in range(n):
            mask = np.zeros((size, size), np.uint8)
            y, x = rng.integers(5, size - 15, 2)
            mask[y:y + 10, x:x + 10] = 1
            image = rng.normal(0, 0.3, (3, size, size)).astype(np.float32) + mask * 0.8
            items.append(Sample(image, mask, d, f"{d}{i}"))
        out[d] = items
    return out


def test_bf16_training_follows_the_fp32_curve():
    """Same seed, same batches: every loss term of the first steps within one EPS (relative; seen: 5e-4)."""
    base = TrainConfig(model=ModelConfig(base_width=4), preprocess=PreprocessConfig(size=32), batch=4,
                       iterations=3, device="cpu", val_every=100)
    exact = Trainer(base.replace(precision="fp32"), ["A", "B"], _samples())
    reduced = Trainer(base.replace(precision="bf16"), ["A", "B"], _samples())
    assert exact.dtype is None and reduced.dtype is torch.bfloat16 and reduced.scaler is None
    for _ in range(base.iterations):
        a, b = exact.step(), reduced.step()
        for term in ("seg", "seg_ram", "consistency", "restoration", "loss"):
            if term in a:
                assert np.isfinite(b[term]), term
                assert b[term] == pytest.approx(a[term], rel=EPS_BF16, abs=5e-4), term
    # the weights stay fp32 (autocast computes in bf16, the optimizer updates fp32 masters)
    assert all(p.dtype == torch.float32 for p in reduced.net.parameters())
