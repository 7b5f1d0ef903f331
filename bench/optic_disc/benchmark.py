"""Optic disc and cup benchmark (issue 14): the two-stage product path on whole photographs and crops.

For each trained model (run folders of ``bench/recipes/shipped.py train optic-disc [--target ...]``):

- ``own ROI`` rows: the product's ``DiscPredictor`` on the images as released (DRIONS-DB whole
  photographs, Drishti-GS crops), no ground truth at test time; Dice at the image's full size;
- ``GT ROI`` rows: the same model on ``bench/common/tasks.py``'s ground-truth-centred 256 px ROIs (the
  protocol of ``bench/results/generalization_reference/optic_disc``), for comparison;
- disc Dice on every case of the target domain, cup Dice where annotated (Drishti-GS);
- vCDR mean absolute error against the experts' masks on the held-out Drishti-GS cases (never trained on);
- the locator's hit rate (disc centre inside the expert disc) on every photograph of both sets: stage
  one alone (its best peak; any of its candidates) and the final ROI after the model's check;
- the refusal on images without an optic disc (prostate MRI slices, blank and noise images, everyday
  photographs from scikit-image), and on scikit-image's fundus photograph, which has one.

Each model runs with the two-stage settings chosen for it on its source domains only
(``bench/recipes/optic_disc_settings.py`` -> ``bench/results/optic_disc_settings.json``) and its direction's
"not a colour fundus image" threshold, chosen on fundus images without its unseen domain
(``python -m bench.recipes.optic_disc_settings --fundus-check`` -> ``bench/results/fundus_check.json``); the
stage-one rows are given for each direction's settings.

    python -m bench.optic_disc.benchmark --model drishti_to_drions=RUN --model drions_to_drishti=RUN --model bundled=RUN

``--adapt-only METHOD`` adds, for each leave-one-out model, the own-ROI row with test-time adaptation
(``core/inference/adapt``: each ROI stage two segments adapted, as ``ramseg predict --adapt`` does) at the
settings its model.json carries (chosen on its source validation by ``bench/recipes/adaptation_settings.py``),
into an existing ``--out`` JSON, the rest kept as it was.

``--refusal-only`` measures the images without a disc alone (a minute, not hours) and replaces only
that table's entries in an existing ``--out`` JSON, and its markdown, the rest kept as it was.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.common.machine import describe, one_line
from bench.recipes.optic_disc_data import held_out
from bench.common.tasks import domain_cases, prepare_task
from napari_ramseg.core.config import DiscConfig
from napari_ramseg.core.tasks.disc import DiscPredictor, locate
from napari_ramseg.core.tasks.disc.measures import disc_measures
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.evaluation.metrics import dice_score
from napari_ramseg.errors import RamsegInputError
from napari_ramseg.files import atomic_write

TARGETS = {"drishti_to_drions": "DRIONS-DB", "drions_to_drishti": "Drishti-GS", "bundled": None}


def _inside(mask: np.ndarray, y: float, x: float) -> bool:
    yi, xi = int(round(y)), int(round(x))
    return 0 <= yi < mask.shape[0] and 0 <= xi < mask.shape[1] and bool(mask[yi, xi])


def _centre(labels: np.ndarray) -> tuple[float, float] | None:
    pts = np.argwhere(labels >= 1)
    return None if pts.size == 0 else tuple(pts.mean(0))


def score_own_roi(disc: DiscPredictor, root: Path, domain: str, only=None) -> list[dict]:
    """The product path on every (selected) case of a domain, at the image's full size."""
    rows = []
    for stem, image, truth in domain_cases(root / domain):
        if only is not None and not only(stem):
            continue
        row = {"case": stem, "domain": domain}
        t0 = time.perf_counter()
        try:
            found = disc.predict(image)
            labels, row["kind"] = found.labels, found.kind
            centre = found.roi.center if found.roi is not None else _centre(labels)
        except RamsegInputError as exc:
            labels, row["kind"], centre = np.zeros(truth.shape, np.uint8), f"refused: {exc}", None
        row["seconds"] = time.perf_counter() - t0
        row["disc_dice"] = dice_score(labels >= 1, truth >= 1)
        if truth.max() >= 2:
            row["cup_dice"] = dice_score(labels >= 2, truth >= 2)
            row["vcdr_expert"] = disc_measures(truth >= 1, truth >= 2)["vcdr"]
            row["vcdr_pred"] = disc_measures(labels >= 1, labels >= 2)["vcdr"]
        row["final_hit"] = centre is not None and _inside(truth >= 1, *centre)
        rows.append(row)
    return rows


def score_gt_roi(predictor: Predictor, cases) -> list[dict]:
    """The model on ground-truth-centred ROIs (bench/common/tasks.py), at 256 px."""
    rows = []
    for c in cases:
        labels = predictor.predict_image(c.image, postprocess=True).labels
        row = {"case": c.name, "disc_dice": dice_score(labels >= 1, c.mask >= 1)}
        if c.mask.max() >= 2:
            row["cup_dice"] = dice_score(labels >= 2, c.mask >= 2)
        rows.append(row)
    return rows


def locator_hits(root: Path, cfg: DiscConfig) -> dict:
    """Stage one alone on every photograph of both sets (no model)."""
    out = {}
    for domain in ("DRIONS-DB", "Drishti-GS"):
        top, anyc, kinds = [], [], []
        for _, image, truth in domain_cases(root / domain):
            located = locate(image, cfg)
            disc = truth >= 1
            top.append(_inside(disc, located.candidates[0].y, located.candidates[0].x))
            anyc.append(any(_inside(disc, c.y, c.x) for c in located.candidates[:cfg.candidates]))
            kinds.append(located.photograph)
        out[domain] = {"cases": len(top), "top_candidate_hit": float(np.mean(top)),
                       "any_candidate_hit": float(np.mean(anyc)), "judged_photograph": float(np.mean(kinds))}
    return out


def no_disc_images(data: Path) -> dict[str, list[np.ndarray]]:
    """Images with no optic disc, by kind, and scikit-image's CC0 fundus photograph (which has one)."""
    import skimage.data
    from PIL import Image
    from scipy import ndimage

    rng = np.random.default_rng(0)
    paths = sorted((data / "prostate_slices").glob("*/images/*.png"))
    slices = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    noise = [rng.integers(0, 256, (400, 600, 3), dtype=np.uint8) for _ in range(3)]

    def smooth(sigma):  # Gaussian noise low-passed at sigma pixels, mid-grey +- 40
        g = ndimage.gaussian_filter(rng.standard_normal((400, 600, 3)), (sigma, sigma, 0))
        return np.clip(128 + 40 * g / g.std(), 0, 255).astype(np.uint8)

    return {"prostate MRI slice (grey as RGB)": slices,
            "blank (black, mid-grey, white)": [np.full((400, 600, 3), v, np.uint8) for v in (0, 128, 255)],
            "uniform noise": noise, "smooth noise": [smooth(v) for v in (2, 8, 32)],
            "everyday photograph (skimage)": [getattr(skimage.data, n)()
                                              for n in ("astronaut", "coffee", "chelsea", "rocket")],
            "fundus photograph with a disc (skimage.data.retina)": [skimage.data.retina()]}


def refusals(disc: DiscPredictor, data: Path) -> dict:
    out = {}
    for kind, images in no_disc_images(data).items():
        refused, messages = 0, set()
        for image in images:
            try:
                disc.predict(image)
            except RamsegInputError as exc:
                refused += 1
                messages.add(str(exc).split(" (")[0].split(":")[0])
        out[kind] = {"images": len(images), "refused": refused, "messages": sorted(messages)}
    return out


def _mean(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return (float(np.mean(vals)), len(vals)) if vals else (None, 0)


def summarise(rows: list[dict]) -> dict:
    out = {"cases": len(rows)}
    for key in ("disc_dice", "cup_dice", "final_hit", "seconds"):
        mean, n = _mean(rows, key)
        if n:
            out[key] = mean
            out[f"{key}_n"] = n
    pairs = [(r["vcdr_pred"], r["vcdr_expert"]) for r in rows if r.get("vcdr_expert") is not None]
    if pairs:
        err = [abs((p if p is not None else 0.0) - e) for p, e in pairs]
        out["vcdr_mae"], out["vcdr_n"] = float(np.mean(err)), len(err)
    out["refused"] = sum(str(r.get("kind", "")).startswith("refused") for r in rows)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=RUN_FOLDER, NAME in " + ", ".join(TARGETS))
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parents[1] / "work" / "optic_disc")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "optic_disc")
    ap.add_argument("--settings", type=Path,
                    default=Path(__file__).resolve().parents[1] / "results" / "optic_disc_settings.json",
                    help="the two-stage settings each model was given (bench/recipes/optic_disc_settings.py)")
    ap.add_argument("--fundus-check", type=Path,
                    default=Path(__file__).resolve().parents[1] / "results" / "fundus_check.json",
                    help="each direction's 'not a colour fundus image' threshold (optic_disc_settings.py --fundus-check)")
    ap.add_argument("--refusal-only", action="store_true",
                    help="only the images without a disc: replace that table's entries in the existing --out JSON")
    ap.add_argument("--adapt-only", default=None, metavar="METHOD",
                    help="only the unseen domains' own-ROI rows adapted with METHOD, added to the existing --out JSON")
    args = ap.parse_args(argv)
    command = "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])])
    root = args.data / "fundus"
    models = dict(m.split("=", 1) for m in args.model)
    chosen = {k: v["settings"] for k, v in json.loads(args.settings.read_text())["directions"].items()}
    checked = json.loads(args.fundus_check.read_text())["directions"]
    fundus = {k: v["threshold"] for k, v in checked.items()}
    fundus_refused = {k: sum(v["refused"].values()) for k, v in checked.items()}  # of every fundus-set image
    if args.refusal_only:
        return refusal_only(args, models, chosen, fundus, fundus_refused, command)
    if args.adapt_only:
        return adapt_only(args, models, chosen, fundus, command)
    gt_rois, _ = prepare_task("optic_disc", args.data, args.work / "gt_roi_cache", roi_size=256)
    result = {"command": command, "machine": describe(),
              "settings": {name: chosen[name] for name in models}, "locator_stage_one": {}, "models": {},
              "fundus_thresholds": {name: fundus[name] for name in models},
              "fundus_sets_refused": {name: fundus_refused[name] for name in models}}
    for name, run in models.items():
        cfg = DiscConfig(**chosen[name], min_red_excess=fundus[name])
        result["locator_stage_one"][name] = locator_hits(root, cfg)
        predictor = Predictor.from_path(run, device="cpu", precision="fp32")
        disc = DiscPredictor(predictor, cfg)
        entry: dict = {"run": run, "model_json_domains": list(predictor.metadata.domains),
                       "no_disc": refusals(disc, args.data)}
        target = TARGETS[name]
        if target is not None:  # unseen-domain rows, own ROI and GT ROI
            own = score_own_roi(disc, root, target)
            entry["unseen"] = {"domain": target, "own_roi": summarise(own),
                               "gt_roi": summarise(score_gt_roi(predictor, gt_rois[target]))}
            entry["unseen_cases"] = own
        if target != "Drishti-GS":  # Drishti-GS held out from its training: vCDR
            held = score_own_roi(disc, root, "Drishti-GS", only=held_out)
            entry["drishti_held_out"] = summarise(held)
            entry["drishti_held_out_cases"] = held
        if name == "bundled":  # the shipped locator on every photograph of both sets
            drions = score_own_roi(disc, root, "DRIONS-DB")
            drishti = score_own_roi(disc, root, "Drishti-GS")
            entry["all_photographs"] = {"DRIONS-DB": summarise(drions), "Drishti-GS": summarise(drishti),
                                        "note": "DRIONS-DB and 76 Drishti-GS cases were training cases of this model"}
        result["models"][name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if not k.endswith("cases")}, indent=1), flush=True)
    _write(args.out, result)
    return 0


def refusal_only(args, models: dict, chosen: dict, fundus: dict, fundus_refused: dict, command: str) -> int:
    """The images without a disc alone, each model with its direction's settings and fundus threshold;
    their entries replace those of the existing results, whose other tables are kept as measured."""
    path = args.out.with_suffix(".json")
    if not path.exists():
        raise SystemExit(f"optic_disc: --refusal-only updates {path}, which does not exist: run the full benchmark")
    result = json.loads(path.read_text())
    missing = [name for name in models if name not in result["models"]]
    if missing:
        raise SystemExit(f"optic_disc: --refusal-only: {', '.join(missing)} not in {path}")
    for name, run in models.items():
        disc = DiscPredictor(Predictor.from_path(run, device="cpu", precision="fp32"),
                             DiscConfig(**chosen[name], min_red_excess=fundus[name]))
        result["models"][name]["no_disc"] = refusals(disc, args.data)
        print(name, json.dumps(result["models"][name]["no_disc"]), flush=True)
    result["refusal"] = {"command": command, "machine": describe(),
                         "fundus_thresholds": {name: fundus[name] for name in result["models"]},
                         "fundus_sets_refused": {name: fundus_refused[name] for name in result["models"]}}
    _write(args.out, result)
    return 0


def adapt_only(args, models: dict, chosen: dict, fundus: dict, command: str) -> int:
    """Each leave-one-out model's own-ROI row on its unseen domain, every ROI adapted with
    ``args.adapt_only`` at its package's settings; added to the existing results."""
    from napari_ramseg.core.inference.adapt import AdaptedPredictor

    path = args.out.with_suffix(".json")
    result = json.loads(path.read_text()) if path.exists() else None
    if result is None or any(TARGETS[n] and "unseen" not in result["models"].get(n, {}) for n in models):
        raise SystemExit(f"optic_disc: --adapt-only adds to {path}'s unseen-domain rows: run the full benchmark first")
    for name, run in models.items():
        if TARGETS[name] is None:
            continue
        adapted = AdaptedPredictor(Predictor.from_path(run, device="cpu", precision="fp32"), args.adapt_only)
        disc = DiscPredictor(adapted, DiscConfig(**chosen[name], min_red_excess=fundus[name]))
        rows = score_own_roi(disc, args.data / "fundus", TARGETS[name])
        result["models"][name]["unseen"]["own_roi_adapted"] = {
            **summarise(rows), "method": args.adapt_only, "settings": adapted.settings(),
            "settings_from_model_json": sorted(adapted.from_package), "command": command, "machine": describe()}
        print(name, json.dumps(result["models"][name]["unseen"]["own_roi_adapted"]), flush=True)
    _write(args.out, result)
    return 0


def _write(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
    atomic_write(out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(markdown(result)))
    print(f"wrote {out.with_suffix('.json')} and .md")


def _refusal_lines(result: dict) -> list[str]:
    """Where the refusal table was measured apart from the rest, and each model's fundus threshold."""
    lines = []
    refusal = result.get("refusal")
    if refusal is not None:
        lines += [f"Measured apart (`--refusal-only`, the tables above are the command at the top's). Command: "
                  f"`{refusal['command']}`", "", f"Machine: {one_line(refusal['machine'])}", ""]
    thresholds = (refusal or result).get("fundus_thresholds")
    if thresholds:
        lines += ["Before either stage an image must be a colour fundus image: red excess (mean R / (R + G + B) "
                  "- 1/3 inside the field of view) at least "
                  + ", ".join(f"{v} ({k})" for k, v in thresholds.items())
                  + ": 0.8 x the lowest over every photograph and crop of the fundus sets, each direction "
                  "without its unseen domain, chosen on fundus images only (bench/results/fundus_check.json). "
                  "Fundus-set images it refuses, unseen domains included: "
                  + ", ".join(f"{v} ({k})" for k, v in (refusal or result).get("fundus_sets_refused", {}).items())
                  + ".", ""]
    return lines


def _f(v, digits=3):
    return "–" if v is None else (f"{100 * v:.1f} %" if digits == "%" else f"{v:.{digits}f}")


def markdown(result: dict) -> str:
    lines = ["# Optic disc and cup: two stages on whole photographs (issue 14)", "",
             f"Generated by `bench/optic_disc/benchmark.py`. Command: `{result['command']}`", "",
             f"Machine: {one_line(result['machine'])}", "",
             "## Unseen domain (leave one out), with the model's own ROI and with the ground-truth ROI", "",
             "| direction | own ROI: disc Dice | cup Dice | GT ROI: disc Dice | cup Dice | final-ROI hit | refused |",
             "|---|---|---|---|---|---|---|"]
    for name, e in result["models"].items():
        if "unseen" not in e:
            continue
        u, o, g = e["unseen"], e["unseen"]["own_roi"], e["unseen"]["gt_roi"]
        lines.append(f"| {name.replace('_to_', ' -> ')} ({u['domain']}, n={o['cases']}) | {_f(o.get('disc_dice'))} | "
                     f"{_f(o.get('cup_dice'))} | {_f(g.get('disc_dice'))} | {_f(g.get('cup_dice'))} | "
                     f"{_f(o.get('final_hit'), '%')} | {o['refused']} |")
    adapted = {n: e["unseen"]["own_roi_adapted"] for n, e in result["models"].items()
               if "own_roi_adapted" in e.get("unseen", {})}
    if adapted:
        lines += ["", "Own ROI with test-time adaptation (`--adapt-only`: every ROI stage two segments adapted, "
                  "at the settings in the model's model.json, chosen on its source validation by "
                  "`bench/recipes/adaptation_settings.py`):", "",
                  "| direction | method, settings | own ROI: disc Dice | cup Dice | final-ROI hit |", "|---|---|---|---|---|"]
        for name, a in adapted.items():
            lines.append(f"| {name.replace('_to_', ' -> ')} | {a['method']} {json.dumps(a['settings'])} | "
                         f"{_f(a.get('disc_dice'))} | {_f(a.get('cup_dice'))} | {_f(a.get('final_hit'), '%')} |")
        lines += ["", f"Command: `{next(iter(adapted.values()))['command']}`"]
    lines += ["", "## vCDR on the held-out Drishti-GS cases (every case number divisible by 4; never trained on)", "",
              "| model | cases | vCDR MAE | disc Dice | cup Dice |", "|---|---|---|---|---|"]
    for name, e in result["models"].items():
        if "drishti_held_out" in e:
            h = e["drishti_held_out"]
            lines.append(f"| {name} | {h['cases']} | {_f(h.get('vcdr_mae'))} | {_f(h.get('disc_dice'))} | "
                         f"{_f(h.get('cup_dice'))} |")
    lines += ["", "## Locator hit rate (disc centre inside the expert disc), every photograph of both sets", "",
              "Stage one alone with each direction's settings; the final ROI after the model's check is that "
              "direction's model on its unseen domain, and the bundled model on both sets (both were its "
              "training sets, and DRIONS-DB one of the photograph sets its settings were chosen on).", "",
              "| settings | set | cases | stage one: best peak | any of its candidates | judged a photograph | "
              "final ROI |", "|---|---|---|---|---|---|---|"]
    for name, sets in result["locator_stage_one"].items():
        e = result["models"][name]
        for domain, s in sets.items():
            if name == "bundled":
                fin = e.get("all_photographs", {}).get(domain, {}).get("final_hit")
            else:
                fin = e["unseen"]["own_roi"].get("final_hit") if e["unseen"]["domain"] == domain else None
            lines.append(f"| {name} | {domain} | {s['cases']} | {_f(s['top_candidate_hit'], '%')} | "
                         f"{_f(s['any_candidate_hit'], '%')} | {_f(s['judged_photograph'], '%')} | {_f(fin, '%')} |")
    lines += ["", "Drishti-GS images are disc-centred crops: stage one judges them crops and its candidate is the "
              "crop's bright centre; their final hit is the predicted disc's centre.", "",
              "## Images without an optic disc: refused?", "",
              *_refusal_lines(result),
              "| model | " + " | ".join(next(iter(result["models"].values()))["no_disc"]) + " |",
              "|---|" + "---|" * len(next(iter(result["models"].values()))["no_disc"])]
    for name, e in result["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v['refused']}/{v['images']}" for v in e["no_disc"].values()) + " |")
    lines += ["", "The last column has a disc: refusing it is an error. Messages seen: "
              + "; ".join(sorted({m for e in result["models"].values() for v in e["no_disc"].values()
                                  for m in v["messages"]})) + ".", "",
              "## Two-stage settings each row used (bench/results/optic_disc_settings.json)", "",
              "Chosen by `bench/recipes/optic_disc_settings.py` on each model's source domains only: "
              "drishti_to_drions on the vessel sets' whole photographs (CHASE_DB1, HRF, STARE; disc = where the "
              "expert vessel tree converges), never DRIONS-DB; drions_to_drishti and bundled on DRIONS-DB "
              "(a source of both) and the vessel photographs.", "",
              "| model | " + " | ".join(next(iter(result["settings"].values()))) + " |",
              "|---|" + "---|" * len(next(iter(result["settings"].values())))]
    for name, st in result["settings"].items():
        lines.append(f"| {name} | " + " | ".join(str(v) for v in st.values()) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
