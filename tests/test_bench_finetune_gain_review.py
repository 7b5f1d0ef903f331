"""What corrections buy (bench/finetune/gain_report.py): runs of one base seed become the issue's JSON,
the representative ranking appears only with its weighting chosen, and the choice needs every seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import import_bench


@pytest.fixture(scope="module")
def report():
    return import_bench("finetune.gain_report")


def _run(folder: Path, name: str, k: int, seed: int, gain: float, chosen: list[str], base: dict) -> None:
    others = sorted(set(base) - set(chosen))
    base_other = sum(base[n] for n in others) / len(others)
    rec = {"chosen": chosen, "gain": gain, "dice_other": base_other + gain, "base_other": base_other,
           "heldout_before": 0.5, "heldout_after": 0.6, "finetune_seconds": 50.0}
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    (folder / "runs" / f"{name}__k{k}__s{seed}.json").write_text(json.dumps(rec))


def test_runs_become_results_with_their_base_seed(report, tmp_path):
    tune = report.TUNE_DIRECTION
    folder = tmp_path / tune.replace("->", "-")
    folder.mkdir()
    dice = {"a": 0.6, "b": 0.7, "c": 0.8, "d": 0.9}
    (folder / "base.json").write_text(json.dumps({"dice": dice, "mean": 0.75, "generalization_dice": 0.75,
                                                  "base_seed": 2, "model": "m"}))
    seeds = [0, 1]
    for s in seeds:
        _run(folder, "random", 3, s, 0.02 + s / 100, ["b", "c", "d"], dice)
        _run(folder, "representative_p1", 3, s, 0.05, ["a", "b", "c"], dice)
    # the weighting is not chosen until power 0 has run for every seed
    assert report.chosen_power(tmp_path, seeds)[0] is None
    _run(folder, "representative_p0", 3, 0, 0.07, ["a", "c", "d"], dice)
    assert report.chosen_power(tmp_path, seeds)[0] is None
    _run(folder, "representative_p0", 3, 1, 0.01, ["a", "c", "d"], dice)
    power, design = report.chosen_power(tmp_path, seeds)
    assert power == 1.0 and design["0"]["gain"] == [0.07, 0.01]  # mean 0.05 vs 0.04: power 1

    direction = [tuple(tune.split("->"))]
    results, missing = report.collect(tmp_path, direction, ["random", "representative"], [3], seeds, None)
    (entry,) = results
    assert entry["base_seed"] == 2 and "representative" not in entry["curves"]  # no weighting: not reported
    assert len(missing) == 2
    results, missing = report.collect(tmp_path, direction, ["random", "representative"], [3], seeds, power)
    (entry,) = results
    assert missing == [] and entry["gain"]["representative"]["3"] == [0.05, 0.05]
    assert entry["chosen"]["representative"]["3"] == ["a", "b", "c"]
    assert entry["chosen_base_dice"]["representative"]["3"] == [0.7, 0.7]
    targets = report.targets(results)
    assert targets[tune]["representative"]["beats_random"] is True
    assert targets[tune]["representative"]["at_least_0.05"] is True
