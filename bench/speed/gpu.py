#!/usr/bin/env python
"""CUDA speed check: the project's inference and training paths against plain eager fp32 PyTorch on the
same GPU, in the same run (issues 5 and 7, GPU column).

    python -m bench.speed.gpu --json bench/results/gpu/speed.json

Sections (each times the baseline and the project path interleaved, after warm-up, synchronising the
GPU around every timed call):

- ``infer_2d``: one 512x512 fundus photograph, numpy in -> labels out. Baseline: the network as
  trained (NCHW, BatchNorm as is), fp32, ``no_grad``. Project: ``Predictor`` (BatchNorm folded,
  channels_last, bf16 autocast, ``inference_mode``). Also the network alone at batch 1 and 8.
- ``infer_volume``: a 24x384x384 int16 stack through the 2.5D path; the baseline runs one slice per pass.
- ``hrf_fullres``: a 3504x2336 photograph at native resolution (512 px tiles, Gaussian-blended): time
  and peak GPU memory.
- ``train``: one optimizer step of the Trainer at 256 px (RAM-DSIR at batch 8, plain ERM at batch 16),
  bf16 autocast (the default on CUDA) against the same step in fp32, and against a plain eager
  training step at batch 16 (the same number of images through the network as RAM-DSIR at batch 8).

Needs a CUDA GPU; prints ratios and writes JSON (and markdown beside it).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.speed import inputs  # the CPU benchmark's inputs, so both time the same work
from bench.speed.timing import interleaved

from napari_ramseg.core.config import MethodConfig, ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.labels import VESSELS
from napari_ramseg.core.inference.predictor import Predictor, labels_from_probabilities, probabilities_from_logits
from napari_ramseg.core.method.model import RamSegNet
from napari_ramseg.core.data.preprocess import to_model_channels, volume_to_slices_25d


DEVICE = torch.device("cuda")  # --device cpu only checks that this script runs


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed_interleaved(fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 3) -> dict[str, dict[str, float]]:
    """Median and min wall time of each fn in ms (GPU synchronised before and after), rounds A B / B A."""
    res = interleaved(fns, reps, warmup, sync=sync)
    return {k: {"median_ms": round(v["median_s"] * 1e3, 3), "min_ms": round(v["min_s"] * 1e3, 3)} for k, v in res.items()}


def speedup(res: dict[str, dict[str, float]], baseline: str, project: str) -> float:
    return round(res[baseline]["median_ms"] / res[project]["median_ms"], 2)


def baseline_image(net: torch.nn.Module, image: np.ndarray, threshold: float) -> np.ndarray:
    """Eager fp32 on the GPU, labels only: less work than the project path, which also returns the
    probabilities and the entropy map (the CPU benchmark's baseline computes those too)."""
    x = torch.from_numpy(to_model_channels(image, 3))[None].to(DEVICE)
    with torch.no_grad():
        probs = probabilities_from_logits(net(x), VESSELS)[0].cpu()
        return labels_from_probabilities(probs, VESSELS, threshold)


def baseline_volume(net: torch.nn.Module, volume: np.ndarray, threshold: float) -> np.ndarray:
    slices = torch.from_numpy(volume_to_slices_25d(volume))
    with torch.no_grad():
        probs = torch.stack([probabilities_from_logits(net(s[None].to(DEVICE)), VESSELS)[0] for s in slices], dim=1)
        return labels_from_probabilities(probs.cpu(), VESSELS, threshold)


def bench_infer(net: RamSegNet, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    image, source = inputs.fundus_512()
    predictor = Predictor(copy.deepcopy(net), inputs.metadata(PreprocessConfig(size=512)), DEVICE)
    plain = copy.deepcopy(net).eval().to(DEVICE)
    thr = predictor.threshold
    res = timed_interleaved({"baseline_fp32": lambda: baseline_image(plain, image, thr),
                             "project": lambda: predictor.predict_image(image)}, reps)
    base_labels = baseline_image(plain, image, thr)
    labels = np.asarray(predictor.predict_image(image).labels)
    out["infer_2d"] = {"image": source, "autocast": str(predictor.dtype), "fast_path": predictor.fast, **res,
                       "speedup": speedup(res, "baseline_fp32", "project"),
                       "labels_identical_fraction": round(float((labels == base_labels).mean()), 6)}

    folded = predictor.fast_model
    for batch in (1, 8):
        x = torch.from_numpy(to_model_channels(image, 3))[None].repeat(batch, 1, 1, 1).to(DEVICE)
        xcl = x.contiguous(memory_format=torch.channels_last)

        def project_net():
            with torch.inference_mode(), torch.autocast(DEVICE.type, dtype=predictor.dtype or torch.float32,
                                                       enabled=predictor.dtype is not None):
                return folded(xcl)

        def eager_net():
            with torch.no_grad():
                return plain(x)

        r = timed_interleaved({"eager_fp32": eager_net, "project": project_net}, reps)
        out[f"network_only_b{batch}_512"] = {**r, "speedup": speedup(r, "eager_fp32", "project")}

    volume = inputs.synthetic_volume()
    vpred = Predictor(copy.deepcopy(net), inputs.metadata(PreprocessConfig(size=384)), DEVICE)
    res = timed_interleaved({"baseline_fp32_slice_by_slice": lambda: baseline_volume(plain, volume, thr),
                             "project": lambda: vpred.predict_volume(volume)}, max(3, reps // 4), warmup=1)
    vb = baseline_volume(plain, volume, thr)
    vp = np.asarray(vpred.predict_volume(volume).labels)
    out["infer_volume"] = {"volume": "synthetic int16 24x384x384, 2.5D", "slices_per_pass": vpred.batch_for(384, 384),
                           **res, "speedup": speedup(res, "baseline_fp32_slice_by_slice", "project"),
                           "labels_identical_fraction": round(float((vp == vb).mean()), 6)}

    hrf, hrf_source = inputs.hrf_fullres()
    # at native resolution (long side 3504), so it goes through 512 px tiles
    big = Predictor(copy.deepcopy(net), inputs.metadata(PreprocessConfig(size=512, long_side=max(inputs.HRF_SHAPE))), DEVICE)
    big.predict_image(hrf)
    sync()
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    big.predict_image(hrf)
    sync()
    peak = torch.cuda.max_memory_allocated() / 2**20 if DEVICE.type == "cuda" else float("nan")
    out["hrf_fullres"] = {"image": hrf_source, "shape": list(hrf.shape), "seconds": round(time.perf_counter() - t0, 3),
                          "peak_gpu_mb": round(peak, 1)}
    return out


def bench_train(reps: int) -> dict[str, Any]:
    from napari_ramseg.core.training import distributed
    from napari_ramseg.core.method.losses import SegmentationLoss
    from napari_ramseg.core.method.sampling import SourcePool
    from napari_ramseg.core.training.trainer import Trainer

    samples = inputs.train_samples(n_per_domain=4, size=320)
    steps: dict[str, Callable[[], Any]] = {}
    for name, method, batch in (("ram_dsir_b8", MethodConfig(), 8),
                                ("erm_b16", MethodConfig(ram=False, dsir=False, consistency=False), 16)):
        precisions = ("bf16", "fp32", "fp16") if name.startswith("ram_dsir") and DEVICE.type == "cuda" else ("bf16", "fp32")
        for precision in precisions:
            config = TrainConfig(labels=VESSELS, model=ModelConfig(), preprocess=PreprocessConfig(size=256),
                                 method=method, batch=batch, iterations=10**6, val_every=10**6, device=DEVICE.type,
                                 seed=0, num_threads=0)
            trainer = Trainer(config, ["A", "B"], samples)
            if precision == "fp32":
                trainer.dtype = None  # the same step without autocast
            elif precision == "fp16":  # the path for GPUs without bf16: fp16 autocast with loss scaling
                trainer.dtype, trainer.scaler = torch.float16, distributed.grad_scaler(trainer.device)
            steps[f"{name}_{precision}"] = trainer.step

    torch.manual_seed(0)
    plain_net = RamSegNet(ModelConfig(), VESSELS, num_domains=2).train().to(DEVICE)
    opt = torch.optim.Adam(plain_net.parameters(), lr=1e-3)
    loss_fn = SegmentationLoss(VESSELS)
    pool = SourcePool(samples, ["A", "B"], PreprocessConfig(size=256), seed=0)

    def plain_step():
        images, masks, _ = pool.draw_batch(16)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(plain_net(images.to(DEVICE)), masks.to(DEVICE))
        loss.backward()
        opt.step()
        return float(loss.detach())

    steps["plain_eager_fp32_b16"] = plain_step
    res = timed_interleaved(steps, reps, warmup=3)
    t_draw = []
    for _ in range(10):
        t0 = time.perf_counter()
        pool.draw_batch(8)
        pool.draw_batch(8)
        t_draw.append(time.perf_counter() - t0)
    return {"train": {
        "config": "paper U-Net (base 16, depth 5), 256x256 crops, vessels, 2 synthetic domains; RAM-DSIR at batch 8 "
                  "puts 16 images through the network (original + mixed), as does ERM or the plain step at batch 16",
        **res,
        "bf16_speedup_ram_dsir": speedup(res, "ram_dsir_b8_fp32", "ram_dsir_b8_bf16"),
        "bf16_speedup_erm": speedup(res, "erm_b16_fp32", "erm_b16_bf16"),
        "ram_dsir_step_over_plain_b16": round(res["ram_dsir_b8_bf16"]["median_ms"] / res["plain_eager_fp32_b16"]["median_ms"], 2),
        "cpu_batch_draw_ms_16_images": round(statistics.median(t_draw) * 1e3, 2),
        "images_per_s": {k: round((8 if "b8" in k else 16) / (v["median_ms"] / 1e3), 1) for k, v in res.items()},
    }}


def machine() -> dict[str, Any]:
    if DEVICE.type != "cuda":
        return {"gpu": "none (--device cpu: a check that the script runs, not a result)", "gpu_memory_gb": 0,
                "sm_count": 0, "torch": torch.__version__, "cuda": None, "cudnn": None,
                "python": platform.python_version()}
    props = torch.cuda.get_device_properties(0)
    info = {"gpu": props.name, "gpu_memory_gb": round(props.total_memory / 1e9, 1), "sm_count": props.multi_processor_count,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "python": platform.python_version(), "bf16_supported": torch.cuda.is_bf16_supported()}
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def write_markdown(path: Path, r: dict[str, Any]) -> None:
    m = r["machine"]
    lines = ["# GPU speed check", "", f"Command: `{r['command']}`", "",
             f"Machine: {m['gpu']} ({m['gpu_memory_gb']} GB, {m['sm_count']} SMs), driver {m.get('driver', '?')}, "
             f"torch {m['torch']} (CUDA {m['cuda']}, cuDNN {m['cudnn']}), Python {m['python']}. Run {r['date']}.", "",
             "Median wall time per call; speedup = baseline / project (below 1: the project path is slower).", "",
             "| what | baseline (ms) | project (ms) | speedup |", "|---|---|---|---|"]
    for key, base, proj in (("infer_2d", "baseline_fp32", "project"),
                            ("network_only_b1_512", "eager_fp32", "project"),
                            ("network_only_b8_512", "eager_fp32", "project"),
                            ("infer_volume", "baseline_fp32_slice_by_slice", "project")):
        if key in r:
            lines.append(f"| {key} | {r[key][base]['median_ms']} | {r[key][proj]['median_ms']} | {r[key]['speedup']} |")
    t = r.get("train")
    if t:
        for name in ("ram_dsir_b8", "erm_b16"):
            lines.append(f"| train step {name}, fp32 -> bf16 | {t[name + '_fp32']['median_ms']} | "
                         f"{t[name + '_bf16']['median_ms']} | {t['bf16_speedup_' + name.split('_b')[0]]} |")
        if "ram_dsir_b8_fp16" in t:
            lines.append(f"| train step ram_dsir_b8, fp32 -> fp16 + GradScaler | {t['ram_dsir_b8_fp32']['median_ms']} | "
                         f"{t['ram_dsir_b8_fp16']['median_ms']} | "
                         f"{speedup(t, 'ram_dsir_b8_fp32', 'ram_dsir_b8_fp16')} |")
        lines.append(f"| train step: plain eager fp32 b16 -> RAM-DSIR b8 (bf16) | {t['plain_eager_fp32_b16']['median_ms']} | "
                     f"{t['ram_dsir_b8_bf16']['median_ms']} | {speedup(t, 'plain_eager_fp32_b16', 'ram_dsir_b8_bf16')} |")
    if "hrf_fullres" in r:
        h = r["hrf_fullres"]
        lines += ["", f"HRF at full resolution ({h['shape'][1]}x{h['shape'][0]}, tiled): {h['seconds']} s, "
                      f"peak GPU memory {h['peak_gpu_mb']} MB."]
    if r.get("errors"):
        lines += ["", "Errors: " + "; ".join(f"{k}: {v}" for k, v in r["errors"].items())]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--skip", default="", help="comma list: infer,train")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: check the script itself
    args = ap.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/speed/gpu.py needs a CUDA GPU")
    skip = set(filter(None, args.skip.split(",")))
    r: dict[str, Any] = {"command": "python -m bench.speed.gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
                         "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "errors": {}}
    net, source = inputs.model_source()
    r["model"] = source
    for name, fn in (("infer", lambda: bench_infer(net, args.reps)), ("train", lambda: bench_train(max(5, args.reps // 2)))):
        if name in skip:
            continue
        t0 = time.perf_counter()
        try:
            r.update(fn())
        except Exception as exc:  # report and go on: one broken section must not cost the others
            import traceback

            traceback.print_exc()
            r["errors"][name] = f"{type(exc).__name__}: {exc}"
        print(f"[gpu] {name} took {time.perf_counter() - t0:.0f} s", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2) + "\n")
        write_markdown(args.json.with_suffix(".md"), r)
    print(args.json.with_suffix(".md").read_text())
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
