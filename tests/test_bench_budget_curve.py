"""bench/recipes/budget_curve.py: snapshots of leave-one-out runs scored on their held-out camera, and the budget rule."""

from __future__ import annotations

import json

from helpers import import_bench, make_synthetic_domains

from napari_ramseg.core.training.job import TrainRequest, run_training

budget = import_bench("recipes.budget_curve")


def test_the_fewest_iterations_within_tolerance_of_the_best_mean_win():
    rows = [{"iteration": it, "target": t, "unseen_mean": m} for it, t, m in
            [(500, "A", 0.60), (500, "B", 0.70), (1000, "A", 0.70), (1000, "B", 0.78),
             (1500, "A", 0.71), (1500, "B", 0.785), (2000, "A", 0.9)]]  # 2000: only A reached it, so it cannot count
    choice = budget.choose(rows, ["A", "B"], 0.01)
    assert choice["iteration"] == 1000 and abs(choice["best_mean"] - 0.7475) < 1e-9
    assert budget.choose(rows, ["A", "B"], 0.0)["iteration"] == 1500


def test_a_curve_over_runs_still_training_gives_no_verdict(tmp_path):
    running, finished = tmp_path / "running", tmp_path / "finished"
    running.mkdir()
    finished.mkdir()
    (running / "resume.json").write_text(json.dumps({"iteration": 1688, "config": {"iterations": 6000}}))
    (finished / "model.json").write_text("{}")
    assert budget.progress(running) == {"iteration": 1688, "planned": 6000}
    assert budget.progress(finished) is None
    record = {"command": "c", "machine": {}, "targets": ["A"], "tolerance": 0.01, "rows": [],
              "choice": {"iteration": 500, "mean": 0.6, "best_mean": 0.6},
              "unfinished": {"A": budget.progress(running)}}
    text = budget.render(record)
    assert "no verdict yet" in text and "1688 of 6000" in text and "Where it flattens" not in text
    record["unfinished"] = {"A": None}
    assert "Where it flattens: 500 iterations" in budget.render(record)


def test_every_snapshot_is_scored_on_the_held_out_domain_once(tmp_path, monkeypatch):
    domains = ["siteA", "siteB", "siteC"]
    root = make_synthetic_domains(tmp_path / "data", domains=domains, cases=3, size=48)
    run = tmp_path / "run"
    run_training(TrainRequest(data=root, domains=domains[:-1], out=run, iterations=4, size=32, batch=4, base_width=4,
                              device="cpu", precision="fp32", snapshot_every=2))
    out = tmp_path / "curve"
    assert budget.main(["--run", f"{domains[-1]}={run}", "--data", str(root), "--out", str(out)]) == 0
    record = json.loads((out / "curve.json").read_text())
    assert [r["iteration"] for r in record["rows"]] == [2, 4]
    assert record["rows"][-1]["source_validation"] is not None  # the run validates at its last iteration
    assert all(r["target"] == domains[-1] and 0.0 <= r["unseen_mean"] <= 1.0 for r in record["rows"])
    assert record["choice"]["iteration"] in (2, 4) and "Where it flattens" in (out / "README.md").read_text()
    # a second pass reads the kept scores instead of scoring again
    import napari_ramseg.core.evaluation.evaluate as evaluate

    monkeypatch.setattr(evaluate, "evaluate_domain", lambda *a, **k: (_ for _ in ()).throw(AssertionError("scored twice")))
    assert budget.main(["--run", f"{domains[-1]}={run}", "--data", str(root), "--out", str(out)]) == 0
