#!/usr/bin/env python
"""The training step against this CPU's roofline (issue 28): what one RAM-DSIR step costs, in fp32 and
bf16, and what a run pays before its first step (imports, reading the data).

The roofline is the best rate of a large matrix product at the same precision and thread count, the
ceiling a convolution network's step can approach on this CPU. The step's FLOPs are counted with
``torch.utils.flop_counter`` (forward and backward of every view the step puts through the network).
Each variant is timed by wall clock and by CPU time of this process: the machine is shared with other
jobs, and CPU time / threads says how fast the step ran while it had the cores.

    python -m bench.speed.train_roofline                      # 1 and 2 threads, fp32 and bf16
    python -m bench.speed.train_roofline --threads 1 --steps 3
    python -m bench.speed.train_roofline --threads 1 --precisions bf16 --compile --skip-startup --out bench/results/train_roofline_compile
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.common import machine as bench_machine
from bench.common import results_io

BENCH = Path(__file__).resolve().parents[1]


def matmul_peak(dtype: torch.dtype, threads: int, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` n x n products at ``dtype`` (the precision's ceiling here),
    per CPU time divided by the threads, as the steps are measured (the machine is shared)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up: oneDNN picks its kernel
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        torch.mm(a, b)
        best = min(best, (time.process_time() - t) / threads)
    return 2 * n**3 / best / 1e9


def make_trainer(precision: str, size: int, batch: int):
    from napari_ramseg.core.config import ModelConfig, PreprocessConfig, TrainConfig
    from napari_ramseg.core.labels import VESSELS
    from napari_ramseg.core.training.trainer import Trainer
    from bench.speed.inputs import train_samples

    config = TrainConfig(labels=VESSELS, model=ModelConfig(), preprocess=PreprocessConfig(size=size), batch=batch,
                         iterations=10**6, val_every=10**6, device="cpu", seed=0, precision=precision)
    return Trainer(config, ["A", "B"], train_samples())


def step_flops(trainer) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        trainer.step()
    return int(counter.get_total_flops())


def compile_network(trainer) -> float:
    """``torch.compile`` the U-Net's encoder and decoder (the step's convolutions; the per-domain restoration
    decoders see a batch size that varies from step to step, so they stay eager); CPU seconds of the first,
    compiling step."""
    net = trainer.net
    net.encode = torch.compile(net.encode, dynamic=False)
    net.decode = torch.compile(net.decode, dynamic=False)
    t = time.process_time()
    trainer.step()
    return time.process_time() - t


def time_steps(trainer, steps: int) -> dict[str, float]:
    trainer.step()  # warm-up
    walls, cpus = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        trainer.step()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def startup_costs() -> dict[str, float]:
    """Seconds of a fresh interpreter importing the training engine, and MONAI alone."""
    out = {}
    for name, module in (("import_training_engine_s", "napari_ramseg.core.training.job"), ("import_monai_s", "monai")):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        out[name] = round(time.perf_counter() - t, 2)
    return out


def read_vessel_data_s(data: Path) -> float | None:
    """Seconds ``ramseg train`` spends reading the three vessel domains (full-size files, kept at 768 px)."""
    if not (data / "vessels").is_dir():
        return None
    from napari_ramseg.core.config import PreprocessConfig
    from napari_ramseg.core.training.job import load_training_data

    t = time.perf_counter()
    load_training_data(data / "vessels", domains=["HRF", "STARE", "CHASE_DB1"],
                       preprocess=PreprocessConfig(size=256, long_side=768))
    return round(time.perf_counter() - t, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (after one warm-up)")
    ap.add_argument("--data", type=Path, default=BENCH.parent.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--compile", action="store_true", help="time each variant eager and torch.compile'd")
    ap.add_argument("--skip-startup", action="store_true", help="leave out the imports and data reading timings")
    args = ap.parse_args(argv)

    rows = []
    flops = None
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for precision in args.precisions.split(","):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            peak = matmul_peak(dtype, threads)
            trainer = make_trainer(precision, args.size, args.batch)
            flops = flops or step_flops(trainer)
            for compiled in (False, True) if args.compile else (False,):
                compile_s = compile_network(trainer) if compiled else None
                t = time_steps(trainer, args.steps)
                achieved = flops / t["wall_s"] / 1e9
                achieved_cpu = flops / (t["cpu_s"] / threads) / 1e9
                rows.append({"threads": threads, "precision": precision + (" compiled" if compiled else ""),
                             "step_wall_s": round(t["wall_s"], 3), "step_cpu_s": round(t["cpu_s"], 3),
                             "gflops_wall": round(achieved, 1), "gflops_per_cpu_time": round(achieved_cpu, 1),
                             "matmul_peak_gflops": round(peak, 1), "fraction_of_peak": round(achieved_cpu / peak, 3),
                             **({"compile_cpu_s": round(compile_s, 1)} if compiled else {})})
                print(json.dumps(rows[-1]), flush=True)
    record = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
              "machine": bench_machine.describe(), "step": {"size": args.size, "batch": args.batch,
                                                            "method": "RAM-DSIR (RAM + DSIR + consistency)",
                                                            "gflop_per_step": round((flops or 0) / 1e9, 1)},
              "rows": rows, "startup": None if args.skip_startup else {
                  **startup_costs(), "read_vessel_data_full_size_s": read_vessel_data_s(args.data)}}
    results_io.write_json(args.out / "train_roofline.json", record)
    (args.out / "train_roofline.md").write_text(render(record))
    print(render(record))
    return 0


def render(record: dict) -> str:
    lines = ["# The training step against the CPU's roofline (issue 28)", "",
             f"Command: `{record['command']}`  ", f"Machine: {bench_machine.one_line(record['machine'])}", "",
             f"One RAM-DSIR step, batch {record['step']['batch']} at {record['step']['size']} px: "
             f"{record['step']['gflop_per_step']} GFLOP (forward and backward, counted by torch's FlopCounterMode). "
             "Roofline: the best 2048x2048 matrix product at the same precision and thread count, per CPU time. "
             "`per CPU time` divides by the step's CPU time per thread, the rate while it had the cores "
             "(the machine was shared with other jobs).", "",
             "| threads | precision | step (wall s) | step (CPU s) | GFLOP/s wall | GFLOP/s per CPU time | matmul peak | of peak |",
             "|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        lines.append(f"| {r['threads']} | {r['precision']} | {r['step_wall_s']} | {r['step_cpu_s']} | {r['gflops_wall']} "
                     f"| {r['gflops_per_cpu_time']} | {r['matmul_peak_gflops']} | {r['fraction_of_peak']:.0%} |")
    s = record["startup"]
    if s is None:
        return "\n".join(lines + [""])
    lines += ["", "## Before the first step", "",
              f"- importing the training engine in a fresh interpreter: {s['import_training_engine_s']} s "
              f"(MONAI alone: {s['import_monai_s']} s)",
              f"- reading the three vessel domains (full-size files, kept at a 768 px working scale): {s['read_vessel_data_full_size_s']} s", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
