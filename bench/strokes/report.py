"""The strokes benchmark's report (bench/strokes/benchmark.py): the results table in words and the Dice-per-stroke
plot, from the rows ``benchmark.summarise`` makes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from bench.common import results_io

from napari_ramseg.core.config import RefineConfig


def report(rows: list[dict], command: str, machine: str, candidates: list[RefineConfig], far: int,
           local: Callable[[RefineConfig], bool]) -> str:
    """results.md: one table row per direction, then every candidate's Dice after 5 strokes (``local``: whether
    a candidate may be chosen, changing nothing more than ``far`` px from a stroke)."""
    lines = ["# Strokes: a simulated clinician corrects the model's mask (issue 30)", "",
             f"Command: `{command}`", "", f"Machine: {machine}", "",
             "Dice of the corrected structure (vessels: vessel; disc ROIs: cup or disc, as the row says) inside "
             "the field of view, at the "
             "working scale, mean over the cases. *brush*: the same strokes painted as they are. Strokes to a "
             "Dice: mean over the cases that reach it within 10 strokes (reached / cases). CPU s: process time "
             "of one refinement (all strokes so far), one thread.", "",
             "| direction | cases | method (chosen on) | Dice 0 | 1 | 3 | 5 | 10 | brush 1 | 3 | 5 | 10 | "
             "strokes to 0.80 / 0.85 / 0.90 | brush | CPU s (max) | far after 5, right / wrong px |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["settings"]
        method = f"{describe(RefineConfig(**s))} ({', '.join(r['chosen_on'])})"
        d, b = r["dice"], r["brush_dice"]
        reach = lambda key: " / ".join(  # noqa: E731
            "-" if v["mean_of_reached"] is None else f"{v['mean_of_reached']:.1f} ({v['reached']}/{v['of']})"
            for v in r[key].values())
        lines.append(f"| {r['direction']} | {r['cases']} | {method} | {d['0']:.3f} | {d['1']:.3f} | {d['3']:.3f} | "
                     f"{d['5']:.3f} | {d['10']:.3f} | {b['1']:.3f} | {b['3']:.3f} | {b['5']:.3f} | {b['10']:.3f} | "
                     f"{reach('strokes_to')} | {reach('brush_strokes_to')} | "
                     f"{r['cpu_seconds_per_refinement']:.2f} ({r['cpu_seconds_max']:.2f}) | "
                     + ("-" if r["far_changes_5"] is None else "{} / {}".format(*r["far_changes_5"])) + " |")
    lines += ["", f"Far: pixels changed beyond {far} px (working scale) of every stroke after 5 strokes, summed "
              "over the cases, right / wrong by the expert's mask.", "",
              "Candidates (index: settings), and each one's mean Dice after 5 strokes per direction (*: may "
              f"change pixels anywhere within its reach, more than {far} px from a stroke: never chosen):", ""]
    for i, c in enumerate(candidates):
        per = ", ".join(f"{r['direction']} {r['every_setting_dice5'][str(i)]:.3f}" if str(i) in r["every_setting_dice5"]
                        else f"{r['direction']} not run" for r in rows)
        lines.append(f"- {i}{'' if local(c) else '*'}: {describe(c)}: {per}")
    return "\n".join(lines) + "\n"


def describe(c: RefineConfig) -> str:
    """A candidate's settings in words."""
    if c.method == "threshold":
        return f"threshold reach {c.reach} floor {c.floor}"
    if c.method == "random_walker":
        return f"random walker reach {c.reach} beta {c.beta}"
    follow = ("" if c.head_near < 0 else f" near {c.head_near}" + (
        " only" if c.head_min_size >= 10**9 else f" margin {c.head_margin:g} min {c.head_min_size}"))
    follow += f" smooth {c.head_smooth:g}" if c.head_smooth else ""
    follow += f" band {c.negative_band}" if c.negative_band else ""
    return (f"head reach {c.reach} " + (f"hidden {c.head_hidden}" if c.head_hidden else "linear")
            + f" consistency {c.head_consistency:g}" + follow)


def plot(rows: list[dict], curves: dict, out: Path, budget: int) -> None:
    """strokes.png: each direction's mean Dice against strokes (``budget`` of them), refined and brush only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(rows))
    lines = -(-len(rows) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.4 * lines), squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows):
        refined, brush = curves[r["direction"]]
        ax.plot(range(budget + 1), refined, "o-", label="strokes, refined")
        ax.plot(range(budget + 1), brush, "s--", label="same strokes, brush only")
        ax.set_title(f"{r['direction']}\n{describe(RefineConfig(**r['settings']))}", fontsize=8)
        ax.set_xlabel("strokes")
        ax.set_ylabel({"vessels": "Dice (vessel)", "cup": "Dice (cup)", "disc": "Dice (disc)"}[r["task"]])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    results_io.write_figure(out / "strokes.png", fig)
