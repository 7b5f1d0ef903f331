"""Per-model records of the test-time adaptation benchmark and the report built from all of them.

Every scored model leaves one small record, ``bench/results/adaptation_runs/<model key>.json``
(committed; Dice numbers and settings, no image data). The report (``adaptation.json``, ``.md``,
``.png``) is always rebuilt from every record there, so a result stays in the tables after its
model (a file under the git-ignored ``bench/work/``) is gone. A record says where it came from:
``"measured"`` by ``bench/adaptation/benchmark.py`` (command, machine, time per method), or ``"recovered"``
from an earlier committed report (``bench/archive/recover.py``).

Record::

    {"key", "task", "direction", "seed", "job", "generalization_dice", "cases": [names] | null,
     "provenance": {...},
     "methods": {"none": {"dice", "per_case_dice", "matches_record"?, "seconds_per_case"?},
                 "<method>": {"dice", "per_case_dice", "selection": {"chosen", "grid"?, ...}, ...}}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parents[1]
RESULTS = BENCH / "results"
RUNS = RESULTS / "adaptation_runs"
TIMING = RESULTS / "adaptation_timing.json"
METHODS = ("align", "prompt", "adabn", "tent")
TIE = 1e-4  # a grid point must beat the gentler one by more than this on the sources to be preferred


# ---------------------------------------------------------------------------------------- records


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def load_records(folder: Path = RUNS) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def load_record(key: str, folder: Path = RUNS) -> dict[str, Any] | None:
    path = folder / f"{key}.json"
    return json.loads(path.read_text()) if path.exists() else None


def complete(record: dict[str, Any] | None, methods: list[str]) -> bool:
    return record is not None and all(m in record["methods"] for m in ["none", *methods])


# ------------------------------------------------------------------------------------ aggregation


def aggregate(records: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, dict[str, list]]]:
    """``{task: {direction: {"seeds": [...], "none": [dice per seed], method: [...]}}}``; a method not
    (yet) run on a seed holds ``null`` there, so every list lines up with ``seeds``."""
    out: dict[str, dict[str, dict[str, list]]] = {}
    for r in sorted(records, key=lambda r: (r["task"], r["direction"], r["seed"])):
        cell = out.setdefault(r["task"], {}).setdefault(r["direction"], {"seeds": []})
        cell["seeds"].append(r["seed"])
        for method in ["none", *methods]:
            entry = r["methods"].get(method)
            cell.setdefault(method, []).append(round(entry["dice"], 4) if entry else None)
    return out


def paired(cell: dict[str, list], method: str) -> tuple[list[float], list[float]]:
    """(method, none) Dice on the seeds where both ran."""
    pairs = [(m, n) for m, n in zip(cell.get(method, []), cell["none"]) if m is not None and n is not None]
    return [m for m, _ in pairs], [n for _, n in pairs]


def unseen_gains(results: dict, method: str) -> dict[str, float]:
    """Seed-mean unseen-domain Dice gain over none per direction (seeds where both ran)."""
    out = {}
    for task, dirs in results.items():
        for direction, cell in dirs.items():
            ran, base = paired(cell, method)
            if ran:
                out[f"{task}: {direction}"] = float(np.mean(ran) - np.mean(base))
    return out


# ------------------------------------------------------------------------- source-side evidence


def held_out_source_gain(record: dict[str, Any], method: str) -> float | None:
    """Leave-one-source-out gain of ``method`` on one model, from its source-validation grid only.

    For each source domain d, the grid point is chosen on the OTHER sources' validation Dice (each
    adapted towards the profile of the sources but itself, the gentler point on a tie) and scored
    on d (adapted towards the others): the setting never saw d's labels. The mean over d of that
    Dice minus d's unadapted Dice. ``None`` for a single-source model or a record without the grid
    (recovered records kept only the chosen setting)."""
    entry = record["methods"].get(method)
    selection = (entry or {}).get("selection", {})
    grid, none = selection.get("grid"), selection.get("none_source_val")
    sources = record["job"]["source"].split("+")
    if not grid or not none or len(sources) < 2:
        return None
    gains = []
    for d in sources:
        others = [s for s in sources if s != d]
        best = grid[0]
        for row in grid[1:]:
            if np.mean([row["source_val_dice"][o] for o in others]) > \
                    np.mean([best["source_val_dice"][o] for o in others]) + TIE:
                best = row
        gains.append(best["source_val_dice"][d] - none[d])
    return float(np.mean(gains))


def source_gains(records: list[dict[str, Any]], method: str) -> dict[str, dict[str, Any]]:
    """Per direction: the seed-mean held-out-source gain and the seeds it rests on."""
    by_dir: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        g = held_out_source_gain(r, method)
        if g is not None:
            by_dir.setdefault(f"{r['task']}: {r['direction']}", []).append((r["seed"], g))
    return {d: {"gain": float(np.mean([g for _, g in v])), "seeds": sorted(s for s, _ in v)}
            for d, v in sorted(by_dir.items())}


# ------------------------------------------------------------------------------------ the rules


DEFAULT_RULE = ("chosen on source domains only. Evidence: for every multi-source model, each method's setting "
                "is picked on all but one source domain's validation hold-out and scored on the one left out "
                "(leave-one-source-out), as a change in Dice over no adaptation, seed-mean per direction. A method "
                "shows a benefit if that change is positive in at least 80 % of the directions with evidence and "
                "no worse than -0.01 in any; it is safe if no worse than -0.01 in any. The default is the "
                "benefiting method with the largest mean change; if none benefits, the cheapest safe method "
                "(cost per image, measured on a source photograph); if none is safe, null. The unseen domains "
                "are not looked at. Held-out sources are domains the model was trained on (only the setting "
                "never saw them), so they can show harm better than benefit")
TARGET = ("issue 15's target on the unseen domains: the default improves the seed-mean unseen Dice in at "
          "least 4 of the 5 directions and loses no more than 0.01 in any")


def rule_verdicts(gains: dict[str, float]) -> dict[str, Any]:
    wins, worst = sum(v > 0 for v in gains.values()), min(gains.values())
    return {"gains": gains, "improves": f"{wins}/{len(gains)}", "worst": worst,
            "mean_gain": float(np.mean(list(gains.values()))),
            "meets": wins >= 0.8 * len(gains) and worst >= -0.01}


def cost(timing: dict[str, Any] | None, method: str) -> float:
    """x plain inference of ``method`` (its cheapest measured variant); unknown costs sort last."""
    if not timing:
        return float("inf")
    xs = [v["x_plain"] for name, v in timing["methods"].items() if name == method or name.startswith(method + " (")]
    return min(xs) if xs else float("inf")


def choose_default(records: list[dict[str, Any]], methods: list[str],
                   timing: dict[str, Any] | None = None) -> tuple[str | None, dict[str, Any]]:
    """The default by DEFAULT_RULE (source validation and cost only) and each method's source verdict."""
    verdicts = {}
    for method in methods:
        per_dir = source_gains(records, method)
        if per_dir:
            v = rule_verdicts({d: g["gain"] for d, g in per_dir.items()})
            verdicts[method] = {**v, "benefit": v.pop("meets"), "safe": v["worst"] >= -0.01,
                                "x_plain": cost(timing, method), "seeds": {d: g["seeds"] for d, g in per_dir.items()}}
    benefit = [m for m, v in verdicts.items() if v["benefit"]]
    if benefit:
        return max(benefit, key=lambda m: verdicts[m]["mean_gain"]), verdicts
    safe = [m for m, v in verdicts.items() if v["safe"]]
    return (min(safe, key=lambda m: verdicts[m]["x_plain"]) if safe else None), verdicts


def target_check(results: dict, methods: list[str]) -> dict[str, Any]:
    """Each method against the issue's unseen-domain target (a check, never a choice)."""
    out = {}
    for method in methods:
        g = unseen_gains(results, method)
        if g:
            v = rule_verdicts(g)
            v["meets"] = sum(x > 0 for x in g.values()) >= 4 and v["worst"] >= -0.01  # of the 5 directions
            out[method] = v
    return out


# ----------------------------------------------------------------------------------------- output


def fmt(values: list[float | None] | None, base: list[float | None] | None = None) -> str:
    if not values or all(v is None for v in values):
        return "–"
    ran = [v for v in values if v is not None]
    text = f"{np.mean(ran):.3f}" + (f" ± {np.std(ran, ddof=1):.3f}" if len(ran) > 1 else "")
    if base is not None:
        pairs = [(v, b) for v, b in zip(values, base) if v is not None and b is not None]
        text += f" ({np.mean([v - b for v, b in pairs]):+.3f})"
    return text + f" (n={len(ran)})"


def write_markdown(path: Path, results: dict, meta: dict, one_line) -> None:
    methods = meta["methods"]
    lines = ["# Test-time adaptation on the unseen domain", "",
             f"Built by `bench/adaptation/benchmark.py` from the per-model records in `bench/results/adaptation_runs/` "
             f"(last command: `{meta['command']}`). Reported apart from the generalization tables, never "
             "mixed into them.", "",
             "Dice on the unseen domain, mean ± sd over seeds (gain over `none` on the same seeds in brackets). "
             "Hyper-parameters of every method were chosen per model on its source domains' validation hold-out "
             "only (each source adapted towards the others' profile); the unseen domain was only scored.", ""]
    for task, dirs in results.items():
        lines += [f"## {task}", "", f"Models: {meta['models'][task]}", "",
                  "| direction | seeds | none | " + " | ".join(methods) + " |",
                  "|---|---|" + "---|" * (len(methods) + 1)]
        for direction, cell in dirs.items():
            lines.append(f"| {direction} | {', '.join(map(str, cell['seeds']))} | {fmt(cell['none'])} | "
                         + " | ".join(fmt(cell.get(m), cell["none"]) for m in methods) + " |")
        lines.append("")
    lines += ["## Where the numbers come from", ""]
    for p in meta["provenance"]:
        lines.append(f"- {p}")
    lines += ["", "## Default (source domains only)", "", f"Rule: {DEFAULT_RULE}.", "",
              f"**Default: {meta['default'] or 'none earned it (null)'}**"
              + (f" ({meta['default_basis']})" if meta.get("default_basis") else ""), ""]
    if not meta["verdicts"]:
        lines.append("- no record holds a source-validation grid of a multi-source model yet")
    for method, v in meta["verdicts"].items():
        seeds = "; ".join(f"{d} seeds {', '.join(map(str, s))}" for d, s in v["seeds"].items())
        lines.append(f"- {method}: held-out-source change positive in {v['improves']} directions, mean "
                     f"{v['mean_gain']:+.4f}, worst {v['worst']:+.4f}: {'a' if v['benefit'] else 'no'} benefit, "
                     f"{'safe' if v['safe'] else 'not safe'}; {v['x_plain']:.1f}x plain ({seeds})")
    lines += ["", "## The target on the unseen domains (checked, not chosen on)", "",
              f"{TARGET[0].upper()}{TARGET[1:]}.", ""]
    for method, v in meta["target"].items():
        lines.append(f"- {method}: improves {v['improves']} directions, mean gain {v['mean_gain']:+.4f}, "
                     f"worst {v['worst']:+.4f}: {'meets' if v['meets'] else 'misses'} it")
    t = meta.get("timing")
    if t:
        lines += ["", "## Cost per 512 x 512 image", "",
                  f"{t['model']} model, {t['image']}, working scale {t['working_shape']}; median of 5 after a "
                  f"warm-up, one thread, on {one_line(t['machine']) if 'machine' in t else 'the machine above'}. "
                  f"Plain inference: {t['plain_s']:.3f} s. Targets: training-free <= 2x, learned prompt <= 10x. "
                  f"{t.get('provenance', '')}", "", "| method | seconds | x plain |", "|---|---|---|"]
        lines += [f"| {m} | {v['seconds']:.3f} | {v['x_plain']:.2f} |" for m, v in t["methods"].items()]
        lines += ["", "Each method at its `AdaptConfig` default (prompt also at 2 and 3 steps), fit check included."]
    lines += ["", "## Chosen settings (source validation)", ""]
    for key, chosen in meta["chosen"].items():
        lines.append(f"- {key}: " + "; ".join(f"{m} {json.dumps(c)}" for m, c in chosen.items()))
    lines += ["", "`none` equals the generalization benchmark's number case by case for every vessel model: "
              f"{meta['none_matches']}.", ""]
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, results: dict, methods: list[str]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", flush=True)
        return
    rows = [(t, d, c) for t, dirs in results.items() for d, c in dirs.items()]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(rows), 3.6))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        for j, (_, _, cell) in enumerate(rows):
            ran, base = paired(cell, method)
            if not ran:
                continue
            per_seed = np.array(ran) - np.array(base)
            x = j + (i - (len(methods) - 1) / 2) * width
            ax.bar(x, per_seed.mean(), width, color=f"C{i}", label=method if j == 0 else None)
            ax.plot([x] * len(per_seed), per_seed, "k.", ms=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(-0.01, color="grey", lw=0.6, ls="--")
    labels = [f"{d.replace('->', chr(10) + '->')}\n(seeds {', '.join(map(str, c['seeds']))})" for _, d, c in rows]
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("unseen Dice gain over none")
    ax.legend(fontsize=7, ncol=len(methods))
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
