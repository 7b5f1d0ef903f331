"""How the speed benchmark (bench/speed/benchmark.py) times things: interleaved A/B rounds, ratios of medians, this
CPU's fp32 matmul ceiling, and the command that runs one measurement in a fresh interpreter.
bench/speed/gpu.py times its GPU paths with the same ``interleaved``."""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

START = time.perf_counter()
SPEED_MODULE = "bench.speed.benchmark"
REPO = Path(__file__).resolve().parents[2]  # where ``python -m bench...`` finds the bench package


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 1,
                budget_s: float | None = None, sync: Callable[[], Any] = lambda: None) -> dict[str, dict[str, Any]]:
    """Run every fn ``warmup`` times, then ``reps`` rounds A B C / C B A ...; wall and CPU seconds.
    ``sync`` runs before and after every timed call (a GPU's synchronize, so its queue is counted)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    t_start = time.perf_counter()
    names = list(fns)
    for r in range(reps):
        for name in (names if r % 2 == 0 else names[::-1]):
            sync()
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        if budget_s is not None and r >= 1 and time.perf_counter() - t_start > budget_s:
            break
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "runs_s": [round(x, 4) for x in v],
                "cpu_median_s": statistics.median(cpu[k])} for k, v in times.items()}


def ratio(a: dict[str, Any], b: dict[str, Any], key: str = "median_s") -> float:
    return round(a[key] / b[key], 3)


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def sgemm_gflops(n: int = 1536, reps: int = 8) -> float:
    """Best fp32 matmul rate over a few tries: the practical ceiling of any fp32 convolution here."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def roofline(net: torch.nn.Module) -> dict[str, Any]:
    """FLOPs of one 512x512 forward pass and this CPU's fp32 matmul rate: the floor for any fp32 path."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        copy.deepcopy(net)(torch.zeros(1, 3, 512, 512))
    flops = counter.get_total_flops()
    gflops = sgemm_gflops()
    return {"forward_512_gflop": round(flops / 1e9, 2), "sgemm_fp32_gflops_best": round(gflops, 1),
            "fp32_floor_512_ms": round(flops / (gflops * 1e9) * 1000, 1)}


def child_command(flag: str, *args: Any) -> list[str]:
    """A measurement that must start from a fresh interpreter (peak memory, a process-wide allocator
    setting, a napari viewer) runs as ``python -m bench.speed.benchmark <hidden child flag> args``; run it
    with ``cwd=REPO``, where the bench package is found."""
    return [sys.executable, "-m", SPEED_MODULE, flag, *(str(a) for a in args)]
