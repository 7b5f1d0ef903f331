#!/usr/bin/env python
"""What corrections buy on the optic disc (issue 16): the leave-one-domain-out disc/cup models of
``python -m bench.recipes.shipped train optic-disc --target ...``, fine-tuned on k corrected photographs of the domain they never saw.

The same experiment as ``bench/finetune/gain.py`` (vessels), on the product's two-stage path:

- Start: ``bench/work/optic_disc/runs/<set>`` (Drishti-GS + REFUGE -> DRIONS-DB, DRIONS-DB + REFUGE ->
  Drishti-GS), with the two-stage settings chosen for it on its sources (``bench/results/
  optic_disc_settings.json``, written into its model.json by ``python -m bench.recipes.optic_disc_settings --write``).
- The clinician is simulated by the expert masks of k whole images of the unseen domain, chosen by each
  review ranking as the worklist ranks (mean entropy of the two-stage prediction; style disagreement
  and representative's descriptor on the ROI the two stages segmented) or at random. Each fine-tune
  is ``ramseg finetune --images --labels --replay SOURCES``
  (core ``finetune_from_files``) with ``FinetuneConfig``'s defaults; replay reads the direction's own
  training ROIs (``bench/work/optic_disc/<set>``), and the corrections are cut into ROIs as those were.
- Score: every case that was not corrected, through the two stages on the whole image, against its
  expert mask (core ``disc.corrections.score_correction``: disc and cup, the disc alone on DRIONS-DB,
  which draws no cup), beside the base model on the same cases.

Nothing here is chosen: the fine-tune defaults are the vessel benchmark's and the two-stage settings were
chosen on the sources. Runs are cached under ``--work`` like the vessel grid's, so a second command with
the same arguments only fills in what is missing, and ``--report-only`` writes the results.

    OMP_NUM_THREADS=1 python -m bench.finetune.gain_disc --directions drishti_to_drions --minutes 60
    python -m bench.finetune.gain_disc --report-only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine as bench_machine
from bench.common import results_io
from bench.finetune.gain_report import RANKINGS, collect, curve_table, targets, write_plot

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent

KS = (3, 1, 5, 10)  # priority order: the target's k first
WHOLE = "random_whole_photographs"  # --whole: the diagnosis row, random choices trained as whole photographs
SETS = {  # training set of bench/recipes/optic_disc_data.py -> (its sources, the unseen domain)
    "drishti_to_drions": ("Drishti-GS+REFUGE", "DRIONS-DB"),
    "drions_to_drishti": ("DRIONS-DB+REFUGE", "Drishti-GS"),
}
DISC_WORK = BENCH / "work" / "optic_disc"


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


class DiscDirection:
    """One direction's base model, the unseen domain's whole images and the replay folder."""

    def __init__(self, name: str, work: Path, data: Path):
        from napari_ramseg.core.inference.predictor import Predictor

        self.set = name
        self.source, self.target = SETS[name]
        self.name = f"{self.source}->{self.target}"
        self.model = DISC_WORK / "runs" / name
        self.replay = DISC_WORK / name
        if not (self.model / "model.json").exists() or not self.replay.is_dir():
            raise FileNotFoundError(f"no {name} model or training ROIs under {DISC_WORK}; "
                                    f"train it with python -m bench.recipes.shipped train optic-disc --target ... ({name})")
        folder = data / "fundus" / self.target
        self.images = {p.name.split(".")[0]: p for p in sorted((folder / "images").iterdir())
                       if not p.name.startswith(".")}
        self.labels = {n: folder / "labels" / f"{n}.png" for n in self.images}
        self.work = work / f"{self.source}-{self.target}"
        self.predictor = Predictor.from_path(self.model, device="cpu")

    def score(self, predictor, names) -> dict[str, float]:
        from napari_ramseg.core.tasks.disc.corrections import score_correction

        return {n: score_correction(predictor, _read(self.images[n])[..., :3], _read(self.labels[n])) for n in names}

    def base(self) -> dict[str, Any]:
        """Base Dice per case and every case's review scores, as the worklist computes them (cached)."""
        path = self.work / "base.json"
        if path.exists():
            return json.loads(path.read_text())
        from napari_ramseg.core.review.pipeline import review_region, segment_case
        from napari_ramseg.core.review.priority import descriptor, disagreement, mean_uncertainty
        from napari_ramseg.io import read_image

        start = time.perf_counter()
        dice = self.score(self.predictor, self.images)
        scores: dict[str, dict[str, float]] = {"uncertainty": {}, "disagreement": {}}
        descriptors: dict[str, list[float]] = {}
        for name, p in self.images.items():
            image = read_image(p)  # as the worklist reads, segments and ranks a scan
            result = segment_case(self.predictor, image)  # the worklist's one per-case pipeline
            if result.refused:
                raise SystemExit(f"{name}: the base model refused it: {result.refusal}")
            region = review_region(self.predictor, image, result.extras)  # the ROI the two stages segmented
            scores["uncertainty"][name] = mean_uncertainty(result.prediction)
            scores["disagreement"][name] = disagreement(self.predictor, region, False)
            descriptors[name] = [round(float(v), 6) for v in descriptor(self.predictor, region, False)]
        out = {"dice": dice, "mean": float(np.mean(list(dice.values()))), "generalization_dice": None,
               "base_seed": 0, "model": str(self.model.relative_to(REPO)), "scores": scores,
               "descriptors": descriptors, "seconds": round(time.perf_counter() - start, 1)}
        results_io.write_json(path, out)
        return out


@contextlib.contextmanager
def _whole_photographs(on: bool):
    """The diagnosis ``--whole``: the round as it was before corrections were cut into ROIs (each corrected
    photograph trained on as it is, held-out ones scored in one pass), everything else unchanged."""
    if not on:
        yield
        return
    from napari_ramseg.core.tasks import OPTIC_DISC, Task

    disc_task = type(OPTIC_DISC)  # its corrections as whole photographs, scored in one pass: the plain task's
    keep = disc_task.training_samples, disc_task.score_heldout
    disc_task.training_samples, disc_task.score_heldout = Task.training_samples, Task.score_heldout
    try:
        yield
    finally:
        disc_task.training_samples, disc_task.score_heldout = keep


def finetune_run(d: DiscDirection, ranking: str, k: int, seed: int) -> dict[str, Any]:
    """Fine-tune on k corrected photographs and score the others; the record is cached."""
    from bench.finetune.gain import chosen_cases

    from napari_ramseg.core.finetune.job import finetune_from_files
    from napari_ramseg.core.inference.predictor import Predictor

    path = d.work / "runs" / f"{ranking if ranking != 'representative' else 'representative_p1'}__k{k}__s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    base = d.base()
    chosen = chosen_cases(base, "random" if ranking == WHOLE else ranking, k, seed)
    scratch = d.work / f"scratch_{ranking}_{k}_{seed}"
    shutil.rmtree(scratch, ignore_errors=True)
    start = time.perf_counter()
    with _whole_photographs(ranking == WHOLE):
        result = finetune_from_files(d.model, scratch / "models", project=scratch / "corrections",
                                     images=[d.images[n] for n in chosen], masks=[d.labels[n] for n in chosen],
                                     replay=d.replay, seed=seed, device="cpu", command="bench/finetune/gain_disc.py")
    seconds = time.perf_counter() - start
    if result.model_dir is None:
        raise RuntimeError("the fine-tune stopped")
    others = sorted(set(d.images) - set(chosen))
    after = d.score(Predictor.from_path(result.model_dir, device="cpu"), others)
    base_other = float(np.mean([base["dice"][n] for n in others]))
    record = {
        "direction": d.name, "ranking": ranking, "k": k, "seed": seed, "chosen": chosen, "base_model": base["model"],
        "trained_on": len(result.train_cases), "held_out": len(result.val_cases),
        "dice_other": float(np.mean(list(after.values()))), "base_other": base_other,
        "gain": float(np.mean(list(after.values()))) - base_other, "per_case": after,
        "heldout_before": result.before_dice, "heldout_after": result.after_dice,
        "finetune_seconds": round(seconds, 1), "finished": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    results_io.write_json(path, record)
    shutil.rmtree(scratch, ignore_errors=True)
    return record


def markdown(results: list, meta: dict) -> str:
    lines = ["# What corrections buy on the optic disc: fine-tuning on k corrected photographs of the unseen domain",
             "", "Generated by `bench/finetune/gain_disc.py`. Commands: "
             + "; ".join(f"`{c}`" for c in meta["commands"]) + ".",
             f"Machine: {bench_machine.one_line(meta['machine'])}; one torch thread per process.", "",
             "Start: the leave-one-domain-out RAM-DSIR disc/cup models (`bench/recipes/shipped.py`), with their "
             "source-chosen two-stage settings. Each fine-tune is `ramseg finetune --images ... --labels ... "
             f"--replay SOURCES` with `FinetuneConfig`'s defaults ({meta['finetune_defaults']}); the project's "
             "fixed split holds the 3rd correction out, so k = 3 trains on 2. Dice: the two-stage path on the "
             "whole image of every case that was not corrected (disc and cup; DRIONS-DB draws the disc only), "
             "beside the base model on the same cases (`gain`).", ""]
    if WHOLE in meta["rankings"]:
        lines += [f"`{WHOLE}` (k = 3, `--whole`) is a diagnosis, not a ranking: the random rows' corrections "
                  "trained on as whole photographs, as a round did before corrections were cut into ROIs, and "
                  "its held-out correction scored in one pass over the photograph; the other cases are scored "
                  "as in every row.", ""]
    for entry in results:
        lines += [f"## {entry['direction']}", "", f"base (all cases) {entry['base'][0]:.4f}.", "",
                  *curve_table(entry, meta["rankings"], meta["ks"])]
        held = [v for name, r in entry["heldout"].items() if name != WHOLE for runs in r.values() for v in runs
                if None not in v]
        if held:
            worse = sum(after < before for before, after in held)
            lines += ["", f"Held-out correction (the round's own before/after): worse after the round in {worse} "
                      f"of {len(held)} rounds."]
        lines.append("")
    lines += ["## Targets at k = 3 (averaged over seeds)", "", "```", json.dumps(meta["targets"], indent=1), "```", "",
              f"Not run ({len(meta['not_run'])}).", ""]
    return "\n".join(lines)


def write_outputs(args: argparse.Namespace, meta: dict) -> None:
    directions = [SETS[s] for s in SETS]
    results, missing = collect(args.work, directions, args.rankings, args.k, args.seeds, 1.0)
    ranked = [{**e, "gain": {r: g for r, g in e["gain"].items() if r != WHOLE}} for e in results]  # not a ranking
    meta.update(not_run=[list(m) for m in missing if m[1] != WHOLE or m[2] == 3], targets=targets(ranked), ks=args.k,
                rankings=args.rankings)
    stem = args.out / "finetune_gain_optic_disc"
    results_io.write_json(stem.with_suffix(".json"), results)
    results_io.write_json(args.out / "finetune_gain_optic_disc_meta.json", meta)
    results_io.write_text(stem.with_suffix(".md"), markdown(results, meta))
    write_plot(stem.with_suffix(".png"), results, args.k)


def main(argv: list[str] | None = None) -> int:
    from napari_ramseg.core.config import FinetuneConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--directions", default=",".join(SETS), help=f"of {', '.join(SETS)}")
    ap.add_argument("--rankings", default=",".join(RANKINGS))
    ap.add_argument("--k", default=",".join(map(str, KS)))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--minutes", type=float, default=60.0, help="stop starting new fine-tunes after this")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=BENCH / "work" / "finetune_gain_disc")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--whole", action="store_true",
                    help="diagnosis: also random corrections trained as whole photographs (the round before ROIs)")
    args = ap.parse_args(argv)
    args.rankings = [r for r in args.rankings.split(",") if r] + ([WHOLE] if args.whole else [])
    args.k = [int(k) for k in args.k.split(",") if k]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    # the commands that filled the cache (directions run side by side), kept beside the runs they made
    commands_path = args.work / "commands.json"
    commands = json.loads(commands_path.read_text()) if commands_path.exists() else []
    if not args.report_only:
        command = "OMP_NUM_THREADS=1 python " + " ".join(shlex.quote(a) for a in ["-m", "bench.finetune.gain_disc"]
                                                         + (argv if argv is not None else sys.argv[1:]))
        commands = list(dict.fromkeys(commands + [command]))
        results_io.write_json(commands_path, commands)
    meta: dict[str, Any] = {"commands": commands, "machine": bench_machine.describe(),
                            "finetune_defaults": ", ".join(f"{k} {v}" for k, v in vars(FinetuneConfig()).items()
                                                           if k != "device")}
    if not args.report_only:
        t0 = time.time()
        for set_name in [s for s in args.directions.split(",") if s]:
            d = DiscDirection(set_name, args.work, args.data)
            print(f"[{_dt.datetime.now():%H:%M:%S}] {d.name}: base {d.base()['mean']:.4f}", flush=True)
            cells = [(k, seed, ranking) for k in args.k for seed in args.seeds for ranking in args.rankings]
            for k, seed, ranking in cells:  # the target's k for every seed first
                if time.time() - t0 > args.minutes * 60:
                    break
                rec = finetune_run(d, ranking, k, seed)
                print(f"[{_dt.datetime.now():%H:%M:%S}] {d.name} {ranking} k={k} seed {seed}: "
                      f"{rec['base_other']:.4f} -> {rec['dice_other']:.4f} ({rec['gain']:+.4f}) "
                      f"in {rec['finetune_seconds']} s", flush=True)
    write_outputs(args, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
