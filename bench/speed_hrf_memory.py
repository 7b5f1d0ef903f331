"""Memory of a full-resolution HRF photograph (3504x2336 RGB) for bench/speed.py: one prediction per
preprocess setting, each in a fresh interpreter so that its peak resident memory is its own."""

from __future__ import annotations

import json
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from napari_ramseg.core.checkpoint import load_model
from napari_ramseg.core.config import PreprocessConfig
from napari_ramseg.core.infer import Predictor

from speed_inputs import HRF_SHAPE, hrf_fullres, metadata
from speed_timing import child_command, log

HRF_CHILD_FLAG = "--_hrf-child"


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). ru_maxrss is not used: on Linux a child started by
    fork + exec inherits its parent's ru_maxrss, which would report the parent's peak."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hrf_child(mode: str, model_dir: str) -> None:
    """Runs in a fresh interpreter: peak RSS of one full-resolution HRF prediction."""
    net, meta = load_model(model_dir, torch.device("cpu"))
    preprocess = {"no_long_side": PreprocessConfig(size=256), "long_side_540": PreprocessConfig(size=128, long_side=540),
                  "full_res_tiled": PreprocessConfig(size=512, long_side=max(HRF_SHAPE))}[mode]
    predictor = Predictor(net, metadata(preprocess), "cpu")
    image, source = hrf_fullres()
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    pred = predictor.predict_image(image)
    wall = time.perf_counter() - t0
    from napari_ramseg.core.sampling import working_shape

    shape = working_shape(*image.shape[:2], preprocess)
    print(json.dumps({"mode": mode, "image": source, "working_shape": list(shape),
                      "tiled": shape[0] * shape[1] > (2 * predictor.tile) ** 2, "tile": predictor.tile,
                      "peak_rss_before_predict_mb": round(rss0, 1),
                      "peak_rss_mb": round(peak_rss_mb(), 1),
                      "seconds": round(wall, 2), "labels_shape": list(pred.labels.shape),
                      "foreground_fraction": round(float((pred.labels > 0).mean()), 4)}))


def bench_hrf(model_dir: Path, modes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in modes:
        log(f"HRF full resolution, {mode} (fresh process)")
        proc = subprocess.run(child_command(HRF_CHILD_FLAG, mode, model_dir),
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            out[mode] = {"error": proc.stderr[-2000:]}
            continue
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out
