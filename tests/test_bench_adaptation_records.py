"""The test-time adaptation benchmark's records and report (bench/adaptation/report.py): results outlive
their models, seeds line up, and the default is chosen on source domains only."""

from __future__ import annotations

import json

import pytest

from helpers import import_bench


@pytest.fixture(scope="module")
def report():
    return import_bench("adaptation.report")


def _record(seed, none, align, grid=None, source="A+B", task="vessels", kind="measured"):
    methods = {"none": {"dice": none, "per_case_dice": [none]}}
    if align is not None:
        methods["align"] = {"dice": align, "per_case_dice": [align], "selection": {"chosen": {}, **(grid or {})}}
    return {"key": f"{task}__{source}-C__ram_dsir__s{seed}", "task": task, "direction": f"{source}->C",
            "seed": seed, "job": {"source": source, "target": "C"}, "provenance": {"kind": kind}, "methods": methods}


def _grid(none, rows):
    """rows: [(setting, {domain: dice})], gentlest first."""
    return {"none_source_val": none, "grid": [{"setting": s, "source_val_dice": d} for s, d in rows]}


def test_records_merge_into_seed_aligned_lists(report, tmp_path):
    report.write_json(tmp_path / "a.json", _record(1, 0.60, 0.62, kind="recovered"))
    report.write_json(tmp_path / "b.json", _record(2, 0.70, None))  # align not scored yet on seed 2
    records = report.load_records(tmp_path)
    cell = report.aggregate(records, ["align"])["vessels"]["A+B->C"]
    assert cell == {"seeds": [1, 2], "none": [0.6, 0.7], "align": [0.62, None]}
    # the gain pairs seeds: seed 2's none does not dilute it
    assert report.unseen_gains({"vessels": {"A+B->C": cell}}, "align") == {"vessels: A+B->C": pytest.approx(0.02)}
    assert report.complete(records[0], ["align"]) and not report.complete(records[1], ["align"])
    assert json.loads((tmp_path / "a.json").read_text())["provenance"]["kind"] == "recovered"


def test_held_out_source_gain_never_uses_the_scored_domain_to_choose(report):
    none = {"A": 0.5, "B": 0.5}
    # setting 2 is best on A, setting 1 on B: each domain is scored at the setting the OTHER chose
    grid = _grid(none, [({"s": 1}, {"A": 0.40, "B": 0.60}), ({"s": 2}, {"A": 0.70, "B": 0.45})])
    gain = report.held_out_source_gain(_record(0, 0.5, 0.5, grid), "align")
    assert gain == pytest.approx(((0.40 - 0.5) + (0.45 - 0.5)) / 2)  # chosen elsewhere, both lose
    # a single source or a record without its grid (recovered) gives no source-side evidence
    assert report.held_out_source_gain(_record(0, 0.5, 0.5, _grid({"A": 0.5}, [({}, {"A": 0.6})]), source="A"),
                                       "align") is None
    assert report.held_out_source_gain(_record(0, 0.5, 0.5), "align") is None


def test_the_default_follows_the_sources_not_the_unseen_domain(report):
    helps = _grid({"A": 0.5, "B": 0.5}, [({"s": 1}, {"A": 0.52, "B": 0.53})])
    hurts = _grid({"A": 0.5, "B": 0.5}, [({"s": 1}, {"A": 0.45, "B": 0.46})])
    # align helps on the sources but loses on the unseen domain: the default is still align, and the
    # target check (unseen) reports the miss apart
    records = [_record(0, 0.6, 0.5, helps, source=s) for s in ("A+B", "B+A")]
    default, verdicts = report.choose_default(records, ["align"])
    assert default == "align" and verdicts["align"]["benefit"]
    assert not report.target_check(report.aggregate(records, ["align"]), ["align"])["align"]["meets"]
    # the reverse: better unseen Dice cannot make a method the default
    records = [_record(0, 0.5, 0.6, hurts, source=s) for s in ("A+B", "B+A")]
    assert report.choose_default(records, ["align"])[0] is None


def test_without_a_benefit_on_the_sources_the_cheapest_safe_method(report):
    """Held-out sources were seen in training: when no method helps there, the default is the cheapest
    one that does no harm (>= -0.01), never the one that helps most on the unseen domain."""
    slight = _grid({"A": 0.5, "B": 0.5}, [({"s": 1}, {"A": 0.499, "B": 0.498})])
    harmful = _grid({"A": 0.5, "B": 0.5}, [({"s": 1}, {"A": 0.47, "B": 0.47})])
    records = []
    for source in ("A+B", "B+A"):
        r = _record(0, 0.5, 0.51, slight, source=source)
        r["methods"]["prompt"] = {**r["methods"]["align"], "dice": 0.52}
        r["methods"]["adabn"] = {"dice": 0.70, "per_case_dice": [0.7], "selection": {"chosen": {}, **harmful}}
        records.append(r)
    timing = {"methods": {"align": {"x_plain": 1.3}, "prompt (1 step)": {"x_plain": 4.4},
                          "prompt (3 steps)": {"x_plain": 9.3}, "adabn": {"x_plain": 4.2}}}
    default, verdicts = report.choose_default(records, ["align", "prompt", "adabn"], timing)
    assert default == "align" and not verdicts["align"]["benefit"] and verdicts["align"]["safe"]
    assert verdicts["prompt"]["x_plain"] == 4.4 and not verdicts["adabn"]["safe"]
    timing["methods"]["align"]["x_plain"] = 5.0
    assert report.choose_default(records, ["align", "prompt", "adabn"], timing)[0] == "prompt"
