"""The representative order in the product: descriptors kept beside report.csv (never as its columns), the
worklist measuring them with every prediction, ranking the folder once it is done, and keeping the
chosen ranking in its state."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.review.report import (case_row, descriptors_path, read_descriptors, read_report, write_descriptors,
                                              write_report)
from napari_ramseg.core.review.priority import descriptor, representative_order
from napari_ramseg.core.review.worklist import Worklist
from napari_ramseg.errors import RamsegInputError


class _Prediction:
    def __init__(self, labels, entropy):
        self.labels, self.entropy = labels, entropy


def _rows(features: dict[str, np.ndarray], uncertainty: dict[str, float]):
    from napari_ramseg.core.labels import VESSELS

    labels = np.zeros((8, 8), np.uint8)
    labels[:4] = 1
    return [case_row(n, _Prediction(labels, np.full((8, 8), uncertainty[n])), VESSELS, file=f"{n}.png",
                     descriptor=f) for n, f in features.items()]


def _clusters() -> dict[str, np.ndarray]:
    """Three tight groups far apart (five, three and two cases): the first three picks are one of each."""
    rng = np.random.default_rng(3)
    centres = {"a": [0.0, 0.0, 0.0], "b": [6.0, 0.0, 0.0], "c": [0.0, 6.0, 0.0]}
    sizes = {"a": 5, "b": 3, "c": 2}
    return {f"{k}{i}": np.asarray(centres[k]) + rng.normal(0, 0.05, 3) for k in centres for i in range(sizes[k])}


def test_representative_order_covers_every_cluster_first_whatever_the_input_order():
    feats = _clusters()
    order = representative_order(feats)
    assert {name[0] for name in order[:3]} == {"a", "b", "c"}
    assert order[0].startswith("a")  # the largest group's medoid first
    for seed in range(5):  # deterministic: the same order for any order of the input
        names = list(feats)
        np.random.default_rng(seed).shuffle(names)
        assert representative_order({n: feats[n] for n in names}) == order
    with pytest.raises(ValueError, match="different lengths"):
        representative_order({"x": np.zeros(3), "y": np.zeros(4)})


def test_report_keeps_descriptors_in_a_sidecar_not_as_columns(tmp_path):
    feats = _clusters()
    unc = {n: 0.2 for n in feats}
    path = write_report(tmp_path / "report.csv", _rows(feats, unc), "representative")
    back = read_report(path)
    assert [r["case"] for r in back] == representative_order(feats, unc)
    assert [int(r["review_priority"]) for r in back] == list(range(1, len(feats) + 1))
    assert "descriptor" not in back[0] and len(back[0]) < 12  # a few measures and scores, not 3 more columns
    kept = read_descriptors(descriptors_path(path))
    assert sorted(kept) == sorted(f"{n}.png" for n in feats)
    np.testing.assert_allclose(kept["a0.png"], feats["a0"], rtol=1e-6)  # float32 on disk
    # a report without descriptors takes the old sidecar away: the two always describe the same cases
    plain = [{k: v for k, v in r.items() if k != "descriptor"} for r in _rows(feats, unc)]
    write_report(path, plain, "uncertainty")
    assert not descriptors_path(path).exists()
    with pytest.raises(ValueError, match="descriptor"):
        write_report(path, plain, "representative")


def test_descriptor_sidecar_round_trip_and_damage(tmp_path):
    path = write_descriptors(tmp_path / "d.npz", {"a.png": np.arange(3.0), "b c.tif": np.ones(5)})
    back = read_descriptors(path)
    assert list(back) == ["a.png", "b c.tif"] and back["b c.tif"].shape == (5,)  # lengths may differ
    assert read_descriptors(tmp_path / "none.npz") == {}
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read the descriptors"):
        read_descriptors(path)


@pytest.fixture()
def scans(tmp_path, synthetic_data):
    folder = tmp_path / "scans"
    folder.mkdir()
    for domain in ("siteA", "siteB"):
        for p in sorted((synthetic_data / domain / "images").glob("*.png"))[:3]:
            shutil.copy(p, folder / f"{domain}_{p.name}")
    return folder


class _Counting:
    """The predictor, counting full predictions (to see what segmenting again does)."""

    def __init__(self, predictor):
        self._p, self.predictions = predictor, 0

    def predict(self, *args, **kwargs):
        self.predictions += 1
        return self._p.predict(*args, **kwargs)

    def predict_image(self, *args, **kwargs):  # a 2D case's path (core.tasks.disc.predict_2d)
        self.predictions += 1
        return self._p.predict_image(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._p, name)


def test_worklist_ranks_representative_once_the_folder_is_done_and_keeps_it(scans, tiny_model):
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    work = Worklist(scans, priority="representative")
    during = []
    for done, _total, _name in work.iter_segment(predictor, "m"):
        during.append(work.order())
        segmented = sorted(n for n, c in work.cases.items() if c.row is not None)
        assert during[-1][:done] == segmented  # no set-level ranking while the folder is being done
    order = work.order()
    feats = {n: descriptor(predictor, work.load_image(n).array) for n in work.cases}
    unc = {n: work.cases[n].row["mean_uncertainty"] for n in work.cases}
    assert order == representative_order(feats, unc)
    report = read_report(work.root / "report.csv")
    assert [r["file"] for r in report] == order and "descriptor" not in report[0]
    kept = read_descriptors(work.descriptors_path)
    assert sorted(kept) == sorted(work.cases)
    np.testing.assert_allclose(kept[order[0]], feats[order[0]], rtol=1e-6)

    again = Worklist(scans)  # as after closing napari: the ranking and its inputs from disk
    assert again.priority == "representative" and again.order() == order
    assert json.loads(again.state_path.read_text())["priority"] == "representative"
    assert again.pending("m") == []
    again.set_priority("uncertainty")
    by_entropy = again.order()
    assert [again.cases[n].row["mean_uncertainty"] for n in by_entropy] == sorted(unc.values(), reverse=True)
    assert [r["file"] for r in read_report(again.root / "report.csv")] == by_entropy  # re-ranked at once
    assert Worklist(scans).priority == "uncertainty"
    with pytest.raises(ValueError):
        again.set_priority("loudest")


def test_switching_ranking_measures_only_what_is_missing(scans, tiny_model):
    predictor = _Counting(Predictor.from_path(tiny_model, device="cpu", precision="fp32"))
    work = Worklist(scans)  # by uncertainty: no encoder pass for descriptors nobody asked for
    list(work.iter_segment(predictor, "m"))
    assert predictor.predictions == 6 and work.descriptors == {} and not work.descriptors_path.exists()
    work.set_priority("representative")
    assert sorted(work.unmeasured()) == sorted(work.cases) and sorted(work.pending("m")) == sorted(work.cases)
    assert work.order() == sorted(work.cases)  # nothing to rank by yet: by name
    list(work.iter_segment(predictor, "m"))  # measures the descriptors only
    assert predictor.predictions == 6 and len(work.descriptors) == 6 and work.pending("m") == []
    assert work.order() == representative_order(work.descriptors, {n: c.row["mean_uncertainty"]
                                                                   for n, c in work.cases.items()})
    work.set_priority("disagreement")  # several network passes per case: measured only when asked for
    assert sorted(work.unmeasured()) == sorted(work.cases) and sorted(work.pending("m")) == sorted(work.cases)
    list(work.iter_segment(predictor, "m"))
    assert predictor.predictions == 6  # the predictions were kept; only the disagreement was measured
    assert all(c.row["disagreement"] is not None for c in work.cases.values()) and work.pending("m") == []
    scores = [work.cases[n].row["disagreement"] for n in work.order()]
    assert scores == sorted(scores, reverse=True)

    work.set_priority("representative")  # measured once, kept: back at once
    assert work.pending("m") == [] and work.unmeasured() == []

    # another model: its predictions and descriptors replace the old ones
    old = {n: f.copy() for n, f in work.descriptors.items()}
    list(work.iter_segment(predictor, "another"))
    assert predictor.predictions == 12 and work.pending("another") == [] and sorted(work.descriptors) == sorted(old)

    work.descriptors_path.write_bytes(b"damaged")
    with pytest.raises(RamsegInputError, match="descriptors"):
        Worklist(scans)
