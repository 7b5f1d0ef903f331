from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_ramseg.core.config import NORMALIZATION
from napari_ramseg.core.data.preprocess import normalize_intensity, to_model_channels, volume_to_slices_25d


def test_normalize_range_and_percentiles():
    rng = np.random.default_rng(0)
    img = rng.normal(100, 20, (64, 64)).astype(np.float32)
    img[0, 0] = 1e6  # an outlier must not squash the rest
    out = normalize_intensity(img)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.min() == -1.0 and out.max() == 1.0
    lo, hi = np.percentile(img, [NORMALIZATION["low_percentile"], NORMALIZATION["high_percentile"]])
    inside = (img > lo) & (img < hi)
    np.testing.assert_allclose(out[inside], ((img[inside] - lo) / (hi - lo) * 2 - 1), atol=1e-5)
    assert np.mean(np.abs(out) < 0.99) > 0.98


def test_normalize_dtypes_agree():
    base = np.random.default_rng(1).integers(0, 256, (32, 32, 3))
    a = normalize_intensity(base.astype(np.uint8))
    b = normalize_intensity(base.astype(np.uint16) * 257)
    c = normalize_intensity(base.astype(np.float64) / 255.0)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, c, atol=1e-5)


def test_normalize_uses_all_channels_together():
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, 64).reshape(8, 8)
    img[..., 1] = 10
    out = normalize_intensity(img)
    assert np.allclose(out[..., 1], out[..., 1].flat[0]) and out[..., 1].max() < 0  # dim channel stays dim


def test_constant_and_mostly_constant():
    assert not normalize_intensity(np.full((5, 5), 7, np.uint8)).any()
    assert normalize_intensity(np.full((5, 5), 7.0)).dtype == np.float32
    sparse = np.zeros((100, 100), np.uint8)
    sparse[0, :10] = 200  # 0.1 % of pixels: percentiles coincide, full min-max takes over
    out = normalize_intensity(sparse)
    assert out.min() == -1 and out.max() == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_raises(bad):
    img = np.zeros((4, 4), np.float32)
    img[1, 1] = bad
    with pytest.raises(ValueError, match="image contains NaN or Inf values"):
        normalize_intensity(img)
    with pytest.raises(ValueError, match="NaN or Inf"):
        to_model_channels(img)


@pytest.mark.parametrize(
    "shape, dtype",
    [((6, 5), np.uint8), ((6, 5, 1), np.uint16), ((6, 5, 2), np.uint8), ((6, 5, 3), np.float32), ((6, 5, 4), np.uint8)],
)
def test_to_model_channels_shapes(shape, dtype):
    img = (np.random.default_rng(2).random(shape) * 200).astype(dtype)
    out = to_model_channels(img)
    assert out.shape == (3, 6, 5) and out.dtype == np.float32 and out.flags.c_contiguous
    assert out.min() >= -1 and out.max() <= 1


def test_to_model_channels_semantics():
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    out = to_model_channels(grey)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_allclose(out[0], normalize_intensity(grey))
    ga = np.stack([grey, np.full_like(grey, 255)], -1)
    np.testing.assert_array_equal(to_model_channels(ga), out)  # alpha is ignored
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.zeros((6, 5, 1), np.uint8)], -1)
    np.testing.assert_array_equal(to_model_channels(rgba), to_model_channels(rgb))
    np.testing.assert_allclose(to_model_channels(rgb), np.moveaxis(normalize_intensity(rgb), -1, 0))
    assert to_model_channels(rgb, in_channels=1).shape == (1, 6, 5)
    with pytest.raises(ValueError):
        to_model_channels(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError):
        to_model_channels(np.zeros((4, 4, 7)))


def test_volume_to_slices_25d():
    vol = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    out = volume_to_slices_25d(vol)
    assert out.shape == (4, 3, 3, 2) and out.dtype == np.float32
    norm = normalize_intensity(vol)  # one normalisation for the whole volume
    for j, (a, b, c) in enumerate([(0, 0, 1), (0, 1, 2), (1, 2, 3), (2, 3, 3)]):
        np.testing.assert_array_equal(out[j, 0], norm[a])
        np.testing.assert_array_equal(out[j, 1], norm[b])
        np.testing.assert_array_equal(out[j, 2], norm[c])
    single = volume_to_slices_25d(np.ones((1, 3, 3), np.uint16))
    assert single.shape == (1, 3, 3, 3) and not single.any()
    with pytest.raises(ValueError):
        volume_to_slices_25d(np.zeros((3, 3)))


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
              elements=st.floats(-1e6, 1e6, allow_nan=False)))
def test_normalize_property(img):
    out = normalize_intensity(img)
    assert out.shape == img.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= -1 and out.max() <= 1
    # monotone: ordering of pixels is kept
    flat_in, flat_out = img.ravel(), out.ravel()
    order = np.argsort(flat_in, kind="stable")
    assert np.all(np.diff(flat_out[order]) >= -1e-6)


@settings(max_examples=40, deadline=None)
@given(arrays(st.sampled_from([np.uint8, np.uint16]), st.integers(1, 300)))
def test_histogram_percentiles_match_numpy(a):
    from napari_ramseg.core.data.preprocess import _percentiles

    q = (NORMALIZATION["low_percentile"], NORMALIZATION["high_percentile"])
    np.testing.assert_allclose(_percentiles(a, q), np.percentile(a, q), rtol=1e-12, atol=1e-9)
