"""Test-time adaptation (core/inference/adapt/): alignment towards the stored source spectra, the learned
low-frequency prompt, the BatchNorm baselines, and a volume adapting once."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_ramseg.core.inference.adapt import METHODS, AdaptedPredictor, adapt_and_predict
from napari_ramseg.core.inference.adapt.run import scan_features
from napari_ramseg.core.inference.adapt.style import apply_prompt
from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.config import ADAPT, ADAPT_METHODS, PreprocessConfig
from napari_ramseg.core.data.dataset import Sample
from napari_ramseg.core.shift.domain_fit import profile_domains
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.errors import RamsegInputError


def _fundus_like(size=160, seed=0, tint=(1.0, 0.7, 0.4)):
    """(3, H, W) in [-1, 1]: a bright disc with a vignette and texture, tinted per channel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    base = 0.8 * np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.08) + 0.1 * rng.normal(size=(size, size))
    base += 0.3 * ((yy - 0.4) ** 2 + (xx - 0.6) ** 2 < 0.01)
    image = np.stack([base * t for t in tint]).astype(np.float32)
    return np.clip(image - 0.5, -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def predictor(tiny_model):
    model, meta = load_model(tiny_model, "cpu")
    return Predictor(model, meta, "cpu", precision="fp32")


def _with_profile(predictor, images, size):
    """The predictor with a source profile of ``images`` and a working scale of ``size`` x ``size``."""
    preprocess = PreprocessConfig(size=size)
    profile = profile_domains([Sample(im, None, "src", f"c{i}") for i, im in enumerate(images)], preprocess)
    meta = replace(predictor.metadata, source_profile=profile,
                   config=predictor.metadata.config.replace(preprocess=preprocess))
    return Predictor(predictor.model, meta, "cpu", precision="fp32")


def _aligned(p, x):
    method = METHODS["align"](replace(ADAPT, strength=1.0))
    adaptation = method.adapt(p, x[None], scan_features(p, x[None], False))
    return adaptation.apply(x[None])[0]


def test_alignment_leaves_a_source_image_nearly_unchanged(predictor):
    source = torch.from_numpy(_fundus_like())
    p = _with_profile(predictor, [source.numpy()], 160)
    own = _aligned(p, source)
    assert (own - source).abs().mean() < 0.01  # its own statistics: (nearly) nothing to move
    other = torch.from_numpy(_fundus_like(seed=1, tint=(0.3, 0.9, 1.0))) * 0.5 - 0.3  # another camera's look
    moved = _aligned(p, other)
    assert (moved - other).abs().mean() > 10 * (own - source).abs().mean()
    # towards the source: the channel means (the zero-frequency bin) come to the source's
    assert torch.allclose(moved.mean(dim=(1, 2)), source.mean(dim=(1, 2)), atol=0.03)


def test_alignment_holds_at_another_working_size(predictor):
    """The stored spectra are at the profile's side; an image at another size is scaled to match."""
    source = _fundus_like(size=240)
    p = _with_profile(predictor, [source], 240)
    x = torch.from_numpy(source)
    assert (_aligned(p, x) - x).abs().mean() < 0.02


def test_the_prompt_keeps_the_phase():
    x = torch.from_numpy(_fundus_like(seed=2))[None] * 0.5
    b = 8
    prompt = 0.3 * torch.randn(1, 3, 2 * b + 1, 2 * b + 1, generator=torch.Generator().manual_seed(0))
    prompted = apply_prompt(x, prompt, b, clip=None)
    before, after = torch.fft.fft2(x.double()), torch.fft.fft2(prompted.double())
    assert (after.abs() - before.abs()).abs().max() > 1.0  # the amplitude did change
    significant = before.abs() > 1e-3 * before.abs().max()
    difference = torch.angle(after * before.conj())[significant]
    assert difference.abs().max() < 1e-4


def test_prompt_learns_and_warm_starts_from_the_previous_scan(predictor):
    p = _with_profile(predictor, [_fundus_like(size=48)], 48)
    before = _state(p.model)
    adapted = AdaptedPredictor(p, "prompt", replace(ADAPT, prompt_steps=2))
    first = adapted.predict_image(np.uint8(127 + 100 * _fundus_like(size=48).transpose(1, 2, 0)))
    assert adapted.last.info["warm_start_from"] == 0 and adapted.last.info["prompt_abs_mean"] > 0
    adapted.predict_image(np.uint8(127 + 90 * _fundus_like(size=48, seed=3).transpose(1, 2, 0)))
    assert adapted.last.info["warm_start_from"] == 1
    assert first.labels.shape == (48, 48)
    assert all(torch.equal(before[k], v) for k, v in p.model.state_dict().items())  # frozen


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["adabn", "tent"])
def test_batchnorm_methods_reset_between_scans(predictor, method):
    rng = np.random.default_rng(0)
    scan_a = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    scan_b = np.uint8(np.clip(rng.normal(60, 20, (40, 40, 3)), 0, 255))
    before = _state(predictor.model)
    series = AdaptedPredictor(predictor, method)
    series.predict_image(scan_a)
    after_a = series.predict_image(scan_b).probabilities
    fresh = AdaptedPredictor(predictor, method).predict_image(scan_b).probabilities
    np.testing.assert_array_equal(after_a, fresh)  # scan A left nothing behind
    assert all(torch.equal(before[k], v) for k, v in predictor.model.state_dict().items())
    plain = predictor.predict_image(scan_b).probabilities
    assert np.abs(fresh - plain).max() > 1e-4  # and it did adapt


@pytest.mark.parametrize("method", list(METHODS))
def test_a_volume_adapts_once(predictor, method):
    p = _with_profile(predictor, [_fundus_like(size=32)], 32)
    volume = np.random.default_rng(1).normal(500, 100, (7, 32, 32)).astype(np.float32)
    adapted = AdaptedPredictor(p, method, replace(ADAPT, prompt_steps=1))
    calls = []
    original = adapted.method.adapt
    adapted.method.adapt = lambda *a: calls.append(len(a[1])) or original(*a)
    done = []
    prediction = adapted.predict(volume, progress=lambda d, t: done.append(d))
    assert calls == [7] and adapted.fits == 1 and done[-1] == 7
    assert prediction.labels.shape == volume.shape
    assert adapted.last.fit_before is not None


def test_entry_point_and_refusals(predictor, tiny_model):
    image = np.random.default_rng(2).integers(0, 255, (36, 44, 3), dtype=np.uint8)
    prediction, report = adapt_and_predict(predictor, image, "align")
    assert prediction.labels.shape == (36, 44) and report.method == "align" and report.seconds > 0
    assert report.fit_after.score != report.fit_before.score
    with pytest.raises(RamsegInputError, match="unknown adaptation method"):
        adapt_and_predict(predictor, image, "nope")
    bare = Predictor(predictor.model, replace(predictor.metadata, source_profile=None), "cpu")
    with pytest.raises(RamsegInputError, match="no source profile"):
        adapt_and_predict(bare, image, "prompt")
    assert adapt_and_predict(bare, image, "adabn")[1].fit_before is None


def test_the_config_lists_the_registry():
    assert tuple(METHODS) == ADAPT_METHODS and ADAPT.method in METHODS
