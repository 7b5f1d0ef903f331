#!/usr/bin/env python
"""The recipes of the bundled models, in one place, and the jobs that check them leave-one-camera-out.

A recipe is the ``ramseg train`` arguments that made a bundled model. The same arguments, with one
camera held out, are the recipe's own leave-one-camera-out check, so that a model card reports the
shipped recipe itself, not a stand-in at a smaller budget (issue 28).

    python -m bench.recipes.shipped train vessels --out bench/work/runs/vessels        # the bundled model
    python -m bench.recipes.shipped train vessels --target STARE --out RUN             # one check
    python -m bench.recipes.shipped carry --out .gpucarry                              # data for a GPU machine
    python -m bench.recipes.shipped ship vessels --run bench/work/runs/vessels         # a finished run, bundled
    python -m bench.recipes.shipped side-by-side --data .gpucarry --out OUT --device cuda --deadline-s 560

``side-by-side`` starts every job at once (the bundled models and their checks), stops them cleanly
(SIGTERM: each writes its resume state and its model so far) before the deadline, then scores the
vessel checks with ``ramseg evaluate`` on their held-out camera and copies each run's model files into
OUT. It is what a lent GPU runs (``bench/gpu_session.sh``); on the CPU it is tested at a tiny budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO.parent / "shared" / "data"

# The bundled models' recipes. vessels: the working scale was chosen leave-one-camera-out on the
# sources (bench/results/recipe_scale); optic-disc: the disc-centred ROIs of bench/recipes/optic_disc_data.py.
RECIPES: dict[str, dict] = {
    "vessels": {
        "data": "vessels", "domains": ["HRF", "STARE", "CHASE_DB1"],
        "args": ["--labels", "vessel", "--long-side", "768", "--size", "256", "--batch", "8", "--seed", "0"],
        "iterations": 6000,
    },
    "optic-disc": {
        "data": "optic_disc/domains", "domains": ["DRIONS-DB", "Drishti-GS", "REFUGE-train", "REFUGE-val"],
        "args": ["--format", "domains", "--labels", "disc,cup", "--size", "128", "--batch", "8", "--seed", "0"],
        # both chosen leave-one-out on the sources: bench/results/recipe_budget_optic_disc (2000 against 6000)
        # and bench/results/recipe_partners_optic_disc (the vessel sets' disc regions as RAM partners)
        "iterations": 2000,
        "partners": "optic_disc/partners",
    },
}
# Each recipe's leave-one-camera-out checks: the held-out camera, never trained on or selected on.
CHECKS: dict[str, list[str]] = {"vessels": ["CHASE_DB1", "STARE", "HRF"], "optic-disc": ["DRIONS-DB", "Drishti-GS"]}
# The optic disc checks keep the four REFUGE ROIs in both directions (the cup's only second camera).
KEEP_IN_EVERY_CHECK = {"optic-disc": ["REFUGE-train", "REFUGE-val"]}


def data_root(name: str, root: Path) -> Path:
    """Where a recipe's data lies under ``root``: ../shared/data for vessels (the optic disc ROIs are
    made by bench/recipes/optic_disc_data.py under bench/work), or a carried folder holding both."""
    sub = RECIPES[name]["data"]
    if (root / sub).is_dir():
        return root / sub
    if name == "optic-disc" and (REPO / "bench" / "work" / sub).is_dir():
        return REPO / "bench" / "work" / sub
    raise SystemExit(f"no data for {name} under {root} (expected {root / sub}); for the optic disc run "
                     "python -m bench.recipes.optic_disc_data --out bench/work/optic_disc first")


def partners_root(name: str, root: Path) -> Path:
    """A recipe's folder of unlabelled RAM partners (bench/recipes/optic_disc_partners.py), as data_root finds data."""
    sub = RECIPES[name]["partners"]
    for folder in (root / sub, REPO / "bench" / "work" / sub):
        if folder.is_dir():
            return folder
    raise SystemExit(f"no RAM partners for {name} under {root} (expected {root / sub}); "
                     "run python -m bench.recipes.optic_disc_partners first")


def train_command(name: str, out: Path, root: Path, target: str | None = None, iterations: int | None = None,
                  extra: list[str] | None = None) -> list[str]:
    """The ``ramseg train`` command of a recipe (its check with ``target``)."""
    recipe = RECIPES[name]
    domains = [d for d in recipe["domains"] if d != target]
    if target is not None and target not in recipe["domains"]:
        raise SystemExit(f"{target!r} is not one of {name}'s cameras: {', '.join(recipe['domains'])}")
    if target is not None and target in KEEP_IN_EVERY_CHECK.get(name, []):
        raise SystemExit(f"{target} is kept in every {name} check")
    partners = ["--partners", str(partners_root(name, root))] if "partners" in recipe else []
    return [sys.executable, "-m", "napari_ramseg", "train", "--data", str(data_root(name, root)),
            "--domains", ",".join(domains), *recipe["args"], *partners,
            "--iterations", str(iterations or recipe["iterations"]), "--out", str(out), "--quiet", *(extra or [])]


def jobs(names: list[str]) -> list[tuple[str, str | None]]:
    """(recipe, held-out camera or None for the bundled model) for every job of these recipes."""
    return [(n, None) for n in names] + [(n, t) for n in names for t in CHECKS[n]]


def job_name(name: str, target: str | None) -> str:
    return f"{name}__bundled" if target is None else f"{name}__to_{target}"


def side_by_side(args: argparse.Namespace) -> int:
    """Every job at once; SIGTERM before the deadline; then scores and model files into OUT."""
    start = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    extra = ["--device", args.device, "--threads", str(args.threads), "--resume-every", "60"]
    running = {}
    for name, target in jobs(args.recipes.split(",")):
        run = out / "runs" / job_name(name, target)
        cmd = train_command(name, run, args.data, target, args.iterations, extra + args.train_args)
        log = open(out / f"{job_name(name, target)}.log", "w")
        running[job_name(name, target)] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), cmd, run)
    stop_at = start + args.deadline_s - args.score_s
    while any(p.poll() is None for p, _, _ in running.values()) and time.monotonic() < stop_at:
        time.sleep(2)
    for p, _, _ in running.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # a clean stop: resume state and the model so far
    for p, _, _ in running.values():
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    summary = {"device": args.device, "deadline_s": args.deadline_s, "jobs": {}}
    for key, (p, cmd, run) in running.items():
        record = {"command": " ".join(cmd), "exit": p.returncode, **_run_summary(run)}
        name, _, target = key.partition("__to_")
        if target and name == "vessels" and (run / "model.safetensors").is_file():
            record["unseen"] = _evaluate(run, data_root(name, args.data), target, out / f"{key}_eval.json", args.device)
        summary["jobs"][key] = record
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0 if all(r.get("model") for r in summary["jobs"].values()) else 1


def _run_summary(run: Path) -> dict:
    """Iterations done, best source validation and whether a model was written (model.json)."""
    meta_path = run / "model.json"
    if not meta_path.is_file():
        return {"model": False}
    meta = json.loads(meta_path.read_text())
    metrics = meta.get("metrics") or {}
    return {"model": True, **{k: metrics.get(k) for k in ("iterations_done", "iterations_planned", "selected_iteration",
                                                          "validation", "status", "train_seconds")}}


def _evaluate(run: Path, data: Path, domain: str, json_out: Path, device: str) -> dict | None:
    cmd = [sys.executable, "-m", "napari_ramseg", "evaluate", "--model", str(run), "--data", str(data),
           "--domain", domain, "--json", str(json_out), "--device", device]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not json_out.is_file():
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return json.loads(json_out.read_text()).get("summary")


def carry(args: argparse.Namespace) -> int:
    """The vessel photographs at a long side of ``--long-side`` px (JPEG; masks and fields of view PNG)
    and the optic disc ROIs, in the layout ``ramseg train`` reads: under 64 MiB, for a GPU machine."""
    from PIL import Image

    for domain in RECIPES["vessels"]["domains"]:
        src = args.data / "vessels" / domain
        for sub in ("images", "labels", "fov"):
            if not (src / sub).is_dir():
                continue
            dst = args.out / "vessels" / domain / sub
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted((src / sub).iterdir()):
                im = Image.open(f)
                scale = min(1.0, args.long_side / max(im.size))
                size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
                if sub == "images":
                    im.convert("RGB").resize(size, Image.BILINEAR).save(dst / (f.stem + ".jpg"), quality=95)
                else:
                    im.resize(size, Image.NEAREST).save(dst / (f.stem + ".png"))
    for f in sorted(partners_root("optic-disc", REPO / "bench" / "work").iterdir()):
        dst = args.out / RECIPES["optic-disc"]["partners"] / (f.stem + ".jpg")
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("RGB").save(dst, quality=95)
    disc = REPO / "bench" / "work" / "optic_disc" / "domains"
    for f in sorted(disc.glob("*/*/*")) if disc.is_dir() else []:  # <domain>/<images|labels>/<file>
        dst = args.out / "optic_disc" / "domains" / f.relative_to(disc)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if f.parent.name == "images":  # JPEG: the 1464 ROIs as PNG would not travel within 64 MiB
            Image.open(f).convert("RGB").save(dst.with_suffix(".jpg"), quality=95)
        else:
            shutil.copy2(f, dst)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{args.out}: {size / 2**20:.1f} MiB")
    return 0


# What turns a finished run into the bundled model, in order, each choosing on the model's own sources and
# writing into the bundled copy's model.json ({bundled}: that folder, {data}: the recipe's data).
SHIP_STEPS: dict[str, list[list[str]]] = {
    "vessels": [
        ["bench.recipes.threshold_choice", "--model", "{bundled}", "--data", "{data}", "--write",
         "--out", "bench/results/threshold/bundled_3domain.md"],
        ["bench.recipes.adaptation_settings", "--model", "{bundled}", "--data", "{data}", "--write"],
        ["bench.recipes.backfill_profile", "--model", "{bundled}", "--data", "{data}",
         "--description", "colour fundus photographs"],
    ],
    "optic-disc": [
        ["bench.recipes.optic_disc_settings", "--model", "bundled={bundled}", "--write-into", "bundled={bundled}"],
        ["bench.recipes.adaptation_settings", "--model", "{bundled}", "--data", "bench/work/optic_disc/bundled",
         "--write"],
    ],
}


def ship(args: argparse.Namespace) -> int:
    """Copy a finished run's model into the package (each file replaced whole), then run SHIP_STEPS."""
    summary = _run_summary(args.run)
    done, planned = summary.get("iterations_done"), summary.get("iterations_planned")
    if not summary["model"] or done is None or done != planned:
        print(f"{args.run}: not a finished run ({done} of {planned} iterations); nothing shipped", file=sys.stderr)
        return 2
    bundled = REPO / "napari_ramseg" / "bundled_models" / args.recipe
    for name in ("model.safetensors", "model.json"):  # the weights first: a model.json never names missing ones
        partial = bundled / f".{name}.partial"
        shutil.copy2(args.run / name, partial)
        os.replace(partial, bundled / name)
    fill = {"bundled": str(bundled.relative_to(REPO)), "data": str(data_root(args.recipe, args.data))}
    for step in SHIP_STEPS[args.recipe]:
        cmd = [sys.executable, "-m", *(part.format(**fill) for part in step)]
        print(" ".join(cmd[1:]), flush=True)
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            print(f"{step[0]} failed; {bundled} holds the new weights without its choices", file=sys.stderr)
            return 1
    print(f"shipped {args.run} as {bundled.relative_to(REPO)}; now its card (MODEL.md) and the README's tables")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one recipe (a check with --target)")
    t.add_argument("recipe", choices=sorted(RECIPES))
    t.add_argument("--target", help="held-out camera: the recipe's leave-one-camera-out check")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--data", type=Path, default=DATA)
    t.add_argument("--iterations", type=int)
    s = sub.add_parser("side-by-side", help="every job at once, stopped before a deadline, then scored")
    s.add_argument("--data", type=Path, default=DATA)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--recipes", default="vessels,optic-disc")
    s.add_argument("--device", default="cuda")
    s.add_argument("--threads", type=int, default=2, help="CPU threads per job (drawing batches, validation)")
    s.add_argument("--iterations", type=int, help="override every recipe's budget (a tiny test)")
    s.add_argument("--deadline-s", type=float, default=560)
    s.add_argument("--score-s", type=float, default=90, help="seconds kept after training for scoring")
    c = sub.add_parser("carry", help="the recipes' data, small enough to carry to a GPU machine")
    c.add_argument("--data", type=Path, default=DATA)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--long-side", type=int, default=1024)
    p = sub.add_parser("ship", help="a finished run as the bundled model, with its source-chosen settings")
    p.add_argument("recipe", choices=sorted(RECIPES))
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DATA)
    args, rest = ap.parse_known_args(argv)
    if args.command == "train":
        cmd = train_command(args.recipe, args.out, args.data, args.target, args.iterations, rest)
        print(" ".join(cmd), flush=True)
        os.execv(cmd[0], cmd)
    if args.command == "side-by-side":
        args.train_args = rest
        return side_by_side(args)
    if args.command == "ship":
        return ship(args)
    return carry(args)


if __name__ == "__main__":
    sys.exit(main())
