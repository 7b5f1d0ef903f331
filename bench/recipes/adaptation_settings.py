#!/usr/bin/env python
"""Align's window and strength for a bundled model, chosen on its own source domains (issue 15).

``bench/adaptation/benchmark.py`` chose align's setting per benchmark model on its source domains only; the
bundled models ship with the same choice, by the same rule, in their model.json ("adapt" block),
which ``ramseg predict|evaluate --adapt`` and the Segment dock lay over AdaptConfig's defaults:

- the cases: the model's own source-validation hold-out (``data.val_cases`` in its model.json, the
  split it was selected on), read from the data folder it was trained on, as ``ramseg evaluate``
  reads them, and segmented whole through ``AdaptedPredictor.predict_image`` (the product's path);
- the score: the project's case Dice (``metrics.case_dice``; a domain's unannotated structures left
  out), for a vessel model inside the field of view (``fov/`` masks; STARE's thresholded, as
  ``bench/common/tasks.py`` does);
- each source domain's cases adapted towards the profile of the OTHER source domains
  (``adaptation.restricted``), every setting of ``adaptation.GRIDS["align"]`` from gentlest to
  strongest; the best mean source-validation Dice wins, the gentler on a tie within ``adaptation.TIE``.

No unseen domain is looked at. The grid, the choice and the provenance go to
``bench/results/adaptation_bundled_settings.json`` (one entry per model); ``--write`` puts the choice
into the model's model.json (``checkpoint.write_adapt_settings``; the weights are not touched).

The optic-disc model was trained on ROIs that ``bench/recipes/optic_disc_data.py`` made before it drew
negatives (623 cases); ``--negatives 0`` makes that set again (same names and count; its checksum is
recorded beside model.json's, which it does not reproduce), while ``bench/work/optic_disc/bundled``
now holds the later set, whose jittered ROIs of the same names differ.

    OMP_NUM_THREADS=1 nice -n 5 python -m bench.recipes.adaptation_settings --model vessels --write
    python -m bench.recipes.optic_disc_data --negatives 0 --out /tmp/od0
    OMP_NUM_THREADS=1 nice -n 5 python -m bench.recipes.adaptation_settings --model optic-disc --data /tmp/od0/bundled --write
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.adaptation import benchmark as adaptation
from bench.common import machine as bench_machine
from bench.common import results_io
from bench.common import tasks as bench_tasks

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent

RESULTS = REPO / "bench" / "results" / "adaptation_bundled_settings.json"
METHOD = "align"
DATA = {"vessels": adaptation.DATA / "vessels"}  # a bundled model's training data, where it is known


def val_cases(metadata, data: Path) -> tuple[dict[str, list[Any]], str]:
    """({source domain: [its validation Case, ...]} as model.json's ``data.val_cases`` lists them,
    the folder's checksum as training computes it over every case of the source domains: equal to
    model.json's ``data.sha256`` when it holds the very files the model was trained on)."""
    from napari_ramseg.core.data.dataset import cases_checksum, discover

    listed = (metadata.extra.get("data") or {}).get("val_cases")
    if not listed:
        raise SystemExit("this model.json lists no data.val_cases: its source-validation cases are unknown")
    wanted: dict[str, list[str]] = {}
    for item in listed:
        domain, _, name = item.partition("/")
        wanted.setdefault(domain, []).append(name)
    missing_domains = sorted(set(wanted) - {d.name for d in data.iterdir() if d.is_dir()})
    if missing_domains:
        raise SystemExit(f"{data} lacks the source domain(s) {', '.join(missing_domains)}")
    found = discover(data, "domains", metadata.domains, labels=metadata.config.labels)
    by_key = {(c.domain, c.name): c for c in found.cases}
    missing = [f"{d}/{n}" for d, names in wanted.items() for n in names if (d, n) not in by_key]
    if missing:
        raise SystemExit(f"{len(missing)} validation case(s) not in {data}, e.g. {missing[0]}")
    checksum = cases_checksum(data, found.cases)[0]
    return {d: [by_key[(d, n)] for n in names] for d, names in wanted.items()}, checksum


def load_case(case, metadata, vessels: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, truth labels, field of view) at the model's working scale, where its training validation
    scored it (the image resized with antialiasing, the masks nearest): a vessel case's truth cleared
    outside its field of view (the prediction is cleared there too, so Dice is inside it)."""
    import torch

    from napari_ramseg.core.data.dataset import read_case_image, read_case_mask
    from napari_ramseg.core.data.geometry import resize_mask, working_shape

    image = read_case_image(case).array
    truth = read_case_mask(case, metadata.config.labels)
    fov = np.ones(truth.shape, bool)
    if vessels:
        fov_path = case.image.parent.parent / "fov" / f"{case.name}.png"
        fov = bench_tasks.read_index(fov_path) > 0 if fov_path.exists() else bench_tasks.threshold_fov(image)
    shape = working_shape(*truth.shape, metadata.config.preprocess)
    image = bench_tasks.resize_rgb(image, shape)
    truth, fov = (resize_mask(torch.from_numpy(np.array(m, np.uint8)), shape).numpy() for m in (truth, fov))
    return image, np.where(fov > 0, truth, 0).astype(np.uint8), fov > 0


def mean_dice(predictor, cases: list[tuple], labels, annotated: list[str] | None) -> float:
    from napari_ramseg.core.evaluation.metrics import case_dice

    scores = []
    for image, truth, fov in cases:
        pred = np.where(fov, predictor.predict_image(image).labels, 0)
        scores.append(case_dice(pred, truth, labels, annotated))
    return float(np.mean(scores))


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """adaptation.select's rule: the best mean, the earlier (gentler) row unless beaten by more than TIE."""
    best = rows[0]
    for row in rows[1:]:
        if row["mean"] > best["mean"] + adaptation.TIE:
            best = row
    return best


def run(model_dir: Path, data: Path) -> dict[str, Any]:
    from napari_ramseg.core.inference.adapt import AdaptedPredictor
    from napari_ramseg.core.config import ADAPT
    from napari_ramseg.core.inference.predictor import Predictor

    predictor = Predictor.from_path(model_dir, device="cpu")
    labels = predictor.labels
    vessels = tuple(labels.names) == ("vessel",)
    unannotated = predictor.metadata.extra.get("unannotated_labels") or {}
    annotated = {d: [n for n in labels.names if n not in unannotated.get(d, [])] for d in predictor.domains}
    by_domain, checksum = val_cases(predictor.metadata, data)
    cases = {d: [load_case(c, predictor.metadata, vessels) for c in found] for d, found in by_domain.items()}
    sources = list(cases)
    start = time.perf_counter()
    none = {d: mean_dice(predictor, cases[d], labels, annotated[d]) for d in sources}
    rows = []
    for setting in adaptation.GRIDS[METHOD]:
        config = replace(ADAPT, **setting)
        per_domain = {}
        for d in sources:
            others = [s for s in sources if s != d] or [d]
            adapted = AdaptedPredictor(adaptation.restricted(predictor, others), METHOD, config)
            per_domain[d] = mean_dice(adapted, cases[d], labels, annotated[d])
        mean = float(np.mean(list(per_domain.values())))
        rows.append({"setting": setting, "source_val_dice": per_domain, "mean": mean})
        print(f"{setting}: {rows[-1]['mean']:.4f} ({', '.join(f'{d} {v:.4f}' for d, v in per_domain.items())})",
              flush=True)
    best = choose(rows)
    return {"model": str(model_dir.resolve().relative_to(REPO)) if model_dir.resolve().is_relative_to(REPO)
            else str(model_dir), "method": METHOD, "data": data.name,
            "data_sha256": checksum,
            "data_is_the_training_data": checksum == predictor.metadata.extra["data"].get("sha256"),
            "val_cases": {d: len(c) for d, c in cases.items()},
            "score": "case Dice inside the field of view" if vessels else "case Dice (annotated structures)",
            "rule": "each source domain's validation cases adapted towards the other sources' profile; best mean "
                    "source-validation Dice over the grid (gentlest first), the gentler on a tie within "
                    f"{adaptation.TIE}",
            "grid": adaptation.GRIDS[METHOD], "tie": adaptation.TIE, "none_source_val": none,
            "none_mean": float(np.mean(list(none.values()))), "rows": rows, "chosen": best["setting"],
            "chosen_mean": best["mean"], "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a bundled model's name (vessels, optic-disc) or a model folder")
    ap.add_argument("--data", type=Path, default=None,
                    help="the domains folder the model was trained on (default: the bundled model's)")
    ap.add_argument("--write", action="store_true", help="also write the choice into the model's model.json")
    ap.add_argument("--note", default=None, help="recorded with the choice: how the data folder was made, say")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    import torch

    from napari_ramseg.core.models.checkpoint import load_metadata, write_adapt_settings
    from napari_ramseg.models import resolve_model

    torch.set_num_threads(1)
    model_dir = Path(resolve_model(args.model))
    data = args.data or DATA.get(args.model)
    if data is None or not Path(data).is_dir():
        raise SystemExit(f"no data folder for {args.model}: give --data")
    command = shlex.join(["python", "-m", "bench.recipes.adaptation_settings", *(argv if argv is not None else sys.argv[1:])])
    entry = {**run(model_dir, Path(data)), **({"note": args.note} if args.note else {}), "command": command,
             "machine": bench_machine.describe(),
             "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[model_dir.name] = entry
    results_io.write_json(args.out, results)
    print(f"{model_dir.name}: {METHOD} {entry['chosen']} (source-validation Dice {entry['chosen_mean']:.4f}, "
          f"none {entry['none_mean']:.4f}); wrote {args.out}", flush=True)
    if args.write:
        block = dict(load_metadata(model_dir).adapt or {})
        block[METHOD] = entry["chosen"]
        print(f"wrote {write_adapt_settings(model_dir, block)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
