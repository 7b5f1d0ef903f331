#!/usr/bin/env python
"""One-off: per-model records (``bench/results/adaptation_runs/``) from the report committed in 6eddbbf.

That run's models and score caches lived under the git-ignored ``bench/work/`` and are gone; its
committed ``adaptation.json`` (seed-mean Dice, 4 decimals) and ``adaptation_meta.json`` (per-case
Dice, 4 decimals; the chosen setting per method) still hold every per-model number. This script
rebuilds one record per model from them, read with ``git show`` at that commit, and says so in the
record's provenance. Not kept by the committed files, so absent here: the source-validation grid
(only the chosen point is known), seconds per case, case names of the optic-disc models. Vessel case
names and the job come from the generalization run's own job record when it is still there
(``bench/work/generalization/reference/jobs/``); the per-case Dice is checked against it.

    python -m bench.archive.recover            # writes only records that do not exist yet
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from bench.adaptation import report
from bench.generalization.jobs import build_jobs

BENCH = Path(__file__).resolve().parents[1]

COMMIT = "6eddbbfb5e51cbf3ade08ef7109d2a8badc2ce5e"
GEN_JOBS = BENCH / "work" / "generalization" / "reference" / "jobs"


def committed(path: str) -> dict:
    return json.loads(subprocess.run(["git", "show", f"{COMMIT}:{path}"], cwd=BENCH.parent, check=True,
                                     capture_output=True, text=True).stdout)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    results, meta = committed("bench/results/adaptation.json"), committed("bench/results/adaptation_meta.json")
    methods = meta["methods"]
    disc_jobs = {j.key: j for j in build_jobs(["optic_disc"], "quick", [0, 1, 2], ["ram_dsir"],
                                             {"device": "cpu", "threads": 1})}
    provenance = {"kind": "recovered", "commit": COMMIT[:7],
                  "from": "bench/results/adaptation.json (seed-mean Dice) and adaptation_meta.json (per-case Dice, "
                          "chosen settings) as committed in " + COMMIT[:7],
                  "command": meta["command"], "machine": meta["machine"],
                  "lacks": "source-validation grid (only the chosen setting), seconds per case"}
    for key, per_case in meta["per_case"].items():
        if (report.RUNS / f"{key}.json").exists():
            continue
        task = key.split("__")[0]
        gen_record, cases = None, None
        if task == "vessels":
            path = GEN_JOBS / f"{key}.json"
            gen_record = json.loads(path.read_text()) if path.exists() else None
            job = gen_record["job"] if gen_record else None
        else:
            job = asdict(disc_jobs[key])
        if job is None:
            print(f"{key}: no job record, skipped", flush=True)
            continue
        direction = f"{job['source']}->{job['target']}"
        cell = results[task][direction]
        seed_index = sorted(k for k in meta["per_case"] if k.startswith(f"{task}__{direction.replace('->', '-')}__"))
        # adaptation.json lists seeds in order; this model's seed is its place among the direction's keys by seed
        seeds = sorted(int(k.split("__")[3][1:]) for k in seed_index)
        i = seeds.index(job["seed"])
        entries = {}
        for method in ["none", *methods]:
            entry = {"dice": cell[method][i], "per_case_dice": per_case[method]}
            if method != "none":
                entry["selection"] = {"chosen": meta["chosen"][key][method]}
            entries[method] = entry
        note = dict(provenance)
        if gen_record:
            cases = [c["case"] for c in gen_record["per_case"]]
            match = all(abs(round(c["dice"], 4) - d) < 1e-9 for c, d in zip(gen_record["per_case"], per_case["none"]))
            entries["none"]["matches_record"] = match and len(cases) == len(per_case["none"])
            note["cases"] = "from the generalization job record " + path.name
        else:
            note["cases"] = "not kept (the model's own job record is gone)"
        generalization = gen_record["dice"] if gen_record else cell["none"][i]
        record = {"key": key, "task": task, "direction": direction, "seed": job["seed"], "job": job,
                  "generalization_dice": generalization, "cases": cases, "provenance": note, "methods": entries}
        report.write_json(report.RUNS / f"{key}.json", record)
        summary = ", ".join(f"{m} {e['dice']:.4f}" for m, e in entries.items())
        print(f"{key}: recovered ({summary})", flush=True)
    if not report.TIMING.exists() and meta.get("timing"):
        report.write_json(report.TIMING, {**meta["timing"], "machine": meta["machine"],
                                          "provenance": f"Measured by an earlier run; recovered from "
                                                        f"adaptation_meta.json as committed in {COMMIT[:7]}."})
    return 0


if __name__ == "__main__":
    sys.exit(main())
