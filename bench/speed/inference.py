"""Inference speed (bench/speed/benchmark.py): the project's 2D and 2.5D volume paths against plain eager fp32
PyTorch on the same network and weights, the network alone step by step, the allocator setting timed
in fresh processes, and a torch.profiler breakdown of the project's 2D call."""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.config import PreprocessConfig
from napari_ramseg.core.labels import VESSELS
from napari_ramseg.core.device import cpu_supports_bf16
from napari_ramseg.core.inference.predictor import (
    Predictor,
    entropy_map,
    labels_from_probabilities,
    probabilities_from_logits,
)
from napari_ramseg.core.method.model import RamSegNet
from napari_ramseg.core.data.preprocess import to_model_channels, volume_to_slices_25d

from bench.speed.inputs import SIZES, Sizes, domains_of, fundus_512, metadata, synthetic_volume
from bench.speed.timing import REPO, child_command, interleaved, timed

ALLOC_CHILD_FLAG = "--_alloc-child"


# ------------------------------------------------------------------------------------ baselines
def baseline_image(net: RamSegNet, image: np.ndarray, threshold: float):
    """Plain eager fp32: same preprocessing, NCHW, BatchNorm as is, no_grad, then sigmoid/threshold."""
    x = torch.from_numpy(to_model_channels(image, 3))[None]
    with torch.no_grad():
        probs = probabilities_from_logits(net(x), VESSELS)[0]
        return labels_from_probabilities(probs, VESSELS, threshold), probs.numpy(), entropy_map(probs, VESSELS).numpy()


def baseline_volume(net: RamSegNet, volume: np.ndarray, threshold: float):
    """Plain eager fp32, one 2.5D slice per forward pass."""
    slices = torch.from_numpy(volume_to_slices_25d(volume))
    with torch.no_grad():
        probs = torch.stack([probabilities_from_logits(net(s[None]), VESSELS)[0] for s in slices], dim=1)
        return labels_from_probabilities(probs, VESSELS, threshold), probs.numpy(), entropy_map(probs, VESSELS).numpy()


def agreement(a_labels: np.ndarray, b_labels: np.ndarray, a_probs: np.ndarray, b_probs: np.ndarray) -> dict[str, Any]:
    return {"labels_identical_fraction": round(float((a_labels == b_labels).mean()), 6),
            "labels_differing_pixels": int((a_labels != b_labels).sum()),
            "max_abs_probability_diff": float(np.abs(a_probs - b_probs).max())}


def precision_name(dtype) -> str:
    """"fp32" for a Predictor's or Trainer's dtype None, else "bfloat16" / "float16"."""
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


def bench_2d(net: RamSegNet, quick: bool, compile_variant: bool, sizes: Sizes = SIZES["full"]) -> dict[str, Any]:
    side = sizes.image
    image, source = fundus_512(side)
    meta = metadata(PreprocessConfig(size=side), domains_of(net))
    predictor = Predictor(copy.deepcopy(net), meta, "cpu")  # precision auto, as the project runs
    plain = copy.deepcopy(net).eval()
    thr = predictor.threshold
    out: dict[str, Any] = {"image": source, "shape": list(image.shape), "network_input": [side, side],
                           "fast_path": predictor.fast, "autocast": str(predictor.dtype),
                           "precision": precision_name(predictor.dtype)}
    reps = 5 if quick else 15
    fns: dict[str, Callable[[], Any]] = {"baseline": lambda: baseline_image(plain, image, thr),
                                         "project": lambda: predictor.predict_image(image)}
    fp32 = None
    if predictor.dtype is not None:  # the project runs in reduced precision here: its fp32 path too
        fp32 = Predictor(copy.deepcopy(net), meta, "cpu", precision="fp32")
        fns["project_fp32"] = lambda: fp32.predict_image(image)
    res = interleaved(fns, reps)
    out["end_to_end"] = res
    b_labels, b_probs, _ = baseline_image(plain, image, thr)
    b_probs = b_probs[None] if b_probs.ndim == 2 else b_probs
    p = predictor.predict_image(image)
    out["agreement_vs_baseline"] = agreement(p.labels, b_labels, p.probabilities, b_probs)
    if fp32 is not None:
        q = fp32.predict_image(image)
        out["agreement_fp32_vs_baseline"] = agreement(q.labels, b_labels, q.probabilities, b_probs)
    out["foreground_fraction"] = round(float((b_labels > 0).mean()), 4)

    # Where the gain comes from: the network alone, step by step.
    x = torch.from_numpy(to_model_channels(image, 3))[None]
    xcl = x.contiguous(memory_format=torch.channels_last)
    cl_net = copy.deepcopy(net).eval().to(memory_format=torch.channels_last)
    folded = predictor.fast_model if predictor.dtype is None else fp32.fast_model

    def bf16(module, inp):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return module(inp)

    nets: dict[str, Callable[[], Any]] = {
        "eager_nchw": lambda: plain(x), "channels_last": lambda: cl_net(xcl), "folded_channels_last": lambda: folded(xcl)}
    # bf16 autocast of the same folded network: always where the project uses it (native bf16), and in
    # the full run elsewhere (to show what it would cost there)
    if not quick or cpu_supports_bf16():
        nets["folded_channels_last_bf16"] = lambda: bf16(folded, xcl)
    if compile_variant:
        from napari_ramseg.core.inference.fastpath import CompiledModule

        compiled = CompiledModule(folded)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(xcl)
        out["compile_seconds"] = round(time.perf_counter() - t0, 1)
        if compiled.failed is None:
            nets["folded_channels_last_compiled"] = lambda: compiled(xcl)
        else:
            out["compile_failed"] = compiled.failed
    with torch.inference_mode():
        out["network_only"] = interleaved(nets, 3 if quick else 9)
    if "folded_channels_last_bf16" in out["network_only"]:
        out["bf16_autocast_ms"] = round(out["network_only"]["folded_channels_last_bf16"]["median_s"] * 1000, 1)
    return out


def bench_volume(net: RamSegNet, quick: bool, sizes: Sizes = SIZES["full"]) -> dict[str, Any]:
    depth, side = sizes.volume
    volume = synthetic_volume(depth, side)
    predictor = Predictor(copy.deepcopy(net), metadata(PreprocessConfig(size=side), domains_of(net)), "cpu")
    plain = copy.deepcopy(net).eval()
    thr = predictor.threshold
    small = volume[:3]
    baseline_volume(plain, small, thr)
    predictor.predict_volume(small)
    last: dict[str, Any] = {}

    def run_baseline():
        last["baseline"] = baseline_volume(plain, volume, thr)

    def run_project():
        last["project"] = predictor.predict_volume(volume)

    res = interleaved({"baseline": run_baseline, "project": run_project}, 2 if quick else 3, warmup=0)
    b_labels, b_probs, _ = last["baseline"]
    p = last["project"]
    return {"volume": f"synthetic int16 {depth}x{side}x{side} (smoothed noise), 2.5D", "shape": list(volume.shape),
            "precision": precision_name(predictor.dtype),
            "slices_per_pass": predictor.batch_for(side, side), "end_to_end": res,
            "agreement_vs_baseline": agreement(p.labels, b_labels, p.probabilities, b_probs)}


def alloc_child(model_dir: str) -> None:
    """Runs in a fresh interpreter (RAMSEG_MALLOC_TUNE set by the parent): project 2D calls, wall and sys."""
    net, meta = load_model(model_dir, torch.device("cpu"))
    predictor = Predictor(net, metadata(PreprocessConfig(size=512), meta.domains), "cpu")
    image, _ = fundus_512()
    predictor.predict_image(image)
    t0, times = os.times(), []
    for _ in range(8):
        times.append(timed(lambda: predictor.predict_image(image)))
    t1 = os.times()
    print(json.dumps({"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
                      "user_s": round(t1.user - t0.user, 2), "sys_s": round(t1.system - t0.system, 2)}))


def bench_allocator(model_dir: Path) -> dict[str, Any]:
    """The allocator setting is process-wide (the in-process baseline gets it too), so time it apart."""
    out: dict[str, Any] = {}
    for rnd in range(2):
        for setting in ("0", "1"):
            env = {**os.environ, "RAMSEG_MALLOC_TUNE": setting}
            proc = subprocess.run(child_command(ALLOC_CHILD_FLAG, model_dir), env=env, cwd=REPO,
                                  capture_output=True, text=True, timeout=600)
            key = "tuned" if setting == "1" else "glibc_default"
            if proc.returncode == 0 and proc.stdout.strip():
                out.setdefault(key, []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
            else:  # the caller counts it as a failed case
                lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
                out.setdefault("errors", []).append(f"{key}: " + (lines[-1] if lines else f"exit status {proc.returncode}"))
    return out


def profile_2d(net: RamSegNet, sizes: Sizes = SIZES["full"]) -> dict[str, Any]:
    """Where the project's 2D time goes: torch profiler, top operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    image, _ = fundus_512(sizes.image)
    predictor = Predictor(copy.deepcopy(net), metadata(PreprocessConfig(size=sizes.image), domains_of(net)), "cpu")
    predictor.predict_image(image)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        predictor.predict_image(image)
        wall = time.perf_counter() - t0
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    top = [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000, 1),
            "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in events[:10]]
    conv = sum(e.self_cpu_time_total for e in events if "conv" in e.key.lower()) / total
    return {"wall_ms_profiled": round(wall * 1000, 1), "convolution_share": round(conv, 3),
            "precision": precision_name(predictor.dtype), "top_ops": top}
