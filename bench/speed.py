#!/usr/bin/env python
"""Speed benchmark (issue 7): the project's inference and training paths against plain PyTorch.

Every ratio compares two paths timed in the same process, interleaved (A B A B ..., the order
alternating each round) so that load from other processes hits both alike; the figures are medians
(minimums are kept too). The baselines are plain eager fp32 PyTorch on the same network and weights:
NCHW, unfolded BatchNorm, ``torch.no_grad``, one image (one slice) per forward pass, the same
preprocessing functions, and no project code on the hot path.

    python bench/speed.py --quick --json bench/results/speed.json      # < 3 min on a 2-core CPU
    python bench/speed.py --json bench/results/speed.json              # more repeats, UI volume case,
                                                                       # compile variant

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

# The measurements live beside this CLI: speed_inputs (weights and inputs), speed_timing (interleaving,
# roofline, fresh-process commands), speed_inference, speed_training, speed_hrf_memory, speed_ui; the
# report (targets, notes, markdown) in speed_report.

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine as bench_machine  # noqa: E402
import results_io  # noqa: E402

from napari_ramseg.core.checkpoint import save_model  # noqa: E402
from napari_ramseg.core.config import PreprocessConfig  # noqa: E402

from speed_hrf_memory import HRF_CHILD_FLAG, bench_hrf, hrf_child  # noqa: E402
from speed_inference import ALLOC_CHILD_FLAG, alloc_child, bench_2d, bench_allocator, bench_volume, profile_2d  # noqa: E402
from speed_inputs import metadata, model_source  # noqa: E402
from speed_report import TARGETS, add_notes, verdict, write_markdown  # noqa: E402
from speed_timing import START, log, ratio, roofline, sgemm_gflops  # noqa: E402
from speed_training import bench_train  # noqa: E402
from speed_ui import UI_CHILD_FLAG, bench_ui, ui_child  # noqa: E402


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats; < 3 minutes on a 2-core CPU")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--md", type=Path, help="markdown report (default: the JSON path with .md)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: 2d,volume,train,allocator,hrf,ui,profile")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the fast path (slow to compile)")
    ap.add_argument(HRF_CHILD_FLAG, nargs=2, help=argparse.SUPPRESS)
    ap.add_argument(UI_CHILD_FLAG, nargs=2, help=argparse.SUPPRESS)
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

    skip = set(filter(None, args.skip.split(",")))
    quick = args.quick
    r: dict[str, Any] = {"command": "python bench/speed.py " + " ".join(sys.argv[1:]),
                         "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": quick,
                         "machine": bench_machine.describe(), "load_before": loadavg(), "notes": []}
    net, weights = model_source()
    r["weights"] = weights
    log(f"weights: {weights}; load {r['load_before']}")
    r["roofline"] = roofline(net)

    if "2d" not in skip:
        log("2D 512x512")
        r["infer_2d"] = d2 = bench_2d(net, quick, args.compile)
        e = d2["end_to_end"]
        r["infer_2d_speedup"] = ratio(e["baseline"], e["project"])
        r["infer_2d_speedup_min"] = ratio(e["baseline"], e["project"], "min_s")
        r["infer_2d_baseline_ms"] = round(e["baseline"]["median_s"] * 1000, 1)
        r["infer_2d_project_ms"] = round(e["project"]["median_s"] * 1000, 1)
    if "volume" not in skip:
        log("volume 24x384x384")
        r["infer_volume"] = vol = bench_volume(net, quick)
        e = vol["end_to_end"]
        r["infer_volume_speedup"] = ratio(e["baseline"], e["project"])
        r["infer_volume_baseline_s"] = round(e["baseline"]["median_s"], 3)
        r["infer_volume_project_s"] = round(e["project"]["median_s"], 3)
    if "train" not in skip:
        log("training steps")
        r["train"] = tr = bench_train(quick)
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
        save_model(net, metadata(PreprocessConfig(size=512)), model_dir)
        if not quick and "allocator" not in skip:
            log("allocator setting on/off (fresh processes)")
            r["allocator"] = bench_allocator(model_dir)
        if "hrf" not in skip:
            r["hrf"] = hrf = bench_hrf(model_dir, ["no_long_side", "long_side_540", "full_res_tiled"])
            peaks = [v["peak_rss_mb"] for v in hrf.values() if "peak_rss_mb" in v]
            r["hrf_fullres_peak_mb"] = max(peaks) if peaks else None
            r["notes"].append(
                "HRF: a preprocess without long_side resizes every image to size x size (sampling.working_shape), "
                "so it never tiles; long_side 540 (the bundled model) runs at 540x360, below the tiling threshold "
                "((2*tile)^2 pixels). full_res_tiled (long_side 3504) is the case that really runs the network at "
                "3504x2336, in 512x512 tiles with Gaussian blending; hrf_fullres_peak_mb is the worst of the three.")
        if "ui" not in skip:
            log("UI stall (napari under Xvfb)")
            r["ui"] = ui = bench_ui(model_dir, "2d" if quick else "2d,volume")
            gaps = [c["max_gap_ms"] for c in ui.get("cases", []) if c.get("max_gap_ms") is not None]
            r["ui_max_stall_ms"] = max(gaps) if gaps else None
    if "profile" not in skip:
        r["profile_2d"] = profile_2d(net)

    # the matmul ceiling again at the end (the load changes): keep the better of the two
    roof = r["roofline"]
    roof["sgemm_fp32_gflops_best"] = round(max(roof["sgemm_fp32_gflops_best"], sgemm_gflops()), 1)
    roof["fp32_floor_512_ms"] = round(roof["forward_512_gflop"] / roof["sgemm_fp32_gflops_best"] * 1000, 1)
    add_notes(r)
    r["load_after"] = loadavg()
    r["bench_seconds"] = round(time.perf_counter() - START, 1)
    r["targets"] = {k: {"target": f"{op} {t}", "value": r.get(k), "verdict": verdict(k, r.get(k))}
                    for k, (op, t) in TARGETS.items()}
    log(f"done in {r['bench_seconds']} s")
    summary = {k: r.get(k) for k in TARGETS} | {"load_before": r["load_before"], "load_after": r["load_after"]}
    print(json.dumps(summary, indent=1))
    if args.json:
        results_io.write_json(args.json, r)
        write_markdown(args.md or args.json.with_suffix(".md"), r)
    elif args.md:
        write_markdown(args.md, r)


if __name__ == "__main__":
    main()
