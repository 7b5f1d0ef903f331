"""What corrections buy: how ``bench/finetune/gain.py`` names its cached runs and turns them into results
(the issue's JSON, markdown with the targets and each ranking's choice, the plot). Apart from the runs so
that ``--report-only`` and the tests need no model."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine as bench_machine
from bench.common import results_io

BENCH = Path(__file__).resolve().parents[1]

GEN_WORK = BENCH / "work" / "generalization"
RANKINGS = ("random", "representative", "uncertainty", "disagreement")  # the grid's order within a cell
KS = (3, 5, 1, 10)  # priority order: the target's k first
# representative's weighting (ReviewConfig.uncertainty_power) is chosen among these on TUNE_DIRECTION at k = 3
DESIGN_POWERS = (1.0, 0.0)
TUNE_DIRECTION = "HRF+STARE->CHASE_DB1"  # the one direction the defaults were chosen on (its model comes first)
TUNE_SEED = 100  # its tuning runs use a random choice no reported seed uses
DESIGN_NOTE = ("Uncertainty power 1 (each case weighted by its mean entropy) or 0 (all alike), chosen by the mean gain "
               "of 3 representative corrections over the 3 seeds on HRF+STARE->CHASE_DB1 only: that row is not "
               "independent of the choice, the STARE and HRF rows are. The descriptor, the similarity and the "
               "greedy rule were fixed beforehand from the literature (core/review/priority.py).")
TUNING_NOTE = ("Defaults chosen on HRF+STARE->CHASE_DB1 only, with 3 random corrections (seed 100, a choice no "
               "reported run uses), among settings that finish within the 2-minute limit: the CHASE_DB1 row is "
               "therefore not independent of the choice; the STARE and HRF rows are.")
# what was tried, in order (each within the 2-minute limit on this CPU except today's defaults, timed for reference)


def run_name(ranking: str, power: float | None = None) -> str:
    """A ranking's name in the cache: representative's carries its weighting (``representative_p1``)."""
    if ranking != "representative":
        return ranking
    from napari_ramseg.core.review.priority import REVIEW

    return f"representative_p{REVIEW.uncertainty_power if power is None else power:g}"


def chosen_power(work: Path, seeds: list[int]) -> tuple[float | None, dict[str, Any]]:
    """The power with the highest mean gain over the design cells (ties: DESIGN_POWERS' order), None until
    all of them have run; and each power's gains."""
    folder = work / TUNE_DIRECTION.replace("->", "-") / "runs"
    gains: dict[str, Any] = {}
    for power in DESIGN_POWERS:
        paths = [folder / f"{run_name('representative', power)}__k3__s{s}.json" for s in seeds]
        recs = [json.loads(p.read_text()) for p in paths if p.exists()]
        gains[f"{power:g}"] = {"gain": [round(r["gain"], 4) for r in recs],
                               "chosen": recs[0]["chosen"] if recs else None}
    complete = all(len(g["gain"]) == len(seeds) for g in gains.values())
    if not complete:
        return None, gains
    best = max(DESIGN_POWERS, key=lambda p: (np.mean(gains[f"{p:g}"]["gain"]), -DESIGN_POWERS.index(p)))
    return best, gains


def collect(work: Path, directions: list[tuple[str, str]], rankings, ks, seeds,
            power: float | None = None) -> tuple[list, list]:
    """The issue's JSON shape from the cached runs, and the (direction, ranking, k, seed) not run."""
    out, missing = [], []
    for source, target in directions:
        folder = work / f"{source}-{target}"
        base_path = folder / "base.json"
        if not base_path.exists():
            missing += [(f"{source}->{target}", r, k, s) for k in ks for r in rankings for s in seeds]
            continue
        base = json.loads(base_path.read_text())
        entry: dict[str, Any] = {"direction": f"{source}->{target}", "base_seed": base.get("base_seed"),
                                 "base_model": base.get("model"), "base": [round(base["mean"], 4)] * len(seeds),
                                 "generalization_dice": base["generalization_dice"],
                                 "ceiling": ceiling(source, target), "curves": {}, "gain": {}, "base_other": {},
                                 "heldout": {}, "finetune_seconds": {}}
        for ranking in rankings:
            for k in ks:
                for s in seeds:
                    rec_path = folder / "runs" / f"{run_name(ranking, power)}__k{k}__s{s}.json"
                    if ranking == "representative" and power is None or not rec_path.exists():
                        missing.append((entry["direction"], ranking, k, s))
                        continue
                    rec = json.loads(rec_path.read_text())
                    # what was chosen, and how hard it was for the base model (the rankings' "why")
                    entry.setdefault("chosen", {}).setdefault(ranking, {}).setdefault(str(k), rec["chosen"])
                    entry.setdefault("chosen_base_dice", {}).setdefault(ranking, {}).setdefault(str(k), []).append(
                        round(float(np.mean([base["dice"][n] for n in rec["chosen"]])), 4))
                    for key, value in (("curves", rec["dice_other"]), ("gain", rec["gain"]),
                                       ("base_other", rec["base_other"]),
                                       ("heldout", [rec["heldout_before"], rec["heldout_after"]]),
                                       ("finetune_seconds", rec["finetune_seconds"])):
                        entry[key].setdefault(ranking, {}).setdefault(str(k), []).append(
                            value if not isinstance(value, float) else round(value, 4))
        out.append(entry)
    return out, missing


def ceiling(source: str, target: str) -> list[float]:
    """The generalization benchmark's in-domain ceiling for the target, per seed it has finished."""
    found = []
    for path in sorted((GEN_WORK / "reference" / "jobs").glob(f"vessels__{source}-{target}__ceiling__s*__*.json")):
        found.append(round(float(json.loads(path.read_text())["dice"]), 4))
    return found


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _mean(values) -> float | None:
    return float(np.mean(values)) if values else None


def targets(results: list[dict[str, Any]], k: int = 3) -> dict[str, Any]:
    """The issue's targets at k: a ranked gain of at least +0.05, above random, averaged over seeds."""
    out = {}
    for entry in results:
        gains = {r: _mean(entry["gain"].get(r, {}).get(str(k), [])) for r in entry["gain"]}
        random_gain = gains.get("random")
        out[entry["direction"]] = {
            r: {"gain": g, "seeds": len(entry["gain"][r].get(str(k), [])), "at_least_0.05": g is not None and g >= 0.05,
                "beats_random": None if random_gain is None or g is None else g > random_gain}
            for r, g in gains.items() if r != "random"} | {"random": {"gain": random_gain}}
    for ranking in RANKINGS:
        if ranking == "random":
            continue
        per_dir = [_mean(e["gain"].get(ranking, {}).get(str(k), [])) for e in results]
        rand = [_mean(e["gain"].get("random", {}).get(str(k), [])) for e in results]
        if per_dir and all(v is not None for v in per_dir + rand):
            out[f"mean over directions: {ranking}"] = {"gain": float(np.mean(per_dir)), "random": float(np.mean(rand))}
    return out


def curve_table(entry: dict[str, Any], rankings, ks) -> list[str]:
    """A direction's markdown table: each ranking's mean Dice on the other cases (and gain) at each k."""
    lines = ["| ranking | " + " | ".join(f"k={k}: Dice (gain)" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for ranking in rankings:
        cells = []
        for k in ks:
            dice = entry["curves"].get(ranking, {}).get(str(k), [])
            gain = entry["gain"].get(ranking, {}).get(str(k), [])
            cells.append("–" if not dice else f"{np.mean(dice):.4f} ({np.mean(gain):+.4f}, n={len(dice)})")
        lines.append(f"| {ranking} | " + " | ".join(cells) + " |")
    return lines


def write_markdown(path: Path, results: list, meta: dict) -> None:
    lines = ["# What corrections buy: fine-tuning on k corrected cases of the unseen domain", "",
             f"Generated by `bench/finetune/gain.py`; status: **{meta['status']}**. Command: `{meta['command']}`.",
             f"Machine: {bench_machine.one_line(meta['machine'])}, shared with other jobs (load average "
             f"{meta['load_average']}); one torch thread.", "",
             "Start: the RAM-DSIR model of `python -m bench.generalization.benchmark --reference` trained with seed "
             f"**{meta['base_seed']}** (`--base-seed`; other bases' results are kept apart, e.g. "
             "`finetune_gain_base_s1.md`). `base` is its Dice on all of the unseen domain's "
             "cases, by that benchmark's own scoring (it equals the generalization number). Each fine-tune is "
             "`ramseg finetune --images ... --labels ... --replay SOURCES` (core `finetune_from_files`) with the "
             "defaults of `FinetuneConfig` " + f"({meta['finetune_defaults']}): the corrections are saved into a "
             "project whose fixed split holds the 3rd corrected image (and every 5th from the 10th) out of "
             "training, as in the product, so k = 3 trains on 2. Dice is on the domain's cases that were not "
             "corrected, beside the base model on the same cases (`gain`). Seeds change the random choice and the "
             "fine-tune's sampling; the rankings choose the same cases for every seed. `representative` is "
             f"`core/review/priority.representative_order` with uncertainty power {meta.get('power')} "
             "(chosen below).", ""]
    for entry in results:
        lines += [f"## {entry['direction']}", "",
                  f"base (all cases) {entry['base'][0]:.4f} (generalization: {_f(entry['generalization_dice'])}); "
                  f"in-domain ceiling {', '.join(f'{c:.3f}' for c in entry['ceiling']) or '–'}.", "",
                  *curve_table(entry, meta["rankings"], meta["ks"]), ""]
    lines += ["## What each ranking chose at k = 3: the base model's mean Dice on those cases", "",
              "Below the domain's mean: the ranking picked cases the model finds hard.", "",
              "| direction | base, all cases | " + " | ".join(meta["rankings"]) + " |",
              "|---|---|" + "---|" * len(meta["rankings"])]
    for entry in results:
        cells = [_f(_mean(entry.get("chosen_base_dice", {}).get(r, {}).get("3", []))) for r in meta["rankings"]]
        lines.append(f"| {entry['direction']} | {entry['base'][0]:.4f} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets at k = 3 (averaged over seeds)", "", "```", json.dumps(meta["targets"], indent=1),
              "```", ""]
    if meta.get("design"):
        lines += ["## Representative's weighting (chosen on one direction)", "", DESIGN_NOTE, "",
                  "| uncertainty power | cases chosen (k = 3) | gain per seed | mean |", "|---|---|---|---|"]
        for power, g in meta["design"].items():
            lines.append(f"| {power} | {', '.join(g['chosen'] or [])} | {', '.join(f'{v:+.4f}' for v in g['gain'])} "
                         f"| {_f(_mean(g['gain']))} |")
        lines += ["", f"Chosen: {meta.get('power')}.", ""]
    if meta.get("tuning"):
        lines += ["## Choosing the defaults (one direction)", "", meta["tuning_note"], "",
                  "| settings | seconds | gain on the other cases | held-out corrected before -> after |", "|---|---|---|---|"]
        for t in meta["tuning"]:
            lines.append(f"| `{json.dumps(t['settings'])}` | {t['finetune_seconds']} | {t['gain']:+.4f} | "
                         f"{t['heldout_before']:.3f} -> {t['heldout_after']:.3f} |")
        lines.append("")
    lines += [f"Not run ({len(meta['not_run'])}): " + (", ".join(meta["not_run_summary"]) or "none"), ""]
    results_io.write_text(path, "\n".join(lines))


def write_plot(path: Path, results: list, ks: list[int]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not results:
        return
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    colours = {"uncertainty": "#d94801", "disagreement": "#2171b5", "random": "#777777", "representative": "#6a51a3",
               "random_whole_photographs": "#e7298a"}  # the optic-disc diagnosis row
    for ax, entry in zip(axes[0], results):
        for ranking, curve in entry["curves"].items():
            xs = [k for k in sorted(ks) if curve.get(str(k))]
            ax.errorbar([0] + xs, [entry["base"][0]] + [np.mean(entry["gain"][ranking][str(k)]) + entry["base"][0]
                                                        for k in xs],
                        yerr=[0] + [np.std(entry["gain"][ranking][str(k)]) for k in xs], marker="o", capsize=3,
                        label=ranking,
                        color=colours.get(ranking))
        ax.axhline(entry["base"][0], color="black", lw=0.8, ls=":", label="base")
        if entry["ceiling"]:
            ax.axhline(float(np.mean(entry["ceiling"])), color="#31a354", lw=0.8, ls="--", label="in-domain ceiling")
        ax.set_title(entry["direction"], fontsize=9)
        ax.set_xlabel("corrected cases k")
        ax.set_ylabel("Dice: base + gain on the other cases", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    results_io.write_figure(path, fig)
    plt.close(fig)


def write_outputs(args: argparse.Namespace, meta: dict) -> None:
    power, meta["design"] = chosen_power(args.work, args.seeds)
    meta["power"] = args.power if args.power is not None else power
    meta["base_seed"] = args.base_seed
    results, missing = collect(args.work, args.directions, args.rankings, args.k, args.seeds, meta["power"])
    meta["not_run"] = [list(m) for m in missing]
    summary: dict[str, int] = {}
    for direction, ranking, k, _ in missing:
        summary[f"{direction} k={k}"] = summary.get(f"{direction} k={k}", 0) + 1
    meta["not_run_summary"] = [f"{key} ({n} runs)" for key, n in summary.items()]
    meta["targets"] = targets(results)
    meta["load_average"] = round(os.getloadavg()[0], 2)
    meta["elapsed_minutes"] = round((time.time() - meta["_t0"]) / 60, 1)
    meta["ks"], meta["rankings"] = args.k, args.rankings
    meta["tuning"] = tuning_records(args.work)
    args.out.mkdir(parents=True, exist_ok=True)
    results_io.write_json(args.out / "finetune_gain.json", results)
    results_io.write_json(args.out / "finetune_gain_meta.json", {k: v for k, v in meta.items() if not k.startswith("_")})
    write_markdown(args.out / "finetune_gain.md", results, meta)
    write_plot(args.out / "finetune_gain.png", results, args.k)


def tuning_records(work: Path) -> list[dict[str, Any]]:
    folder = work / TUNE_DIRECTION.replace("->", "-")
    return [json.loads(p.read_text()) for p in sorted(folder.glob("runs/*__tune_*.json"))] if folder.is_dir() else []
