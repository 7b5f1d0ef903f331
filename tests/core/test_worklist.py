"""The worklist: every scan segmented once, ranked for review, its state on disk after every change."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_ramseg.core.infer import Predictor
from napari_ramseg.core.report import read_report
from napari_ramseg.core.worklist import Worklist
from napari_ramseg.errors import RamsegInputError


@pytest.fixture()
def scans(tmp_path, synthetic_data):
    folder = tmp_path / "scans"
    folder.mkdir()
    for domain in ("siteA", "siteB"):
        for p in sorted((synthetic_data / domain / "images").glob("*.png"))[:2]:
            shutil.copy(p, folder / f"{domain}_{p.name}")
    (folder / "notes.txt").write_text("not a scan")
    return folder


def test_segment_rank_mark_and_reopen(scans, tiny_model):
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    work = Worklist(scans)
    assert sorted(work.cases) == sorted(p.name for p in scans.glob("*.png"))
    assert work.pending(str(tiny_model)) == sorted(work.cases)
    steps = list(work.iter_segment(predictor, str(tiny_model)))
    assert [s[:2] for s in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert work.pending(str(tiny_model)) == []
    order = work.order()
    uncertainty = [work.cases[n].row["mean_uncertainty"] for n in order]
    assert uncertainty == sorted(uncertainty, reverse=True)
    report = read_report(work.root / "report.csv")
    assert [r["file"] for r in report] == order and report[0]["review_priority"] == "1"
    first = order[0]
    labels = work.load_prediction(first)
    np.testing.assert_array_equal(labels, predictor.predict(work.load_image(first).array).labels)
    assert work.next_case() == first
    work.mark(first, "reviewed")
    assert work.next_case() == order[1] and work.next_case(after=order[1]) == order[2]
    work.mark(order[1], "corrected", case_id="x-r1")

    again = Worklist(scans)  # as after closing napari: everything from worklist.json
    assert again.cases[first].status == "reviewed"
    assert again.cases[order[1]].status == "corrected" and again.cases[order[1]].case_id == "x-r1"
    assert again.order() == order and again.counts() == {"untouched": 2, "reviewed": 1, "corrected": 1}
    assert again.pending(str(tiny_model)) == []  # nothing segmented twice
    assert again.pending("another model") == order or sorted(again.pending("another model")) == sorted(order)
    state = json.loads(again.state_path.read_text())
    assert state["version"] == 1 and set(state["cases"]) == set(order)


def test_a_new_scan_joins_untouched_and_a_broken_state_says_so(scans, tiny_model):
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    work = Worklist(scans)
    list(work.iter_segment(predictor, "m"))
    shutil.copy(next(scans.glob("*.png")), scans / "zz_new.png")
    again = Worklist(scans)
    assert again.cases["zz_new.png"].status == "untouched" and again.pending("m") == ["zz_new.png"]
    assert again.order()[-1] == "zz_new.png"  # not segmented yet: last
    with pytest.raises(ValueError):
        again.mark("zz_new.png", "done")
    again.state_path.write_text("{not json")
    with pytest.raises(RamsegInputError, match="worklist state"):
        Worklist(scans)


def test_stop_leaves_the_done_cases(scans, tiny_model):
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    work = Worklist(scans)
    calls = []
    steps = list(work.iter_segment(predictor, "m", cancelled=lambda: len(calls) >= 2,
                                   progress=lambda done, total: calls.append(done)))
    assert len(steps) == 2 and len(Worklist(scans).pending("m")) == 2


def test_a_folder_without_scans_is_refused(tmp_path):
    with pytest.raises(RamsegInputError, match="no readable images"):
        Worklist(tmp_path)
