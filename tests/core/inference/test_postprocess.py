"""Largest component, hole filling and per-structure post-processing on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ramseg.core.labels import LabelScheme, OPTIC_DISC_CUP, PROSTATE
from napari_ramseg.core.inference.postprocess import fill_holes, keep_largest_component, postprocess_labels


def ring(shape, r0, r1, c0, c1):
    """Filled square [r0:r1, c0:c1] with its interior (one pixel in from the edge) removed."""
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    m[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = False
    return m


# --- keep_largest_component ---------------------------------------------------------------------


def test_two_blobs_largest_kept():
    m = np.zeros((10, 10), bool)
    m[1:4, 1:4] = True  # 9 px
    m[6:8, 6:8] = True  # 4 px
    out = keep_largest_component(m)
    expected = np.zeros_like(m)
    expected[1:4, 1:4] = True
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == bool


def test_connectivity_diagonal_neighbours():
    m = np.zeros((6, 6), bool)
    m[0:2, 0:2] = True  # 4 px
    m[2, 2] = True  # touches the block only diagonally
    m[4:6, 3:6] = True  # 6 px
    # full (8-) connectivity: block + diagonal pixel = 5 < 6
    np.testing.assert_array_equal(keep_largest_component(m), np.pad(np.ones((2, 3), bool), ((4, 0), (3, 0))))
    m[3, 3] = True  # now 8-connects the 2x2 block via (2, 2), (3, 3) to the 2x3 block: one component of 12
    np.testing.assert_array_equal(keep_largest_component(m), m)
    # 4-connectivity: the 2x3 block plus (3, 3) above it is the largest (7)
    out4 = keep_largest_component(m, connectivity=1)
    assert out4.sum() == 7 and out4[3, 3] and not out4[0, 0]


def test_empty_and_single_component_unchanged():
    empty = np.zeros((5, 5), bool)
    assert not keep_largest_component(empty).any()
    one = np.zeros((5, 5), bool)
    one[1:3, 1:4] = True
    np.testing.assert_array_equal(keep_largest_component(one), one)


def test_largest_component_is_3d():
    # A 1x1 column through 5 slices (5 voxels) vs a 2x2 blob in one slice (4 voxels). Slice by slice
    # the blob would win in slice 2; in 3D the column is the largest component.
    v = np.zeros((5, 8, 8), bool)
    v[:, 1, 1] = True
    v[2, 5:7, 5:7] = True
    out = keep_largest_component(v)
    assert out[:, 1, 1].all()
    assert not out[2, 5:7, 5:7].any()
    assert out.sum() == 5


def test_largest_component_rejects_bad_input():
    with pytest.raises(ValueError):
        keep_largest_component(np.ones(4, bool))
    with pytest.raises(ValueError):
        keep_largest_component(np.ones((3, 3), bool), connectivity=3)


# --- fill_holes -----------------------------------------------------------------------------------


def test_ring_is_filled():
    m = ring((10, 10), 2, 8, 2, 8)
    out = fill_holes(m)
    expected = np.zeros_like(m)
    expected[2:8, 2:8] = True
    np.testing.assert_array_equal(out, expected)


def test_open_ring_is_not_filled():
    m = ring((10, 10), 2, 8, 2, 8)
    m[2, 4] = False  # a gap to the outside
    np.testing.assert_array_equal(fill_holes(m), m)


def test_3d_tube_filled_per_slice():
    # A tube (a ring in every slice) that is open at the top and bottom: a strict 3D fill leaves it
    # hollow, the per-slice fill (the default, for prostate volumes) fills it.
    v = np.stack([ring((10, 10), 2, 8, 2, 8)] * 4)
    solid = np.zeros_like(v)
    solid[:, 2:8, 2:8] = True
    np.testing.assert_array_equal(fill_holes(v), solid)
    np.testing.assert_array_equal(fill_holes(v, slice_axis=None), v)


def test_3d_closed_cavity_filled_both_ways():
    v = np.zeros((7, 7, 7), bool)
    v[1:6, 1:6, 1:6] = True
    v[2:5, 2:5, 2:5] = False  # sealed cavity
    solid = np.zeros_like(v)
    solid[1:6, 1:6, 1:6] = True
    np.testing.assert_array_equal(fill_holes(v), solid)
    np.testing.assert_array_equal(fill_holes(v, slice_axis=None), solid)


def test_fill_holes_other_slice_axis():
    # rings lie in planes of constant axis 2: filling along axis 0 sees no closed ring
    v = np.stack([ring((10, 10), 2, 8, 2, 8)] * 4, axis=2)
    np.testing.assert_array_equal(fill_holes(v, slice_axis=0), v)
    solid = np.zeros_like(v)
    solid[2:8, 2:8, :] = True
    np.testing.assert_array_equal(fill_holes(v, slice_axis=2), solid)


# --- postprocess_labels: nested -----------------------------------------------------------------


def test_nested_cup_outside_disc_removed():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:12, 2:12] = 1  # disc, 100 px
    labels[5:8, 5:8] = 2  # cup inside the disc, 9 px
    labels[15:19, 14:18] = 2  # a "cup" island outside the disc (16 px, larger than the real cup)
    out = postprocess_labels(labels, OPTIC_DISC_CUP)
    expected = np.zeros_like(labels)
    expected[2:12, 2:12] = 1
    expected[5:8, 5:8] = 2
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == labels.dtype


def test_nested_second_cup_piece_becomes_disc_and_holes_filled():
    labels = np.zeros((20, 20), np.int32)
    labels[ring((20, 20), 1, 15, 1, 15)] = 1  # disc outline with a hole around the cup
    labels[2:14, 2:14][ring((12, 12), 0, 12, 0, 12)] = 1  # thicker ring
    labels[6:10, 6:10] = 2  # cup, 16 px, in the middle of the hole
    labels[1, 1] = 2  # a 1-px cup speck on the disc ring
    out = postprocess_labels(labels, OPTIC_DISC_CUP)
    expected = np.zeros_like(labels)
    expected[1:15, 1:15] = 1  # disc filled: the background between ring and cup becomes disc
    expected[6:10, 6:10] = 2
    np.testing.assert_array_equal(out, expected)  # the speck is still disc, not background


def test_nested_cup_never_outside_disc():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(30, 30)).astype(np.uint8)
    out = postprocess_labels(labels, OPTIC_DISC_CUP)
    disc, cup = out >= 1, out >= 2
    assert not (cup & ~disc).any()
    np.testing.assert_array_equal(keep_largest_component(disc), disc)
    np.testing.assert_array_equal(keep_largest_component(cup), cup)


def test_switches_off():
    labels = np.zeros((10, 10), np.uint8)
    labels[ring((10, 10), 1, 6, 1, 6)] = 1
    labels[8, 8] = 1
    np.testing.assert_array_equal(postprocess_labels(labels, OPTIC_DISC_CUP, False, False), labels)
    only_fill = postprocess_labels(labels, OPTIC_DISC_CUP, largest_component=False)
    assert only_fill[8, 8] == 1 and only_fill[1:6, 1:6].all()
    only_lcc = postprocess_labels(labels, OPTIC_DISC_CUP, fill=False)
    assert only_lcc[8, 8] == 0 and only_lcc[3, 3] == 0


# --- postprocess_labels: exclusive ----------------------------------------------------------------


def test_exclusive_prostate_volume():
    v = np.zeros((6, 12, 12), np.uint8)
    v[1:5, 2:9, 2:9] = 1
    v[1:5, 5, 5] = 0  # "urethra": a tube through the gland, open at both ends
    v[0, 10, 10] = 1  # false-positive speck
    out = postprocess_labels(v, PROSTATE)
    expected = np.zeros_like(v)
    expected[1:5, 2:9, 2:9] = 1
    np.testing.assert_array_equal(out, expected)


def test_exclusive_classes_do_not_overwrite_each_other():
    scheme = LabelScheme(("outer", "inner"), "exclusive")
    labels = np.zeros((16, 16), np.uint8)
    labels[ring((16, 16), 1, 15, 1, 15)] = 1  # class 1 ring
    labels[ring((16, 16), 5, 11, 5, 11)] = 2  # class 2 ring inside it, background in between
    labels[12, 3] = 2  # class-2 speck inside the class-1 hole region, smaller than the class-2 ring
    out = postprocess_labels(labels, scheme)
    expected = np.ones((16, 16), np.uint8)
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = 0
    expected[5:11, 5:11] = 2  # class 2 ring and its own hole (inner enclosure wins)
    np.testing.assert_array_equal(out, expected)  # the gap and the removed speck become class 1


def test_bad_labels_shape():
    with pytest.raises(ValueError):
        postprocess_labels(np.zeros(5, np.uint8), PROSTATE)
