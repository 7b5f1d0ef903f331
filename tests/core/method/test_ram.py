"""Random amplitude mixup: what it must keep, what it must change, and its edges."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_ramseg.core.method.ram import (
    DISCRETE_LAMBDAS,
    amplitude_mixup,
    log_amplitude_spectrum,
    sample_lambda,
    window_bounds,
)


def _pair(b=2, c=3, h=32, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g) * 1.6 - 0.8
    y = torch.rand(b, c, h, w, generator=g) * 0.4
    return x, y


def _centred(x):
    return torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1))


def test_lambda_one_returns_the_input():
    x, y = _pair()
    out = amplitude_mixup(x, y, torch.ones(2), window_ratio=0.2, clip=None)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_phase_is_kept_and_amplitude_outside_window_is_unchanged():
    x, y = _pair()
    out = amplitude_mixup(x, y, torch.tensor([0.3, 0.7]), window_ratio=0.1, clip=None)
    fx, fo, fy = _centred(x), _centred(out), _centred(y)
    r0, r1, c0, c1 = window_bounds(32, 40, 0.1)
    inside = torch.zeros(32, 40, dtype=torch.bool)
    inside[r0:r1, c0:c1] = True
    # outside the window the spectrum (amplitude and phase) is the input's
    torch.testing.assert_close(fo[..., ~inside].abs(), fx[..., ~inside].abs(), atol=1e-3, rtol=1e-4)
    # the phase is unchanged everywhere the amplitude is not tiny
    strong = fx.abs() > 1e-2
    dphase = torch.angle(fo * fx.conj())[strong]
    assert dphase.abs().max() < 1e-3
    # inside, the amplitude is lam * A + (1 - lam) * A'
    lam = torch.tensor([0.3, 0.7], dtype=torch.float64).view(2, 1, 1, 1)
    expected = lam * fx.abs()[..., r0:r1, c0:c1] + (1 - lam) * fy.abs()[..., r0:r1, c0:c1]
    torch.testing.assert_close(fo.abs()[..., r0:r1, c0:c1], expected, atol=1e-3, rtol=1e-4)


def test_mixup_changes_the_image_and_takes_the_partner_style():
    x, y = _pair()
    out = amplitude_mixup(x, y, torch.zeros(2), window_ratio=0.1, clip=None)
    assert not torch.allclose(out, x)
    # the zero-frequency amplitude (|mean|) becomes the partner's; its sign (phase) stays the image's
    torch.testing.assert_close(out.mean(dim=(-2, -1)).abs(), y.mean(dim=(-2, -1)).abs(), atol=1e-4, rtol=0)


def test_window_half_width_matches_the_paper_at_256():
    r0, r1, c0, c1 = window_bounds(256, 256, 0.1)
    assert (r1 - r0, c1 - c0) == (51, 51)  # b = 25 on either side of the centre
    assert r0 == 128 - 25


def test_output_real_finite_clipped_and_same_dtype():
    x, y = _pair()
    out = amplitude_mixup(x * 5, y, 0.5, window_ratio=0.3)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert torch.isfinite(out).all() and out.min() >= -1 and out.max() <= 1


def test_seeding_is_respected():
    a = sample_lambda(8, "uniform", torch.Generator().manual_seed(3))
    b = sample_lambda(8, "uniform", torch.Generator().manual_seed(3))
    c = sample_lambda(8, "uniform", torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ((a >= 0) & (a <= 1)).all()
    d = sample_lambda(200, "discrete", torch.Generator().manual_seed(0))
    assert all(np.isclose(v, DISCRETE_LAMBDAS).any() for v in d.tolist())
    with pytest.raises(ValueError):
        sample_lambda(2, "gaussian")


def test_shape_mismatch_is_refused():
    x, y = _pair()
    with pytest.raises(ValueError, match="differ in shape"):
        amplitude_mixup(x, y[..., :-1], 0.5)


def test_spectrum_for_display_is_centred():
    img = np.ones((3, 16, 16), np.float32)
    spec = log_amplitude_spectrum(img)
    assert spec.shape == (16, 16)
    assert np.unravel_index(spec.argmax(), spec.shape) == (8, 8)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(2, 33), w=st.integers(2, 33),
    lam=st.floats(0, 1), ratio=st.floats(0, 0.5), dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_property_any_shape_lambda_and_window(b, c, h, w, lam, ratio, dtype):
    x, y = _pair(b, c, h, w)
    out = amplitude_mixup(x.to(dtype), y.to(dtype), lam, window_ratio=ratio)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert out.min() >= -1 and out.max() <= 1
    if lam == 1.0 or window_bounds(h, w, ratio)[1] == window_bounds(h, w, ratio)[0]:
        torch.testing.assert_close(out, x.to(dtype), atol=1e-4, rtol=0)
