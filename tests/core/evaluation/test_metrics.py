"""Metrics on hand-made masks whose answers are worked out by hand in the comments."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_ramseg.core.labels import LabelScheme, OPTIC_DISC_CUP, PROSTATE
from napari_ramseg.core.evaluation.metrics import (
    binary_metrics,
    case_metrics,
    json_safe,
    mean_dice,
    structure_masks,
    summarize,
)


def square(shape, r0, r1, c0, c1):
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


# An 8x8 square (rows 2..9, cols 2..9) and the same square moved down by 2 rows (rows 4..11).
A = square((20, 20), 2, 10, 2, 10)
B = square((20, 20), 4, 12, 2, 10)


# --- Dice -------------------------------------------------------------------------------------


def test_dice_of_two_overlapping_squares():
    # |A| = |B| = 64, overlap rows 4..9 x 8 cols = 48 -> 2*48 / 128 = 0.75
    assert binary_metrics(A, B)["dice"] == pytest.approx(0.75)


def test_dice_of_concentric_squares():
    # 10x10 and 6x6 inside it: 2*36 / (100 + 36) = 72/136
    outer = square((14, 14), 2, 12, 2, 12)
    inner = square((14, 14), 4, 10, 4, 10)
    assert binary_metrics(outer, inner)["dice"] == pytest.approx(72 / 136)


def test_identical_masks():
    assert binary_metrics(A, A) == pytest.approx({"dice": 1.0, "hd95": 0.0, "asd": 0.0})


def test_accepts_integer_masks():
    assert binary_metrics(A.astype(np.uint8) * 255, B.astype(np.int64))["dice"] == pytest.approx(0.75)


# --- empty masks --------------------------------------------------------------------------------


def test_both_empty():
    empty = np.zeros((8, 8), bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert binary_metrics(empty, empty) == {"dice": 1.0, "hd95": 0.0, "asd": 0.0}


@pytest.mark.parametrize("which", ["pred", "truth"])
def test_one_empty(which):
    empty = np.zeros_like(A)
    pred, truth = (empty, A) if which == "pred" else (A, empty)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MONAI "is all 0" warnings, no inf
        r = binary_metrics(pred, truth)
    assert r["dice"] == 0.0
    assert math.isnan(r["hd95"]) and math.isnan(r["asd"])


def test_no_warnings_on_normal_masks():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        binary_metrics(A, B, spacing=(2.0, 1.0))


# --- distances ----------------------------------------------------------------------------------
# Surface = border pixels (mask minus its erosion). For A -> B (shift of 2 along axis 0), per pixel
# of A's 28-pixel border, distance to B's border:
#   top row (2, 2..9): 8 pixels at 2            -> 16
#   (3, 2), (3, 9): 1 each                      ->  2
#   sides rows 4..8 and (9, 2), (9, 9): on B    ->  0
#   bottom row (9, 3..8): 1, 2, 2, 2, 2, 1      -> 10      (nearest is B's side or B's bottom row 11)
# total 28 over 28 pixels -> mean 1; B -> A is the mirror image, so ASD = 1 and HD = HD95 = 2.


def test_shifted_square_in_pixels():
    r = binary_metrics(A, B)
    assert r["hd95"] == pytest.approx(2.0)
    assert r["asd"] == pytest.approx(1.0)


def test_shifted_square_anisotropic_spacing():
    # spacing (2, 1): distances along axis 0 double. Top row 8 x 4 = 32, (3, 2)/(3, 9) 2 each = 4,
    # bottom row (9, 3..8): min(col distance, 2 rows * 2) = 1, 2, 3, 3, 2, 1 = 12 -> 48 / 28 = 12/7.
    r = binary_metrics(A, B, spacing=(2.0, 1.0))
    assert r["hd95"] == pytest.approx(4.0)
    assert r["asd"] == pytest.approx(12 / 7, rel=1e-5)
    # spacing along the other axis does not change the largest (axis-0) distances
    assert binary_metrics(A, B, spacing=(1.0, 2.0))["hd95"] == pytest.approx(2.0)


def test_single_pixels_3_4_5():
    p = np.zeros((20, 20), bool)
    t = np.zeros((20, 20), bool)
    p[5, 5] = True
    t[8, 9] = True  # 3 rows, 4 columns away
    r = binary_metrics(p, t)
    assert r == pytest.approx({"dice": 0.0, "hd95": 5.0, "asd": 5.0})
    r = binary_metrics(p, t, spacing=(2.0, 1.0))  # sqrt(6^2 + 4^2)
    assert r["hd95"] == pytest.approx(math.sqrt(52), rel=1e-6)
    assert r["asd"] == pytest.approx(math.sqrt(52), rel=1e-6)


def test_concentric_squares_distances():
    # outer 10x10 border (36 px) to inner 6x6 border (20 px): 24 side pixels at 2, 8 next to a
    # corner at sqrt(5), 4 corners at sqrt(8); inner to outer: all 20 at 2.
    outer = square((14, 14), 2, 12, 2, 12)
    inner = square((14, 14), 4, 10, 4, 10)
    r = binary_metrics(outer, inner)
    assert r["asd"] == pytest.approx((24 * 2 + 8 * math.sqrt(5) + 4 * math.sqrt(8) + 20 * 2) / 56, rel=1e-6)
    # 95th percentile of the 36 outer distances: position 0.95 * 35 = 33.25 lies in the top four (sqrt 8)
    assert r["hd95"] == pytest.approx(math.sqrt(8), rel=1e-6)


def test_mask_touching_the_image_border():
    a = square((12, 12), 0, 8, 0, 8)
    b = square((12, 12), 2, 10, 0, 8)
    assert binary_metrics(a, b) == pytest.approx({"dice": 0.75, "hd95": 2.0, "asd": 1.0})


def test_3d_shifted_cube():
    c = np.zeros((12, 12, 12), bool)
    c[2:8, 2:8, 2:8] = True
    d = np.zeros_like(c)
    d[4:10, 2:8, 2:8] = True
    r = binary_metrics(c, d)
    assert r["dice"] == pytest.approx(2 * 4 * 36 / (2 * 216))  # overlap 4 slices of 6x6
    assert r["hd95"] == pytest.approx(2.0)  # the 36 voxels of the top face are 2 away
    r = binary_metrics(c, d, spacing=(3.0, 1.0, 1.0))  # slice thickness 3 -> 6
    assert r["hd95"] == pytest.approx(6.0)


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(A, A[:10])
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(A, B, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(A, B, spacing=(0.0, 1.0))
    with pytest.raises(ValueError):
        binary_metrics(np.ones(5, bool), np.ones(5, bool))


# --- label images ---------------------------------------------------------------------------------


def test_structure_masks_nested_and_exclusive():
    labels = np.array([[0, 1, 2]])
    nested = structure_masks(labels, OPTIC_DISC_CUP)
    assert nested["disc"].tolist() == [[False, True, True]]  # disc includes cup
    assert nested["cup"].tolist() == [[False, False, True]]
    excl = structure_masks(labels, LabelScheme(("a", "b"), "exclusive"))
    assert excl["a"].tolist() == [[False, True, False]]
    assert excl["b"].tolist() == [[False, False, True]]


def test_case_metrics_disc_cup():
    truth = np.zeros((20, 20), np.uint8)
    truth[A] = 1
    truth[6:8, 4:8] = 2  # cup inside the disc
    pred = np.zeros_like(truth)
    pred[B] = 1
    r = case_metrics(pred, truth, OPTIC_DISC_CUP)
    assert list(r) == ["disc", "cup"]
    assert r["disc"] == pytest.approx({"dice": 0.75, "hd95": 2.0, "asd": 1.0})  # disc = labels >= 1
    assert r["cup"]["dice"] == 0.0 and math.isnan(r["cup"]["hd95"])  # no cup predicted


def test_case_metrics_exclusive_with_spacing():
    truth = A.astype(np.uint8)
    pred = B.astype(np.uint8)
    r = case_metrics(pred, truth, PROSTATE, spacing=(2.0, 1.0))
    assert r["prostate"]["hd95"] == pytest.approx(4.0)


def test_summarize_and_mean_dice():
    cases = [
        {"disc": {"dice": 0.8, "hd95": 2.0, "asd": 1.0}, "cup": {"dice": 0.0, "hd95": float("nan"), "asd": float("nan")}},
        {"disc": {"dice": 0.6, "hd95": 4.0, "asd": 3.0}, "cup": {"dice": 0.5, "hd95": 6.0, "asd": 2.0}},
    ]
    s = summarize(cases)
    assert list(s) == ["disc", "cup"]
    assert s["disc"] == pytest.approx({"dice": 0.7, "hd95": 3.0, "asd": 2.0})
    # dice counts the failed case; distances average where defined
    assert s["cup"] == pytest.approx({"dice": 0.25, "hd95": 6.0, "asd": 2.0})
    assert mean_dice(s) == pytest.approx((0.7 + 0.25) / 2)


def test_summarize_all_undefined_distances_is_nan_without_warning():
    nan = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarize([{"v": {"dice": 0.0, "hd95": nan, "asd": nan}}])
    assert s["v"]["dice"] == 0.0 and math.isnan(s["v"]["hd95"]) and math.isnan(s["v"]["asd"])
    assert summarize([]) == {}
    assert math.isnan(mean_dice({}))


def test_json_safe():
    obj = {
        "a": float("nan"),
        "b": [1.0, float("inf"), -float("inf"), (np.float32(2.5), np.float64("nan"))],
        "c": {"d": np.int64(3), "e": np.array([1.0, np.nan])},
        "s": "text",
        "n": None,
    }
    out = json_safe(obj)
    assert out == {"a": None, "b": [1.0, None, None, [2.5, None]], "c": {"d": 3, "e": [1.0, None]}, "s": "text", "n": None}
    json.dumps(out, allow_nan=False)  # strict JSON
    assert isinstance(out["c"]["d"], int)


def test_json_safe_of_real_metrics():
    r = case_metrics(np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8), PROSTATE)
    text = json.dumps(json_safe(summarize([r])), allow_nan=False)
    assert json.loads(text) == {"prostate": {"dice": 0.0, "hd95": None, "asd": None}}


# --- property -------------------------------------------------------------------------------------

masks = arrays(dtype=bool, shape=st.tuples(st.integers(1, 12), st.integers(1, 12)))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_dice_properties(data):
    x = data.draw(masks)
    y = data.draw(arrays(dtype=bool, shape=x.shape))
    rxy, ryx = binary_metrics(x, y), binary_metrics(y, x)
    assert 0.0 <= rxy["dice"] <= 1.0
    assert rxy["dice"] == pytest.approx(ryx["dice"], abs=1e-6)
    if x.any() and y.any():  # the symmetric distances are symmetric too
        assert rxy["hd95"] == pytest.approx(ryx["hd95"], rel=1e-5)
        assert rxy["asd"] == pytest.approx(ryx["asd"], rel=1e-5)
    if x.any():
        assert binary_metrics(x, x)["dice"] == pytest.approx(1.0)
