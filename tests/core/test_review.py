"""Review priority: the style views are RAM's transform with the stored source spectra, and the orders rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_ramseg.core.data import Sample
from napari_ramseg.core.domain_fit import profile_domains
from napari_ramseg.core.infer import Predictor
from napari_ramseg.core.report import case_row, columns, read_report, with_priority, write_report
from napari_ramseg.core.review import (disagreement, disagreement_prepared, mean_uncertainty, random_order,
                                       rank_by, review_order, style_views)


def _image(seed: int, size: int = 48, scale: float = 0.4) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    base = np.sin(6 * yy + seed) * np.cos(4 * xx) * scale + rng.normal(0, 0.05, (size, size))
    return torch.from_numpy(np.stack([base, 0.8 * base, 0.5 * base]).astype(np.float32))


def _profile(*images: torch.Tensor):
    """A profile whose style side is the images' own size, so the stored amplitude needs no rescaling."""
    side = images[0].shape[-1]
    samples = [Sample(x.numpy(), None, f"d{i}", f"c{i}") for i, x in enumerate(images)]
    return profile_domains(samples, window_ratio=0.1, side=side)


def test_a_view_with_its_own_style_is_the_image():
    x = _image(0)
    views = style_views(x, _profile(x), lambdas=(0.0, 0.5, 1.0))
    assert len(views) == 3
    for view in views:
        torch.testing.assert_close(view, x, atol=2e-4, rtol=0)


def test_a_view_takes_the_partner_amplitude_inside_the_window_and_keeps_the_phase():
    x, other = _image(0), _image(5, scale=0.2)
    (view,) = style_views(x, _profile(other), lambdas=(0.0,))
    assert not torch.allclose(view, x, atol=1e-2)
    fft = lambda a: torch.fft.fftshift(torch.fft.fft2(a.double()), dim=(-2, -1))  # noqa: E731
    b = int(np.floor(48 * 0.1))
    win = slice(24 - b, 24 + b + 1)
    np.testing.assert_allclose(fft(view).abs()[:, win, win], fft(other).abs()[:, win, win], rtol=1e-3, atol=1e-2)
    # outside the window the image's own amplitude and everywhere its phase (no clipping at this scale)
    outside = torch.ones(48, 48, dtype=torch.bool)
    outside[win, win] = False
    np.testing.assert_allclose(fft(view).abs()[:, outside], fft(x).abs()[:, outside], rtol=1e-3, atol=1e-2)
    strong = fft(x).abs() > 1.0
    phase_diff = torch.angle(fft(view) * fft(x).conj())[strong]
    assert float(phase_diff.abs().max()) < 1e-3


def test_one_view_per_domain_spread_and_lambda():
    x = _image(0)
    profile = _profile(_image(1), _image(2))
    assert len(style_views(x, profile, lambdas=(0.0, 0.5), spreads=(-1.0, 0.0, 1.0))) == 2 * 2 * 3


def test_disagreement_from_the_models_own_spectra(tiny_model):
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    assert predictor.metadata.source_profile is not None
    image = (np.random.default_rng(0).random((40, 44, 3)) * 255).astype(np.uint8)
    score = disagreement(predictor, image)
    assert score is not None and np.isfinite(score) and score >= 0
    assert score == pytest.approx(disagreement_prepared(predictor, predictor.prepare(image)))
    prediction = predictor.predict(image)
    assert 0 <= mean_uncertainty(prediction) <= 1
    predictor.metadata.source_profile = None  # an older model.json: no stored spectra, no score
    assert disagreement(predictor, image) is None


def test_orders():
    scores = {"a": 0.1, "b": 0.5, "c": None, "d": 0.5, "e": float("nan")}
    assert rank_by(scores) == ["b", "d", "a", "c", "e"]
    names = [f"case{i}" for i in range(20)]
    assert random_order(names, 1) == random_order(list(reversed(names)), 1)
    assert random_order(names, 1) != random_order(names, 2)
    assert sorted(random_order(names, 1)) == sorted(names)
    rows = {"a": {"mean_uncertainty": 0.2, "disagreement": 0.9}, "b": {"mean_uncertainty": 0.4, "disagreement": 0.1}}
    assert review_order(rows, "uncertainty") == ["b", "a"]
    assert review_order(rows, "disagreement") == ["a", "b"]
    with pytest.raises(ValueError):
        review_order(rows, "loudest")


class _Prediction:
    def __init__(self, labels, entropy):
        self.labels, self.entropy = labels, entropy


class _Fit:
    score, fits, differs = 0.7, True, ""


def test_report_rows_rank_and_write(tmp_path):
    from napari_ramseg.core.config import VESSELS

    labels = np.zeros((10, 10), np.uint8)
    labels[:5] = 1
    rows = [case_row(f"c{i}", _Prediction(labels, np.full((10, 10), u)), VESSELS, _Fit(), file=f"c{i}.png",
                     spacing=(0.1, 0.1))
            for i, u in enumerate((0.1, 0.3, 0.2))]
    assert rows[0]["vessel_px"] == 50 and rows[0]["vessel_mm2"] == pytest.approx(0.5)
    ranked = with_priority(rows, "uncertainty")
    assert [r["case"] for r in ranked] == ["c1", "c2", "c0"] and [r["review_priority"] for r in ranked] == [1, 2, 3]
    cols = columns(ranked)
    assert cols[:3] == ["case", "file", "review_priority"] and cols[-5:][0] == "mean_uncertainty"
    path = write_report(tmp_path / "report.csv", rows, "uncertainty")
    back = read_report(path)
    assert [r["case"] for r in back] == ["c1", "c2", "c0"]
    assert back[0]["disagreement"] == "" and back[0]["fit_score"] == "0.7" and back[0]["vessel_px"] == "50"
    with pytest.raises(ValueError):
        with_priority(rows + rows[:1])
