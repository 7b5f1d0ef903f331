"""Review priority: the style views are RAM's transform with the stored source spectra, and the orders rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_ramseg.core.data.dataset import Sample
from napari_ramseg.core.shift.domain_fit import profile_domains
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.review.report import case_row, columns, read_report, with_priority, write_report
from napari_ramseg.core.review.priority import (descriptor, descriptor_prepared, disagreement, disagreement_prepared,
                                                mean_uncertainty, random_order, rank_by, representative_order,
                                                review_order, style_views)


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
    from napari_ramseg.core.labels import VESSELS

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


# ------------------------------------------------------------------------ the representative order


def _clusters() -> dict[str, np.ndarray]:
    """Five near-duplicates (the left and right eye of one patient, say), three of a second kind, one outlier."""
    rng = np.random.default_rng(0)
    found = {f"a{i}": np.array([0.0, 0.0]) + rng.normal(0, 0.01, 2) for i in range(5)}
    found |= {f"b{i}": np.array([5.0, 0.0]) + rng.normal(0, 0.3, 2) for i in range(3)}
    found["z"] = np.array([0.0, 40.0])
    return found


def test_representative_order_prefers_a_spread_to_near_duplicates_and_outliers():
    feats = _clusters()
    order = representative_order(feats)
    assert order[0].startswith("a")  # the medoid of the largest group first
    assert order[1].startswith("b")  # then the second kind, before any near-duplicate of the first
    assert order[2] == "z"  # the outlier is worth only itself: after both kinds, before duplicates
    assert sorted(order) == sorted(feats)
    # uncertainty alone would take the outlier first and then near-duplicates
    unc = {n: (0.9 if n == "z" else 0.5 if n.startswith("a") else 0.2) for n in feats}
    assert rank_by(unc)[:3] == ["z", "a0", "a1"]
    weighted = representative_order(feats, unc, power=1.0)
    assert weighted[0].startswith("a") and set(weighted[:3]) == {weighted[0], "z", weighted[2]}
    assert weighted[2].startswith("b")  # weighting moves the uncertain outlier up, not a duplicate


def test_representative_order_is_deterministic_and_weighs_by_uncertainty():
    feats = _clusters()
    order = representative_order(feats)
    assert representative_order(dict(reversed(list(feats.items())))) == order
    assert representative_order(feats) == order
    # the second kind much more uncertain: it comes first; power 0 ignores the weights
    unc = {n: (1.0 if n.startswith("b") else 0.05) for n in feats}
    assert representative_order(feats, unc, power=1.0)[0].startswith("b")
    assert representative_order(feats, unc, power=0.0) == order
    # near-duplicates: a tie is broken by name, whatever the input order
    ties = {"y": np.zeros(2), "x": np.zeros(2), "w": np.ones(2)}
    assert representative_order(ties) == ["x", "w", "y"]  # x and y tie as the medoid: x, then w covers more


def test_representative_order_puts_cases_without_a_descriptor_last():
    feats = {"c": np.array([1.0]), "a": None, "b": np.array([0.0]), "d": np.array([np.nan])}
    assert representative_order(feats)[2:] == ["a", "d"]
    rows = {n: {"descriptor": f, "mean_uncertainty": 0.5} for n, f in feats.items()}
    assert review_order(rows, "representative")[2:] == ["a", "d"]
    with pytest.raises(ValueError):
        review_order({"a": {"mean_uncertainty": 0.1}}, "representative")


def test_descriptor_is_the_encoders_pooled_bottleneck(tiny_model):
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    image = (np.random.default_rng(0).random((40, 44, 3)) * 255).astype(np.uint8)
    f = descriptor(predictor, image)
    widths = predictor.model.config.base_width * 2 ** (predictor.model.config.depth - 1)
    assert f.shape == (widths,) and np.all(np.isfinite(f))
    np.testing.assert_allclose(f, descriptor_prepared(predictor, predictor.prepare(image)))
    other = descriptor(predictor, np.full((40, 44, 3), 128, np.uint8))
    assert not np.allclose(f, other)
    volume = (np.random.default_rng(1).random((5, 32, 32)) * 255).astype(np.uint8)
    assert descriptor(predictor, volume, is_volume=True).shape == (widths,)
