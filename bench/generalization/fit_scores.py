#!/usr/bin/env python
"""The fit check's score on real scans: a model's own source domains, unseen domains, and the wrong modality.

For the bundled vessel model (RAM-DSIR on HRF + STARE) every image is read from its file and scored
exactly as ``ramseg predict`` scores it (``Predictor.check_fit`` -> ``domain_fit.fit_score``):

- source validation: the HRF and STARE cases the model held out (its threshold was set on these
  alone: ``FitConfig.margin`` x their lowest score), and its source training cases for reference;
- unseen fundus domains: CHASE_DB1 (vessels, another camera and population), DRIONS-DB and
  Drishti-GS (optic-disc datasets: whole scanned photographs, and tight disc crops);
- wrong modality: grey prostate MRI, the 2D slices of six sites and the PROMISE12 volume.

Nothing here changes the threshold: the unseen and wrong-modality rows only show where they fall.

    python -m bench.generalization.fit_scores        # writes bench/results/fit_scores.md and .json (~1 min, 2 cores)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine

from napari_ramseg.core.models.checkpoint import load_metadata
from napari_ramseg.core.data.dataset import discover
from napari_ramseg.core.shift.domain_fit import fit_score
from napari_ramseg.files import atomic_write
from napari_ramseg.io import read_image
from napari_ramseg.models import bundled_model_path

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent


def cases(root: Path, domain: str, names: set[str] | None = None) -> list[Path]:
    found = discover(root, "auto", [domain], require_masks=False, split=None).cases
    return [c.image for c in found if names is None or c.name in names]


def groups(data: Path, meta: Any) -> list[tuple[str, str, list[Path]]]:
    """(group, kind of data, image files) in the order of the table."""
    vessels = data / "vessels"
    recorded = meta.extra.get("data") or {}
    val = {}
    for key in recorded.get("val_cases", []):
        domain, name = key.split("/", 1)
        val.setdefault(domain, set()).add(name)
    train = {d: set(v) for d, v in (recorded.get("train_cases") or {}).items()}
    out = []
    for d in meta.domains:
        out.append((f"{d} (source validation)", "source validation", cases(vessels, d, val.get(d, set()))))
    for d in meta.domains:
        out.append((f"{d} (source training)", "source training", cases(vessels, d, train.get(d, set()))))
    for d in ("HRF", "STARE", "CHASE_DB1"):  # the vessel cameras the model was not trained on
        if d not in meta.domains and (vessels / d).is_dir():
            out.append((f"{d} (unseen vessels)", "unseen fundus", cases(vessels, d)))
    for d in ("DRIONS-DB", "Drishti-GS"):
        out.append((f"{d} (unseen fundus)", "unseen fundus", cases(data / "fundus", d)))
    slices = data / "prostate_slices"
    out.append(("prostate MRI slices, 6 sites", "wrong modality",
                [p for d in sorted(x.name for x in slices.iterdir() if x.is_dir()) for p in cases(slices, d)]))
    out.append(("PROMISE12 volume (64x128x128)", "wrong modality", [data / "prostate_volume" / "Case00.nii.gz"]))
    return out


def run(model: Path, data: Path) -> dict[str, Any]:
    meta = load_metadata(model)
    if meta.source_profile is None:
        raise SystemExit(f"{model}: model.json has no source profile (run bench/recipes/backfill_profile.py)")
    records, rows = [], []
    for group, kind, files in groups(data, meta):
        scores, warned, seconds, example = [], 0, [], ""
        for path in files:
            image = read_image(path)
            start = time.perf_counter()
            fit = fit_score(meta, image.array, image.is_volume)
            seconds.append(time.perf_counter() - start)
            scores.append(fit.score)
            warned += not fit.fits
            example = example or fit.differs
            records.append({"group": group, "kind": kind, "file": str(path.relative_to(data)),
                            "shape": list(image.array.shape), "seconds": round(seconds[-1], 4), **fit.to_dict()})
        rows.append({"group": group, "kind": kind, "images": len(files), "min": min(scores),
                     "median": float(np.median(scores)), "max": max(scores), "warned": warned,
                     "median_ms": 1000 * float(np.median(seconds)), "example_warning": example})
        print(f"{group}: {len(files)} images, score {min(scores):.3f}..{max(scores):.3f}, warned {warned}", flush=True)
    profile = meta.source_profile
    return {"model": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model),
            "source_domains": list(meta.domains), "threshold": profile.threshold,
            "calibration": profile.calibration, "rows": rows, "images": records}


def markdown(result: dict[str, Any], info: dict[str, Any], command: str) -> str:
    cal = result["calibration"]
    lines = [
        "# Fit check: how much a scan looks like the model's source domains",
        "",
        f"Model: `{result['model']}` (RAM-DSIR, sources {', '.join(result['source_domains'])}). "
        f"Score = 1 / (1 + D), D the RMS distance in source standard deviations to the nearest source domain's "
        f"low-frequency log-amplitude spectrum and intensity statistics (`core/shift/domain_fit.py`). "
        f"Threshold **{result['threshold']:.3f}** = {cal.get('margin')} x the lowest score of the model's "
        f"{cal.get('cases')} source-validation cases ({cal.get('lowest_score')}); set on source data only. "
        "An image warns when its score is below the threshold or its kind (colour/grey, 2D/3D) is not a source's.",
        "",
        "| images | kind | n | min | median | max | warned | ms per image (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['group']} | {r['kind']} | {r['images']} | {r['min']:.3f} | {r['median']:.3f} | "
                     f"{r['max']:.3f} | {r['warned']} / {r['images']} | {r['median_ms']:.0f} |")
    lines += ["", "What `ramseg predict` prints for the first image of each group that warns:", ""]
    for r in result["rows"]:
        if r["example_warning"]:
            lines.append(f"- {r['group']}: `ramseg: warning: <file>: {r['example_warning']}`")
    lines += ["", f"Machine: {machine.one_line(info)}. Times are wall-clock on a shared machine with other "
              "benchmarks running: they bound the check's cost only loosely.", "", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=bundled_model_path())
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "fit_scores")
    args = parser.parse_args(argv)
    command = " ".join(["python", "-m", "bench.generalization.fit_scores", *(argv if argv is not None else sys.argv[1:])])
    info = machine.describe()
    result = run(args.model.resolve(), args.data.resolve())
    result.update(machine=info, command=command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    atomic_write(args.out.with_suffix(".md"), lambda tmp: tmp.write_text(markdown(result, info, command)))
    print(f"wrote {args.out.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
