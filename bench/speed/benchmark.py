#!/usr/bin/env python
"""Speed benchmark (issue 7): the project's inference and training paths against plain PyTorch.

Every ratio compares two paths timed in the same process, interleaved (A B A B ..., the order
alternating each round) so that load from other processes hits both alike; the figures are medians
(minimums are kept too). The baselines are plain eager fp32 PyTorch on the same network and weights:
NCHW, unfolded BatchNorm, ``torch.no_grad``, one image (one slice) per forward pass, the same
preprocessing functions, and no project code on the hot path. The project's path runs as the project
does, at precision ``auto``: bf16 autocast on a CPU with native bf16 (AVX-512 BF16 or AMX), fp32
elsewhere; where that is bf16, its fp32 path is timed beside it, and the report says which ran.

    python -m bench.speed.benchmark --quick --json bench/results/speed.json   # < 3 min on an idle 2-core CPU
    python -m bench.speed.benchmark --json bench/results/speed.json           # more repeats, UI volume case,
                                                                              # allocator; --compile: compile variant
    python -m bench.speed.benchmark --quick --tiny --json /tmp/speed.json     # every case at a toy size (the test)

A case that fails (a child process that cannot load the model, a UI job that does not end "done" with
its segmentation layer, a fast path whose labels disagree with the baseline, an exception) fails the run:
its figure is left out (the target's verdict says FAILED), the report names the case and the reason,
and the exit status is 1.

Keys (``--json``): ``infer_2d_speedup``, ``infer_volume_speedup``, ``train_step_overhead``,
``hrf_fullres_peak_mb``, ``ui_max_stall_ms`` and the absolute figures behind them; ``--md`` (default:
next to the JSON) writes the table with the machine, the command, the targets and a profile.

Inference cases: a 512x512 RGB image (the sample HRF photograph, rescaled and cropped) through a
model whose working scale is 512x512, so the network runs at 512x512 in both paths; a synthetic
24x384x384 volume through a model working at 384x384. Weights: the bundled vessel model where it
exists (else ``bench/work/default-vessels``, else a seeded random network with random BatchNorm
statistics); the architecture is the paper's (base width 16, depth 5) in every case.
"""

from __future__ import annotations

# The measurements live beside this CLI in bench/speed/: inputs (weights and inputs), timing (interleaving,
# roofline, fresh-process commands), inference, training, hrf_memory, ui; the report (targets, notes,
# markdown) in report.

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from bench.common import machine as bench_machine
from bench.common import results_io

from napari_ramseg.core.models.checkpoint import save_model
from napari_ramseg.core.config import PreprocessConfig

from bench.speed.hrf_memory import HRF_CHILD_FLAG, bench_hrf, hrf_child
from bench.speed.inference import ALLOC_CHILD_FLAG, alloc_child, bench_2d, bench_allocator, bench_volume, profile_2d
from bench.speed.inputs import SIZES, domains_of, metadata, model_source
from bench.speed.report import TARGETS, add_notes, drop_failed_figures, targets, write_markdown
from bench.speed.timing import START, log, ratio, roofline, sgemm_gflops
from bench.speed.training import bench_train
from bench.speed.ui import UI_CHILD_FLAG, bench_ui, ui_child


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Failures:
    """The cases that failed in this run: each named with its section and reason, logged at once; the run
    then exits non-zero, and no figure comes from a section with a failed case (report.verdict)."""

    def __init__(self, items: list[dict[str, str]]):
        self.items = items

    def add(self, section: str, case: str, reason: str) -> None:
        reason = " ".join(str(reason).split())[:600] or "no reason given"
        self.items.append({"section": section, "case": case, "reason": reason})
        log(f"FAILED {case}: {reason}")

    def run(self, section: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None with the section's failure recorded when it raises."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - any failure of a case fails the run, loudly, at the end
            traceback.print_exc()
            self.add(section, section, f"{type(exc).__name__}: {exc}")
            return None

    def check_agreement(self, section: str, case: str, agreement: dict[str, Any], precision: str) -> None:
        """A fast path that gives other labels than the baseline is not a speed-up: fp32 must agree on
        all but 0.01 % of the pixels, reduced precision on all but 1 %."""
        floor = 0.9999 if precision == "fp32" else 0.99
        if agreement["labels_identical_fraction"] < floor:
            self.add(section, case, f"the project's {precision} labels agree with the plain baseline on "
                     f"{100 * agreement['labels_identical_fraction']:.3f} % of the pixels (< {100 * floor:g} %)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats; < 3 minutes on an idle 2-core CPU")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--md", type=Path, help="markdown report (default: the JSON path with .md)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: 2d,volume,train,allocator,hrf,ui,profile")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the fast path (slow to compile)")
    ap.add_argument("--tiny", action="store_true",
                    help="every case at a toy size (64 px images, a 292x438 'full-resolution' photograph): "
                         "checks that every case runs; its figures time nothing worth reporting")
    ap.add_argument(HRF_CHILD_FLAG, nargs=3, help=argparse.SUPPRESS)
    ap.add_argument(UI_CHILD_FLAG, nargs=3, help=argparse.SUPPRESS)
    ap.add_argument(ALLOC_CHILD_FLAG, nargs=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._hrf_child:
        hrf_child(*args._hrf_child)
        return
    if args._ui_child:
        ui_child(*args._ui_child)
        return
    if args._alloc_child:
        alloc_child(*args._alloc_child)
        return
    sys.exit(run(args))


def run(args: argparse.Namespace) -> int:
    """The benchmark; 0 when every case ran, 1 when any failed (named in the report and on stderr)."""
    skip = set(filter(None, args.skip.split(",")))
    quick = args.quick
    size = "tiny" if args.tiny else "full"
    sizes = SIZES[size]
    r: dict[str, Any] = {"command": "python -m bench.speed.benchmark " + " ".join(sys.argv[1:]),
                         "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": quick, "size": size,
                         "machine": bench_machine.describe(), "load_before": loadavg(), "notes": [], "failures": []}
    failures = Failures(r["failures"])
    net, weights = model_source()
    r["weights"] = weights
    log(f"weights: {weights}; load {r['load_before']}; sizes: {size}")
    r["roofline"] = roofline(net)

    if "2d" not in skip:
        log(f"2D {sizes.image}x{sizes.image}")
        d2 = failures.run("2d", lambda: bench_2d(net, quick, args.compile, sizes))
        if d2 is not None:
            r["infer_2d"] = d2
            failures.check_agreement("2d", "2d project", d2["agreement_vs_baseline"], d2["precision"])
            if "agreement_fp32_vs_baseline" in d2:
                failures.check_agreement("2d", "2d project_fp32", d2["agreement_fp32_vs_baseline"], "fp32")
            e = d2["end_to_end"]
            r["infer_2d_speedup"] = ratio(e["baseline"], e["project"])
            r["infer_2d_speedup_min"] = ratio(e["baseline"], e["project"], "min_s")
            r["infer_2d_baseline_ms"] = round(e["baseline"]["median_s"] * 1000, 1)
            r["infer_2d_project_ms"] = round(e["project"]["median_s"] * 1000, 1)
            if "project_fp32" in e:
                r["infer_2d_speedup_fp32"] = ratio(e["baseline"], e["project_fp32"])
                r["infer_2d_project_fp32_ms"] = round(e["project_fp32"]["median_s"] * 1000, 1)
    if "volume" not in skip:
        log("volume {0}x{1}x{1}".format(*sizes.volume))
        vol = failures.run("volume", lambda: bench_volume(net, quick, sizes))
        if vol is not None:
            r["infer_volume"] = vol
            failures.check_agreement("volume", "volume project", vol["agreement_vs_baseline"], vol["precision"])
            e = vol["end_to_end"]
            r["infer_volume_speedup"] = ratio(e["baseline"], e["project"])
            r["infer_volume_baseline_s"] = round(e["baseline"]["median_s"], 3)
            r["infer_volume_project_s"] = round(e["project"]["median_s"], 3)
    if "train" not in skip:
        log("training steps")
        tr = failures.run("train", lambda: bench_train(quick, sizes))
        if tr is not None:
            r["train"] = tr
            s = tr["steps"]
            r["train_step_overhead"] = ratio(s["ramdsir_b8"], s["plain_b16"])
            if "plain_b16_channels_last" in s:
                r["train_step_method_overhead_both_channels_last"] = ratio(s["ramdsir_b8"], s["plain_b16_channels_last"])
            r["train_step_plain_b16_s"] = round(s["plain_b16"]["median_s"], 3)
            r["train_step_ramdsir_b8_s"] = round(s["ramdsir_b8"]["median_s"], 3)
            r["train_images_per_s"] = tr["images_per_s"]
            r["train_reps_note"] = ("--quick: 1 warm-up + 2 timed steps per variant, the channels_last baseline "
                                    "only in the full run" if quick else "1 warm-up + 5 timed steps per variant")

    with tempfile.TemporaryDirectory(prefix="ramseg-speed-") as tmp:
        model_dir = Path(tmp) / "model"
        # the model.json must list as many source domains as the weights have domain BatchNorms
        save_model(net, metadata(PreprocessConfig(size=sizes.image), domains_of(net)), model_dir)
        if not quick and "allocator" not in skip:
            log("allocator setting on/off (fresh processes)")
            alloc = failures.run("allocator", lambda: bench_allocator(model_dir))
            if alloc is not None:
                r["allocator"] = alloc
                for error in alloc.get("errors", []):
                    failures.add("allocator", "allocator " + error.split(":")[0], error.split(":", 1)[-1])
        if "hrf" not in skip:
            modes = ["no_long_side", "long_side_540", "full_res_tiled"]
            hrf = failures.run("hrf", lambda: bench_hrf(model_dir, modes, size))
            if hrf is not None:
                r["hrf"] = hrf
                for mode, v in hrf.items():
                    if "error" in v:
                        failures.add("hrf", f"hrf {mode}", v["error"])
                # the worst of the three, only when all three ran
                if all("peak_rss_mb" in v for v in hrf.values()) and len(hrf) == len(modes):
                    r["hrf_fullres_peak_mb"] = max(v["peak_rss_mb"] for v in hrf.values())
                if size == "full":
                    r["notes"].append(
                        "HRF: a preprocess without long_side resizes every image to size x size "
                        "(sampling.working_shape), so it never tiles; long_side 540 (the bundled model) runs at "
                        "540x360, below the tiling threshold ((2*tile)^2 pixels). full_res_tiled (long_side 3504) "
                        "is the case that really runs the network at 3504x2336, in 512x512 tiles with Gaussian "
                        "blending; hrf_fullres_peak_mb is the worst of the three.")
        if "ui" not in skip:
            log("UI stall (napari under Xvfb)")
            ui = failures.run("ui", lambda: bench_ui(model_dir, "2d" if quick else "2d,volume", size))
            if ui is not None:
                r["ui"] = ui
                if "error" in ui:
                    failures.add("ui", "ui", ui["error"][-600:])
                for c in ui.get("cases", []):
                    if c.get("failed"):
                        failures.add("ui", f"ui {c['case']}", c["failed"])
                gaps = [c.get("max_gap_ms") for c in ui.get("cases", [])]
                if "error" not in ui and gaps and not any(c.get("failed") for c in ui["cases"]) \
                        and all(g is not None for g in gaps):
                    r["ui_max_stall_ms"] = max(gaps)
    if "profile" not in skip:
        prof = failures.run("profile", lambda: profile_2d(net, sizes))
        if prof is not None:
            r["profile_2d"] = prof

    # the matmul ceiling again at the end (the load changes): keep the better of the two
    roof = r["roofline"]
    roof["sgemm_fp32_gflops_best"] = round(max(roof["sgemm_fp32_gflops_best"], sgemm_gflops()), 1)
    roof["fp32_floor_512_ms"] = round(roof["forward_512_gflop"] / roof["sgemm_fp32_gflops_best"] * 1000, 1)
    drop_failed_figures(r)
    add_notes(r)
    r["load_after"] = loadavg()
    r["bench_seconds"] = round(time.perf_counter() - START, 1)
    r["targets"] = targets(r)
    log(f"done in {r['bench_seconds']} s")
    summary = {k: r.get(k) for k in TARGETS} | {"load_before": r["load_before"], "load_after": r["load_after"],
                                                "failed_cases": [f["case"] for f in r["failures"]]}
    print(json.dumps(summary, indent=1))
    if args.json:
        results_io.write_json(args.json, r)
        write_markdown(args.md or args.json.with_suffix(".md"), r)
    elif args.md:
        write_markdown(args.md, r)
    if r["failures"]:
        print(f"speed benchmark FAILED: {len(r['failures'])} case(s) failed; their figures are left out:",
              file=sys.stderr)
        for f in r["failures"]:
            print(f"  {f['case']}: {f['reason']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    main()
