"""The worklist's side of issue 29: a replaced scan is never shown with the old prediction (27), an
unreadable file stays listed with its reason (28), and worklist.json is validated as it is read back,
one clear line per bad entry (32)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.review.worklist import Worklist
from napari_ramseg.errors import RamsegInputError


@pytest.fixture()
def scans(tmp_path, synthetic_data):
    folder = tmp_path / "scans"
    folder.mkdir()
    for domain in ("siteA", "siteB"):
        shutil.copy(synthetic_data / domain / "images" / "case0.png", folder / f"{domain}.png")
    return folder


@pytest.fixture()
def predictor(tiny_model):
    return Predictor.from_path(tiny_model, device="cpu", precision="fp32")


def test_a_replaced_scan_is_segmented_again_and_never_opens_with_the_old_prediction(scans, predictor,
                                                                                     synthetic_data):
    work = Worklist(scans)
    list(work.iter_segment(predictor, "m"))
    work.mark("siteA.png", "corrected", case_id="x-r1")
    replacement = synthetic_data / "siteB" / "images" / "case3.png"
    shutil.copy(replacement, scans / "siteA.png")  # another image under the same name
    os.utime(scans / "siteA.png", ns=(1, 1))  # whatever its time says

    again = Worklist(scans)
    assert again.pending("m") == ["siteA.png"] and again.stale("siteA.png") and not again.stale("siteB.png")
    with pytest.raises(RamsegInputError, match="replaced since it was segmented"):
        again.load_prediction("siteA.png")
    list(again.iter_segment(predictor, "m"))
    new = predictor.predict(again.load_image("siteA.png").array).labels
    np.testing.assert_array_equal(again.load_prediction("siteA.png"), new)
    case = again.cases["siteA.png"]
    assert case.status == "untouched" and case.case_id is None  # what was corrected was another image
    assert Worklist(scans).pending("m") == []  # recorded: not segmented a third time


def test_an_unchanged_scan_whose_time_changed_is_not_segmented_again(scans, predictor):
    work = Worklist(scans)
    list(work.iter_segment(predictor, "m"))
    os.utime(scans / "siteB.png", ns=(5, 5))  # touched, same bytes
    assert Worklist(scans).pending("m") == []


def test_an_unreadable_scan_is_listed_first_with_its_reason(scans, predictor):
    (scans / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    work = Worklist(scans)
    list(work.iter_segment(predictor, "m"))  # the folder goes on past it
    assert work.cases["siteA.png"].prediction is not None and work.cases["siteB.png"].prediction is not None
    broken = work.cases["broken.png"]
    assert "cannot read this file" in broken.refused and broken.row["fits"] is False
    assert work.order()[0] == "broken.png"  # first for review
    assert work.next_case() != "broken.png"  # nothing to open
    with pytest.raises(RamsegInputError, match="cannot read this file"):
        work.load_prediction("broken.png")


@pytest.mark.parametrize("edit, message", [
    (lambda case: case.update(row=[1, 2]), "cases.siteA.png.row: input should be a valid dictionary"),
    (lambda case: case["row"].pop("file"), "cases.siteA.png.row.file: field required"),
    (lambda case: case.pop("file"), "cases.siteA.png.file: field required"),
    (lambda case: case.update(prediction="../../elsewhere.tif"), "lies outside the worklist's folder"),
    (lambda case: case.update(measured="disagreement"), "cases.siteA.png.measured: input should be a valid list"),
    (lambda case: case.update(scan={"size": "big"}), "cases.siteA.png.scan.size"),
], ids=["row-not-object", "row-without-file", "case-without-file", "prediction-outside", "measured", "scan"])
def test_a_damaged_worklist_state_is_one_clear_line(scans, predictor, edit, message):
    work = Worklist(scans)
    list(work.iter_segment(predictor, "m"))
    state = json.loads(work.state_path.read_text())
    edit(state["cases"]["siteA.png"])
    work.state_path.write_text(json.dumps(state))
    with pytest.raises(RamsegInputError, match="cannot read the worklist state") as err:
        Worklist(scans)
    text = str(err.value)
    assert "cases.siteA.png" in text and message in text and len(text.splitlines()) == 1


def test_a_case_that_is_not_an_object_is_one_clear_line(scans, predictor):
    work = Worklist(scans)
    list(work.iter_segment(predictor, "m"))
    state = json.loads(work.state_path.read_text())
    state["cases"]["siteB.png"] = "reviewed"
    work.state_path.write_text(json.dumps(state))
    with pytest.raises(RamsegInputError, match=r"state \(cases.siteB.png: input should be a valid dictionary .*\); move it away"):
        Worklist(scans)
