"""Memory of a full-resolution HRF photograph (3504x2336 RGB) for bench/speed/benchmark.py: one prediction per
preprocess setting, each in a fresh interpreter so that its peak resident memory is its own."""

from __future__ import annotations

import json
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.inference.predictor import Predictor

from bench.speed.inputs import SIZES, hrf_fullres, metadata
from bench.speed.timing import REPO, child_command, log

HRF_CHILD_FLAG = "--_hrf-child"


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). ru_maxrss is not used: on Linux a child started by
    fork + exec inherits its parent's ru_maxrss, which would report the parent's peak."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hrf_child(mode: str, model_dir: str, size: str = "full") -> None:
    """Runs in a fresh interpreter: peak RSS of one full-resolution HRF prediction."""
    from napari_ramseg.core.method.sampling import working_shape

    sizes = SIZES[size]
    net, meta = load_model(model_dir, torch.device("cpu"))
    preprocess = sizes.hrf_preprocess(mode)
    predictor = Predictor(net, metadata(preprocess, meta.domains), "cpu", tile=sizes.hrf_tile)
    image, source = hrf_fullres(sizes.hrf)
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    pred = predictor.predict_image(image)
    wall = time.perf_counter() - t0
    shape = working_shape(*image.shape[:2], preprocess)
    print(json.dumps({"mode": mode, "image": source, "working_shape": list(shape),
                      "tiled": shape[0] * shape[1] > (2 * predictor.tile) ** 2, "tile": predictor.tile,
                      "precision": str(predictor.dtype or "fp32").removeprefix("torch."),
                      "peak_rss_before_predict_mb": round(rss0, 1),
                      "peak_rss_mb": round(peak_rss_mb(), 1),
                      "seconds": round(wall, 2), "labels_shape": list(pred.labels.shape),
                      "foreground_fraction": round(float((pred.labels > 0).mean()), 4)}))


def bench_hrf(model_dir: Path, modes: list[str], size: str = "full") -> dict[str, Any]:
    """One fresh process per mode; a mode whose child failed is ``{"error": its last stderr line,
    "stderr": the tail}`` (the caller counts it as a failed case)."""
    out: dict[str, Any] = {}
    for mode in modes:
        log(f"HRF full resolution, {mode} (fresh process)")
        try:
            proc = subprocess.run(child_command(HRF_CHILD_FLAG, mode, model_dir, size),
                                  capture_output=True, text=True, timeout=900, cwd=REPO)
        except subprocess.TimeoutExpired:
            out[mode] = {"error": "no result within 900 s", "stderr": ""}
            continue
        last = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
        if proc.returncode != 0 or not last or not last[0].startswith("{"):
            out[mode] = {"error": last_line(proc.stderr) or f"exit status {proc.returncode}, no result",
                         "stderr": proc.stderr[-2000:]}
            continue
        out[mode] = json.loads(last[0])
    return out


def last_line(text: str) -> str:
    """The last non-empty line of a child's stderr: its error, not the traceback above it."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""
