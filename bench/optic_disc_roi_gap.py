"""Where the optic disc's own-ROI Dice is lost against the ground-truth ROI (issue 14, diagnosis only).

The product path (``DiscPredictor``: locate, crop, segment, re-centre, paste back) scores lower on the
unseen domain than the same model on ground-truth-centred ROIs. This script splits the difference per
case on a direction's unseen domain, at the image's full size, into:

- ``gt_roi``: the ROI centred on the expert disc with side ``roi_ratio`` x its diameter, cropped from the
  image as released, segmented and pasted back (the GT-ROI row, scored like the product);
- ``gt_centre_own_scale``: the expert centre, the side the product's final disc implies;
- ``own_centre_gt_scale``: the product's final disc centre, the expert side;
- ``own``: the product path as shipped with the direction's settings.

It chooses nothing and feeds no setting: it reads the unseen domain's masks, so what it finds may only
motivate a change whose settings are then chosen on source domains (``bench/optic_disc_settings.py``).

    python bench/optic_disc_roi_gap.py --model drishti_to_drions=RUN --model drions_to_drishti=RUN
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import results_io  # noqa: E402
from bench.machine import describe, one_line  # noqa: E402
from bench.optic_disc import TARGETS  # noqa: E402
from bench.tasks import _domain_cases  # noqa: E402
from napari_ramseg.core.config import DiscConfig  # noqa: E402
from napari_ramseg.core.tasks.disc import DiscPredictor, Roi, crop, paste  # noqa: E402
from napari_ramseg.core.tasks.disc.measures import disc_measures  # noqa: E402
from napari_ramseg.core.inference.predictor import Predictor  # noqa: E402
from napari_ramseg.core.evaluation.metrics import dice_score  # noqa: E402
from napari_ramseg.core.inference.postprocess import keep_largest_component  # noqa: E402
from napari_ramseg.errors import RamsegInputError  # noqa: E402

HERE = Path(__file__).resolve().parent


def disc_geometry(disc: np.ndarray) -> tuple[tuple[float, float], float]:
    """(centre (y, x), diameter: the larger bounding-box extent) of a disc mask's largest component."""
    disc = keep_largest_component(disc)
    rows, cols = np.flatnonzero(disc.any(axis=1)), np.flatnonzero(disc.any(axis=0))
    return tuple(ndimage.center_of_mass(disc)), float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def segment_roi(predictor: Predictor, image: np.ndarray, roi: Roi) -> np.ndarray:
    labels = predictor.predict_image(crop(image, roi), postprocess=True).labels
    return paste(labels, roi, image.shape[:2])


def diagnose(disc: DiscPredictor, root: Path, domain: str) -> list[dict]:
    ratio = disc.config.roi_ratio
    rows = []
    for stem, image, truth in _domain_cases(root / domain):
        centre, diameter = disc_geometry(truth >= 1)
        row = {"case": stem, "gt_diameter": diameter}
        gt = segment_roi(disc.predictor, image, Roi.around(centre, diameter, ratio))
        row["gt_roi"] = dice_score(gt >= 1, truth >= 1)
        try:
            own = disc.predict(image).labels
        except RamsegInputError as exc:
            row.update(own=0.0, refused=str(exc))
            rows.append(row)
            continue
        row["own"] = dice_score(own >= 1, truth >= 1)
        if not (own >= 1).any():
            rows.append(row)
            continue
        own_centre, own_diameter = disc_geometry(own >= 1)
        row["centre_error"] = float(np.hypot(own_centre[0] - centre[0], own_centre[1] - centre[1]) / diameter)
        row["scale_ratio"] = own_diameter / diameter
        row["gt_centre_own_scale"] = dice_score(
            segment_roi(disc.predictor, image, Roi.around(centre, own_diameter, ratio)) >= 1, truth >= 1)
        row["own_centre_gt_scale"] = dice_score(
            segment_roi(disc.predictor, image, Roi.around(own_centre, diameter, ratio)) >= 1, truth >= 1)
        if truth.max() >= 2:
            row["vcdr_expert"] = disc_measures(truth >= 1, truth >= 2)["vcdr"]
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    keys = ("gt_roi", "gt_centre_own_scale", "own_centre_gt_scale", "own")
    located = [r for r in rows if "scale_ratio" in r]
    ratios = np.array([r["scale_ratio"] for r in located])
    out = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    out.update(cases=len(rows), located=len(located),
               below_0_8={k: int(sum(r[k] < 0.8 for r in rows if k in r)) for k in keys},
               scale_ratio_median=float(np.median(ratios)),
               scale_ratio_quartiles=[float(q) for q in np.percentile(ratios, [25, 75])],
               centre_error_median=float(np.median([r["centre_error"] for r in located])))
    return out


def markdown(result: dict) -> str:
    lines = ["# Optic disc: where the own-ROI Dice is lost (diagnosis on the unseen domains)", "",
             f"Generated by `bench/optic_disc_roi_gap.py`. Command: `{result['command']}`", "",
             f"Machine: {one_line(result['machine'])}", "",
             "Disc Dice at the image's full size, mean over the unseen domain's cases. Diagnosis only: "
             "nothing here chose a setting.", "",
             "| direction | GT centre, GT scale | GT centre, own scale | own centre, GT scale | own (product) | "
             "own / GT diameter: median (quartiles) | centre error / GT diameter: median |", "|---|---|---|---|---|---|---|"]
    for name, e in result["directions"].items():
        s = e["summary"]
        q = s["scale_ratio_quartiles"]
        lines.append(f"| {name} ({e['domain']}, n={s['cases']}) | {s['gt_roi']:.3f} | {s['gt_centre_own_scale']:.3f} | "
                     f"{s['own_centre_gt_scale']:.3f} | {s['own']:.3f} | {s['scale_ratio_median']:.2f} "
                     f"({q[0]:.2f}-{q[1]:.2f}) | {s['centre_error_median']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=RUN_FOLDER, NAME a leave-one-out direction")
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--settings", type=Path, default=HERE / "results" / "optic_disc_settings.json")
    ap.add_argument("--fundus-check", type=Path, default=HERE / "results" / "fundus_check.json")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "diagnostics" / "optic_disc_roi_gap")
    args = ap.parse_args(argv)
    chosen = {k: v["settings"] for k, v in json.loads(args.settings.read_text())["directions"].items()}
    fundus = {k: v["threshold"] for k, v in json.loads(args.fundus_check.read_text())["directions"].items()}
    result = {"command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]), "machine": describe(),
              "directions": {}}
    for name, run in (m.split("=", 1) for m in args.model):
        if TARGETS.get(name) is None:
            raise SystemExit(f"{name}: not a leave-one-out direction ({', '.join(k for k, v in TARGETS.items() if v)})")
        disc = DiscPredictor(Predictor.from_path(run, device="cpu", precision="fp32"),
                             DiscConfig(**chosen[name], min_red_excess=fundus[name]))
        rows = diagnose(disc, args.data / "fundus", TARGETS[name])
        result["directions"][name] = {"run": run, "domain": TARGETS[name], "settings": chosen[name],
                                      "summary": summary(rows), "cases": rows}
        print(name, json.dumps(result["directions"][name]["summary"]), flush=True)
    results_io.write_json(args.out.with_suffix(".json"), result)
    results_io.write_text(args.out.with_suffix(".md"), markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
