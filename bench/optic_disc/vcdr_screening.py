#!/usr/bin/env python
"""Does the optic-disc model's vCDR tell glaucoma from healthy eyes on a camera it never saw? (issue 28)

HRF (Canon CR-1) is a vessel set: no disc or cup masks, so no disc model ever trained on its labels, but
its file names give the diagnosis (``NN_g``: glaucoma, 15 photographs; ``NN_h``: healthy, 12; the 15
``NN_dr`` diabetic-retinopathy photographs are left out). Each photograph goes through the product's own
per-case pipeline (``core.review.pipeline.segment_case``: the fundus check, both stages with the settings the
model's ``model.json`` carries, the measures), as ``ramseg predict`` and the Segment dock run it.

Reported per model: the vCDR of each group, the area under the ROC curve of vCDR for glaucoma against
healthy (a refused photograph counts as the least suspicious, so refusals cost), its bootstrap 95 %
interval (2000 resamples of each group, seed 0), and the refusals. The experts' own vCDR cannot be
compared here: HRF has no cup masks. A partner pool that holds HRF crops (``bench/recipes/optic_disc_partners.py``)
has seen HRF's style but never its labels; the table says which models did.

    python -m bench.optic_disc.vcdr_screening --model bundled=optic-disc [--model NAME=RUN ...] --out bench/results/vcdr_screening
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import machine as bench_machine
from bench.common import results_io

BENCH = Path(__file__).resolve().parents[1]

GROUPS = {"g": "glaucoma", "h": "healthy"}


def photographs(data: Path) -> list[tuple[str, str, Path]]:
    """(case, group, path) of every HRF glaucoma and healthy photograph."""
    out = []
    for path in sorted((data / "vessels" / "HRF" / "images").iterdir()):
        group = path.stem.rsplit("_", 1)[-1]
        if group in GROUPS:
            out.append((path.stem, GROUPS[group], path))
    if not out:
        raise SystemExit(f"no HRF photographs under {data / 'vessels' / 'HRF' / 'images'}")
    return out


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a positive case scores above a negative one (ties: half)."""
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def bootstrap_interval(positive: np.ndarray, negative: np.ndarray, draws: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    values = [auc(rng.choice(positive, positive.size), rng.choice(negative, negative.size)) for _ in range(draws)]
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def score_model(name: str, model: str, cases: list[tuple[str, str, Path]]) -> dict:
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.core.review.pipeline import segment_case
    from napari_ramseg.io import read_image
    from napari_ramseg.models import resolve_model

    predictor = Predictor.from_path(resolve_model(model), device="cpu")
    rows, started = [], time.perf_counter()
    for case, group, path in cases:
        result = segment_case(predictor, read_image(path))
        vcdr = None if result.refused else result.measures.get("vcdr")
        rows.append({"case": case, "group": group, "vcdr": vcdr, "refusal": result.refusal})
        print(f"{name} {case}: {'refused: ' + result.refusal if result.refused else f'vCDR {vcdr:.3f}'}", flush=True)
    # a refused photograph is the least suspicious: it would not be flagged
    score = {g: np.array([r["vcdr"] if r["vcdr"] is not None else -1.0 for r in rows if r["group"] == g])
             for g in GROUPS.values()}
    low, high = bootstrap_interval(score["glaucoma"], score["healthy"])
    meta = json.loads((Path(resolve_model(model)) / "model.json").read_text())
    return {"model": model, "iterations": meta.get("config", {}).get("iterations"),
            "partners": meta.get("ram_partners"), "rows": rows,
            "auc": auc(score["glaucoma"], score["healthy"]), "auc_95": [low, high],
            "mean_vcdr": {g: float(np.mean([r["vcdr"] for r in rows if r["group"] == g and r["vcdr"] is not None]))
                          for g in GROUPS.values()},
            "refused": {g: sum(r["vcdr"] is None for r in rows if r["group"] == g) for g in GROUPS.values()},
            "seconds": round(time.perf_counter() - started, 1)}


def report(result: dict) -> str:
    lines = ["# vCDR screening on an unseen camera: HRF glaucoma against healthy (issue 28)", "",
             f"Command: `{result['command']}`  ", f"Machine: {result['machine']}", "",
             "Each photograph through `core.review.pipeline.segment_case` (what `ramseg predict` and the Segment dock run). "
             "AUC: the chance that a glaucoma photograph gets a higher vCDR than a healthy one; a refused "
             "photograph counts as the least suspicious. 95 % interval: bootstrap over each group, 2000 draws.", "",
             "| model | iterations | RAM partners | glaucoma: mean vCDR (n) | healthy: mean vCDR (n) | AUC | 95 % interval | refused g / h |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        n = {g: sum(r["group"] == g for r in m["rows"]) for g in GROUPS.values()}
        partners = (m["partners"] or {}).get("folder", "sources only")
        lines.append(f"| {name} | {m['iterations']} | {partners} | {m['mean_vcdr']['glaucoma']:.3f} ({n['glaucoma']}) | "
                     f"{m['mean_vcdr']['healthy']:.3f} ({n['healthy']}) | **{m['auc']:.3f}** | "
                     f"{m['auc_95'][0]:.2f}-{m['auc_95'][1]:.2f} | {m['refused']['glaucoma']} / {m['refused']['healthy']} |")
    lines += ["", "HRF has no cup masks, so the experts' own vCDR cannot be put beside these here."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=MODEL",
                    help="a bundled model's name or a model folder")
    ap.add_argument("--data", type=Path, default=BENCH.parents[1] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "vcdr_screening")
    args = ap.parse_args(argv)
    cases = photographs(args.data)
    models = dict(m.split("=", 1) for m in args.model)
    result = {"command": "python -m bench.optic_disc.vcdr_screening " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "machine": bench_machine.one_line(bench_machine.describe()),
              "models": {name: score_model(name, model, cases) for name, model in models.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    results_io.write_json(args.out / "vcdr_screening.json", result)
    results_io.write_text(args.out / "README.md", report(result))
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
