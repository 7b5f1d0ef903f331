"""The worklist: every scan segmented once, ranked for review, its state on disk after every change."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.review.report import read_report
from napari_ramseg.core.review.worklist import Worklist
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


@pytest.fixture()
def same_stems(tmp_path, synthetic_data):
    """A folder with two scans of one stem (a.png, a.tif) and one of its own (b.png)."""
    from napari_ramseg.io import read_image, write_image

    images = sorted((synthetic_data / "siteA" / "images").glob("*.png"))
    folder = tmp_path / "same"
    folder.mkdir()
    shutil.copy(images[0], folder / "a.png")
    write_image(folder / "a.tif", read_image(images[1]))
    shutil.copy(images[2], folder / "b.png")
    return folder


def test_scans_of_one_stem_are_cases_of_their_own_and_keep_their_state(same_stems, tiny_model):
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    work = Worklist(same_stems)
    names = {f: work.case_name(f) for f in work.cases}
    assert names == {"a.png": "a.png", "a.tif": "a.tif", "b.png": "b"}
    list(work.iter_segment(predictor, "m"))
    report = read_report(work.root / "report.csv")
    assert sorted((r["case"], r["file"]) for r in report) == [("a.png", "a.png"), ("a.tif", "a.tif"), ("b", "b.png")]
    predictions = sorted(p.name for p in (work.root / "predictions").iterdir())
    assert predictions == ["a.png.tif", "a.tif.tif", "b.png.tif"]  # one each, none over another
    np.testing.assert_array_equal(work.load_prediction("a.tif"),
                                  predictor.predict(work.load_image("a.tif").array).labels)
    work.mark("a.png", "reviewed")
    work.mark("a.tif", "corrected", case_id="a-r1")
    order = work.order()

    again = Worklist(same_stems)  # reopened: the same names, the same state, nothing segmented twice
    assert {f: again.case_name(f) for f in again.cases} == names
    assert again.cases["a.png"].status == "reviewed" and again.cases["a.tif"].case_id == "a-r1"
    assert again.order() == order and again.pending("m") == []


def test_a_state_written_with_stems_as_case_names_still_loads(same_stems, tiny_model):
    """Before case names were made unique, every row's case was its stem, so a.png and a.tif were both
    "a" in worklist.json and ranking them failed; such a state loads, ranks and reports."""
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    work = Worklist(same_stems)
    list(work.iter_segment(predictor, "m"))
    work.mark("a.tif", "corrected", case_id="a-r1")
    state = json.loads(work.state_path.read_text())
    for file, case in state["cases"].items():
        case["row"]["case"] = file.rsplit(".", 1)[0]  # as the worklist wrote it before: "a", "a", "b"
    work.state_path.write_text(json.dumps(state))

    old = Worklist(same_stems)
    assert old.cases["a.tif"].status == "corrected" and old.cases["a.tif"].case_id == "a-r1"
    assert old.pending("m") == []  # its predictions are kept
    assert sorted(old.order()) == ["a.png", "a.tif", "b.png"]
    report = read_report(old.write_report())
    assert sorted(r["case"] for r in report) == ["a.png", "a.tif", "b"]


def test_a_scan_added_under_a_taken_stem_renames_no_state(scans, tiny_model):
    """The state is kept by file name, so a case whose name grows its ending when a namesake arrives
    keeps its status and prediction; a folder with unique stems names its cases by stem, as before."""
    from napari_ramseg.io import read_image, write_image

    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    work = Worklist(scans)
    assert all(work.case_name(f) == f[: -len(".png")] for f in work.cases)
    list(work.iter_segment(predictor, "m"))
    first = work.order()[0]
    work.mark(first, "reviewed")
    namesake = first[: -len(".png")] + ".tif"
    write_image(scans / namesake, read_image(scans / first))
    again = Worklist(scans)
    assert again.case_name(first) == first and again.case_name(namesake) == namesake
    assert again.cases[first].status == "reviewed" and again.pending("m") == [namesake]
    list(again.iter_segment(predictor, "m"))
    assert sorted(r["case"] for r in read_report(again.root / "report.csv")) == sorted(
        again.case_name(f) for f in again.cases)


def test_case_names_are_unique_stable_and_stems_where_they_can_be():
    from napari_ramseg.io import case_names

    # "a.png.tif"'s stem is "a.png", the name a.png takes beside a.tif: it takes its whole name too
    files = ["a.png", "a.tif", "a.png.tif", "b.png", "c.nii.gz", "C.png", "d.png", "d.png.tif", "e"]
    names = case_names(files)
    assert names == {"a.png": "a.png", "a.tif": "a.tif", "a.png.tif": "a.png.tif", "b.png": "b",
                     "c.nii.gz": "c.nii.gz", "C.png": "C.png", "d.png": "d", "d.png.tif": "d.png", "e": "e"}
    assert len(set(names.values())) == len(files)
    assert case_names(reversed(files)) == names  # the order the folder is listed in does not matter
    assert case_names(["scans/x.nii.gz"]) == {"x.nii.gz": "x"}
    with pytest.raises(ValueError, match="repeat"):
        case_names(["one/a.png", "two/a.png"])


def test_a_disc_model_takes_its_two_stages_and_a_discless_photograph_stays_listed(tmp_path):
    """A folder of whole fundus photographs and the optic disc model: each gets a full-size disc mask and
    its vCDR in the table (not one pass over the whole photograph); one without a disc gets an empty
    mask to draw in and the reason, and the folder goes on."""
    from PIL import Image

    from helpers import BrightDiscModel, synthetic_fundus
    from napari_ramseg.core.shift.domain_fit import FitResult

    class DiscModel(BrightDiscModel):
        channel_names = ["disc", "cup"]

        def check_fit(self, image, is_volume=None):
            return FitResult(True, None, None, "colour 2D image")

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(synthetic_fundus(disc=(150, 420), radius=40)).save(folder / "a_disc.png")
    Image.fromarray(synthetic_fundus(radius=0.1)).save(folder / "b_none.png")
    model = DiscModel()
    work = Worklist(folder)
    list(work.iter_segment(model, "disc-model"))
    assert all(shape[0] == shape[1] < 400 for shape in model.calls)  # ROIs only, never the photograph
    found, empty = work.load_prediction("a_disc.png"), work.load_prediction("b_none.png")
    assert found.shape == empty.shape == (400, 600)
    assert found[150, 420] >= 1 and not found[:, :300].any() and not empty.any()
    measures = [k for k in work.cases["a_disc.png"].row if k not in ("case", "file")]
    assert measures[:2] == ["vcdr", "hcdr"]  # the ratios lead, so the table's measure columns show them
    assert not work.cases["b_none.png"].row["fits"] and "no optic disc found" in work.cases["b_none.png"].row["fit_note"]
    assert {r["file"] for r in read_report(work.root / "report.csv")} == {"a_disc.png", "b_none.png"}
    assert work.order()[0] == "b_none.png"  # the case the model could not do comes first for review
