"""The speed benchmark's machinery (bench/speed.py and its bench/speed_*.py modules), without timing
anything: the interleaving, the report rebuilt from the committed results, and the fresh-process path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import import_bench

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def test_interleaving_alternates_the_order_and_reports_every_timed_run():
    timing = import_bench("speed_timing")
    calls: list[str] = []
    res = timing.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3, warmup=1)
    # one warm-up round, then A B / B A / A B so that a load change hits both paths alike
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    for stats in res.values():
        assert len(stats["runs_s"]) == 3
        assert stats["min_s"] <= stats["median_s"]
    assert timing.ratio({"median_s": 3.0}, {"median_s": 2.0}) == 1.5


def test_interleaving_stops_at_its_budget_after_two_rounds():
    timing = import_bench("speed_timing")
    res = timing.interleaved({"a": lambda: None}, reps=50, warmup=0, budget_s=0.0)
    assert len(res["a"]["runs_s"]) == 2


def test_report_from_the_committed_results_is_the_committed_markdown(tmp_path):
    if not (RESULTS / "speed.json").is_file() or not (RESULTS / "speed.md").is_file():
        pytest.skip("no committed speed results")
    report = import_bench("speed_report")
    out = tmp_path / "speed.md"
    report.write_markdown(out, json.loads((RESULTS / "speed.json").read_text(encoding="utf-8")))
    assert out.read_text(encoding="utf-8") == (RESULTS / "speed.md").read_text(encoding="utf-8")


def test_fresh_process_measurements_reach_their_child_through_speed_py(tmp_path):
    memory = import_bench("speed_hrf_memory")
    res = memory.bench_hrf(tmp_path / "no-model", ["no_long_side"])
    # speed.py dispatched the hidden flag to hrf_child, which refused the missing model
    assert "model not found" in res["no_long_side"]["error"]
