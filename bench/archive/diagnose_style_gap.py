#!/usr/bin/env python
"""Diagnostic for issue 6: how much of each direction's domain gap is the image "style" that RAM works on?

RAM changes only the low-frequency Fourier amplitude of an image (colour, illumination, contrast).
This script asks how much Dice a trained model gains on the unseen domain when the unseen images are
given the source's low-frequency amplitude: the same transform RAM applies at training time
(``core.method.ram.amplitude_mixup``, window L = 0.1), with lambda = 0, so each target image takes the
whole low-frequency amplitude of a randomly chosen source training image, resized to its shape.

- If the swap closes most of the gap to the in-domain ceiling, the shift is the kind RAM models.
- If it closes little, the remaining gap lies in what amplitude mixing cannot change: resolution and
  blur, anatomy and pathology, and how each dataset was annotated.

A control swaps each target image's amplitude with that of another target image. It measures what
the transform itself costs, with no change of domain.

Every job trains on the source only, with the quick budget and source-only selection, as in
``bench/generalization/benchmark.py``. The target's masks are used for scoring alone, and nothing is chosen
on them. It does not measure the method.

    python -m bench.archive.diagnose_style_gap --out bench/results/diagnostics/style_gap   # ~15 min, 2 cores
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.generalization import benchmark as gen
from bench.generalization.jobs import Job, build_jobs
from bench.common import results_io

BENCH = Path(__file__).resolve().parents[1]


def style_swap(image: np.ndarray, partner: np.ndarray, window_ratio: float) -> np.ndarray:
    """``image``'s low-frequency amplitude replaced by ``partner``'s (resized to its shape); (3, H, W)."""
    import torch
    import torch.nn.functional as F

    from napari_ramseg.core.method.ram import amplitude_mixup

    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    p = F.interpolate(torch.from_numpy(np.ascontiguousarray(partner))[None], size=x.shape[-2:], mode="bilinear",
                      align_corners=False, antialias=True)
    return amplitude_mixup(x, p, torch.zeros(1), window_ratio)[0].numpy()


def run(job: Job, data_root: str, work: str) -> dict[str, Any]:
    from napari_ramseg.core.config import MethodConfig

    window = MethodConfig().window_ratio
    trained = gen.train_job(job, data_root, work)
    rng = np.random.default_rng(0)
    sources = [gen.to_sample(p, job.source).image for p in trained.source_cases]
    targets = {n: gen.to_sample(trained.target_cases[n], job.target).image for n in trained.test_names}
    names = list(targets)
    source_partner = {n: sources[int(rng.integers(len(sources)))] for n in names}
    # another target image (never itself): the control
    target_partner = {n: targets[names[(i + 1 + int(rng.integers(len(names) - 1))) % len(names)]] for i, n in enumerate(names)}

    def mean_dice(transform=None) -> float:
        return round(float(np.mean([r["dice"] for r in gen.score_job(job, trained, transform)])), 4)

    return {"direction": job.direction, "method": job.method, "task": job.task, "iterations": job.iterations,
            "as_is": mean_dice(),
            "source_style": mean_dice(lambda n, img: style_swap(img, source_partner[n], window)),
            "target_style_control": mean_dice(lambda n, img: style_swap(img, target_partner[n], window)),
            "window_ratio": window, **trained.record}


def _worker(args):
    job, data_root, work = args
    import torch

    torch.set_num_threads(1)
    return run(job, data_root, work)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="vessels,optic_disc")
    ap.add_argument("--methods", default="erm,ram_dsir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=gen.REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=BENCH / "work" / "generalization")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    tasks, methods = args.tasks.split(","), args.methods.split(",")
    counts = {task: gen.prepare_and_count(task, "quick", args.data, args.work)[0] for task in tasks}
    jobs = build_jobs(tasks, "quick", [args.seed], methods, {"device": "cpu", "threads": 1}, counts)
    t0 = time.time()
    payload = [(j, str(args.data), str(args.work)) for j in jobs]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        rows = []
        for row in pool.imap_unordered(_worker, payload):
            print(json.dumps({k: row[k] for k in ("direction", "method", "as_is", "source_style", "target_style_control")}),
                  flush=True)
            rows.append(row)
    order = {(j.direction, j.method): i for i, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[(r["direction"], r["method"])])
    ceilings = {}
    headline = BENCH / "results" / "generalization.json"
    if headline.exists():  # the quick table's in-domain ceilings (3 seeds), for the gap column
        for dirs in json.loads(headline.read_text()).values():
            for direction, cell in dirs.items():
                if cell.get("ceiling"):
                    ceilings[direction] = round(float(np.mean(cell["ceiling"])), 4)
    command = "python -m bench.archive.diagnose_style_gap " + " ".join(argv if argv is not None else sys.argv[1:])
    results_io.write_json(args.out / "style_gap.json", {"command": command, "minutes": round((time.time() - t0) / 60, 1),
                                                   "ceilings_quick_table": ceilings, "rows": rows})
    lines = ["# How much of the gap is low-frequency style?", "", f"Command: `{command}` "
             f"({(time.time() - t0) / 60:.0f} min; quick budget, seed {args.seed}, "
             f"{'/'.join(sorted({str(j.params['size']) for j in jobs}))} px crops, CPU).", "",
             "| direction | model | target as is | target in source style | control: other target's style | "
             "in-domain ceiling (quick table) | share of the gap the swap closes |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = ceilings.get(r["direction"])
        share = "–" if c is None or abs(c - r["as_is"]) < 1e-9 else f"{(r['source_style'] - r['as_is']) / (c - r['as_is']):.0%}"
        lines.append(f"| {r['direction']} | {r['method']} | {r['as_is']:.3f} | {r['source_style']:.3f} | "
                     f"{r['target_style_control']:.3f} | {c if c is not None else '–'} | {share} |")
    results_io.write_text(args.out / "style_gap.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
