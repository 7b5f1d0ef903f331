"""bench/recipes/recipe_choice.py: the rule that turns leave-one-camera-out tables into a recipe choice."""

from __future__ import annotations

import json

from helpers import import_bench

choice = import_bench("recipes.recipe_choice")


def test_the_preferred_candidate_wins_a_tie_and_loses_a_clear_loss():
    assert choice.verdict({"540": 0.65, "768": 0.64}, "540", "768", 0.02)[0] == "768"
    assert choice.verdict({"540": 0.65, "768": 0.62}, "540", "768", 0.02)[0] == "540"


def test_a_clear_gain_wins_whatever_was_preferred():
    assert choice.verdict({"540": 0.65, "768": 0.70, "1024": 0.66}, "540", "1024", 0.02)[0] == "768"
    assert choice.verdict({"540": 0.65, "768": 0.66}, "540", None, 0.02)[0] == "540"


def test_the_table_uses_only_directions_every_candidate_finished(tmp_path):
    for name, rows in {"a": {"X->Y": [0.6], "X->Z": [0.7]}, "b": {"X->Y": [0.5]}}.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "generalization.json").write_text(json.dumps({"vessels": {d: {"ram_dsir": v} for d, v in rows.items()}}))
        (folder / "generalization_meta.json").write_text(json.dumps({"command": "c", "machine": {}}))
    out = tmp_path / "choice.md"
    choice.main(["--name", "t", "--candidate", f"a={tmp_path / 'a'}", "--candidate", f"b={tmp_path / 'b'}",
                 "--baseline", "a", "--out", str(out)])
    text = out.read_text()
    assert "X->Z" not in text and "| a | 0.6000 | **0.6000** |" in text and "**Verdict: a**" in text
