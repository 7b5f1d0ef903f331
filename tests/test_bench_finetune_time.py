"""The fine-tune benchmarks' edges: no research data means nothing timed and nothing written; the
optic-disc report is written from whatever runs are cached (none here)."""

from __future__ import annotations

import json

from helpers import import_bench


def test_finetune_time_skips_cleanly_without_the_data(tmp_path, capsys):
    bench = import_bench("finetune.timing")
    assert bench.main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 0
    assert "nothing to time" in capsys.readouterr().out and not (tmp_path / "out").exists()


def test_finetune_time_report_says_when_a_round_is_over_the_limit():
    bench = import_bench("finetune.timing")
    rounds = {"defaults": {"seconds": 89.0, "phase_seconds": {"train": 61.0}, "iterations": 40,
                           "heldout_before": 0.8, "heldout_after": 0.81, "within_limit": True},
              "baseline: freeze none": {"seconds": 150.0, "phase_seconds": {"train": 120.0}, "iterations": 40,
                                        "heldout_before": None, "heldout_after": None, "within_limit": False}}
    text = bench.markdown({"command": "python -m bench.finetune.timing",
                           "machine": {"cpu": "AMD EPYC", "torch_threads": 2},
                           "load_average": 0.1, "model": "m", "cases": ["a", "b", "c"], "target": "CHASE_DB1",
                           "replay_domains": ["HRF", "STARE"], "rounds": rounds})
    assert "| defaults | 89.0 | yes | 40 |" in text and "| **no** |" in text and "0.800 -> 0.810" in text


def test_finetune_gain_disc_reports_from_the_cache(tmp_path):
    bench = import_bench("finetune.gain_disc")
    assert bench.main(["--report-only", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "finetune_gain_optic_disc.json").read_text()) == []
    meta = json.loads((tmp_path / "out" / "finetune_gain_optic_disc_meta.json").read_text())
    assert len(meta["not_run"]) == 2 * 4 * 4 * 3  # directions x rankings x k x seeds
    assert "optic disc" in (tmp_path / "out" / "finetune_gain_optic_disc.md").read_text()
