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

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import machine as bench_machine  # noqa: E402

from napari_ramseg.core.checkpoint import ModelMetadata, load_model, save_model  # noqa: E402
from napari_ramseg.core.config import VESSELS, ModelConfig, PreprocessConfig, TrainConfig  # noqa: E402
from napari_ramseg.core.infer import (  # noqa: E402
    Predictor,
    entropy_map,
    labels_from_probabilities,
    probabilities_from_logits,
)
from napari_ramseg.core.model import RamSegNet  # noqa: E402
from napari_ramseg.core.preprocess import to_model_channels, volume_to_slices_25d  # noqa: E402

from speed_report import TARGETS, add_notes, verdict, write_markdown  # noqa: E402

HRF_SHAPE = (2336, 3504)
START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------------ setup
def machine() -> dict[str, Any]:
    return bench_machine.describe()


def model_source() -> tuple[RamSegNet, str]:
    """The trained vessel model if one is around (bundled, then the training output), else random."""
    from napari_ramseg.models import bundled_model_path

    for candidate in (bundled_model_path(), ROOT / "bench" / "work" / "default-vessels"):
        if (candidate / "model.safetensors").is_file() and (candidate / "model.json").is_file():
            try:
                net, meta = load_model(candidate, torch.device("cpu"))
                if meta.config.model == ModelConfig() and meta.config.labels == VESSELS:
                    return net.eval(), str(candidate)
            except Exception as exc:  # a half-written model: fall back
                log(f"could not load {candidate}: {exc}")
    torch.manual_seed(0)
    net = RamSegNet(ModelConfig(), VESSELS, num_domains=2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return net.eval(), "random (seed 0, random BatchNorm statistics)"


def metadata(preprocess: PreprocessConfig, domains=("HRF", "STARE")) -> ModelMetadata:
    return ModelMetadata(TrainConfig(labels=VESSELS, model=ModelConfig(), preprocess=preprocess), list(domains))


def fundus_512() -> tuple[np.ndarray, str]:
    from PIL import Image

    path = ROOT / "sample_data" / "hrf_01_h.jpg"
    if path.is_file():
        im = Image.open(path).convert("RGB").resize((768, 512), Image.BILINEAR)
        arr = np.asarray(im)[:, 128:640]
        return np.ascontiguousarray(arr), "sample_data/hrf_01_h.jpg resized to 768x512, centre 512x512"
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), "uniform noise (sample image missing)"


def synthetic_volume(depth=24, size=384) -> np.ndarray:
    """Smooth blobs and texture in int16, like an MRI stack (deterministic)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    vol = gaussian_filter(rng.normal(0, 1, (depth, size, size)), sigma=(1, 6, 6))
    vol = (vol - vol.min()) / (vol.max() - vol.min()) * 1200 + rng.normal(0, 20, vol.shape)
    return vol.astype(np.int16)


def hrf_fullres() -> tuple[np.ndarray, str]:
    from PIL import Image

    real = ROOT.parent / "shared" / "data" / "vessels" / "HRF" / "images" / "01_h.jpg"
    if real.is_file():
        arr = np.asarray(Image.open(real).convert("RGB"))
        if arr.shape[:2] == HRF_SHAPE:
            return arr, "HRF 01_h.jpg at full resolution (shared data)"
    im = Image.open(ROOT / "sample_data" / "hrf_01_h.jpg").convert("RGB")
    return np.asarray(im.resize(HRF_SHAPE[::-1], Image.BICUBIC)), "sample HRF photograph upscaled x4 to 3504x2336"


# -------------------------------------------------------------------------------------- timing
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


# ------------------------------------------------------------------------------------ sections
def roofline(net: RamSegNet) -> dict[str, Any]:
    """FLOPs of one 512x512 forward pass and this CPU's fp32 matmul rate: the floor for any fp32 path."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        copy.deepcopy(net)(torch.zeros(1, 3, 512, 512))
    flops = counter.get_total_flops()
    gflops = sgemm_gflops()
    return {"forward_512_gflop": round(flops / 1e9, 2), "sgemm_fp32_gflops_best": round(gflops, 1),
            "fp32_floor_512_ms": round(flops / (gflops * 1e9) * 1000, 1)}


def sgemm_gflops(n: int = 1536, reps: int = 8) -> float:
    """Best fp32 matmul rate over a few tries: the practical ceiling of any fp32 convolution here."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_2d(net: RamSegNet, quick: bool, compile_variant: bool) -> dict[str, Any]:
    image, source = fundus_512()
    predictor = Predictor(copy.deepcopy(net), metadata(PreprocessConfig(size=512)), "cpu")
    plain = copy.deepcopy(net).eval()
    thr = predictor.threshold
    out: dict[str, Any] = {"image": source, "shape": list(image.shape), "network_input": [512, 512],
                           "fast_path": predictor.fast, "autocast": str(predictor.dtype)}
    reps = 5 if quick else 15
    res = interleaved({"baseline": lambda: baseline_image(plain, image, thr),
                       "project": lambda: predictor.predict_image(image)}, reps)
    out["end_to_end"] = res
    b_labels, b_probs, _ = baseline_image(plain, image, thr)
    p = predictor.predict_image(image)
    out["agreement_vs_baseline"] = agreement(p.labels, b_labels, p.probabilities, b_probs[None] if b_probs.ndim == 2 else b_probs)
    out["foreground_fraction"] = round(float((b_labels > 0).mean()), 4)

    # Where the gain comes from: the network alone, step by step.
    x = torch.from_numpy(to_model_channels(image, 3))[None]
    xcl = x.contiguous(memory_format=torch.channels_last)
    cl_net = copy.deepcopy(net).eval().to(memory_format=torch.channels_last)
    folded = predictor.fast_model
    nets: dict[str, Callable[[], Any]] = {
        "eager_nchw": lambda: plain(x), "channels_last": lambda: cl_net(xcl), "folded_channels_last": lambda: folded(xcl)}
    if compile_variant:
        from napari_ramseg.core.fastpath import CompiledModule

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
        if not quick:  # what bf16 would do here (device.py only enables it on CPUs with native bf16)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                folded(xcl)
                out["bf16_autocast_ms"] = round(min(_timed(lambda: folded(xcl)) for _ in range(2)) * 1000)
    return out


def bench_volume(net: RamSegNet, quick: bool) -> dict[str, Any]:
    volume = synthetic_volume()
    predictor = Predictor(copy.deepcopy(net), metadata(PreprocessConfig(size=384)), "cpu")
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
    return {"volume": "synthetic int16 24x384x384 (smoothed noise), 2.5D", "shape": list(volume.shape),
            "slices_per_pass": predictor.batch_for(384, 384), "end_to_end": res,
            "agreement_vs_baseline": agreement(p.labels, b_labels, p.probabilities, b_probs)}


def _train_samples(n_per_domain=4, size=256):
    from napari_ramseg.core.data import Sample
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    out = {}
    for d in ("A", "B"):
        out[d] = []
        for i in range(n_per_domain):
            base = gaussian_filter(rng.normal(0, 1, (size, size)), 4)
            mask = (base > base.std()).astype(np.uint8)
            image = np.stack([base * (0.6 + 0.3 * c) for c in range(3)])
            image = np.clip(image / (np.abs(image).max() + 1e-6), -1, 1).astype(np.float32)
            out[d].append(Sample(image, mask, d, f"{d}{i}"))
    return out


def bench_train(quick: bool) -> dict[str, Any]:
    from napari_ramseg.core.fastpath import use_channels_last
    from napari_ramseg.core.losses import SegmentationLoss
    from napari_ramseg.core.ram import amplitude_mixup, sample_lambda
    from napari_ramseg.core.sampling import SourcePool
    from napari_ramseg.core.train import Trainer

    samples = _train_samples()
    config = TrainConfig(labels=VESSELS, model=ModelConfig(), preprocess=PreprocessConfig(size=256), batch=8,
                         iterations=10**6, val_every=10**6, device="cpu", seed=0)
    trainer = Trainer(config, ["A", "B"], samples)  # as the engine trains: channels_last, RAM + DSIR + consistency
    plain_loss = SegmentationLoss(VESSELS)

    def plain(channels_last: bool) -> Callable[[], Any]:
        """The plain baseline step: eager PyTorch, one segmentation loss, 16 images."""
        torch.manual_seed(0)
        net = RamSegNet(ModelConfig(), VESSELS, num_domains=2).train()
        if channels_last:
            use_channels_last(net)
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        pool = SourcePool(samples, ["A", "B"], config.preprocess, seed=0)

        def step(batch=16):
            images, masks, _ = pool.draw_batch(batch)
            opt.zero_grad(set_to_none=True)
            loss = plain_loss(net(images), masks)
            loss.backward()
            opt.step()
            return float(loss.detach())
        return step

    def draw(tr):
        images, masks, domains = tr.pool.draw_batch(config.batch)
        partners = tr.pool.draw_partners(domains)
        lam = sample_lambda(len(images), config.method.lam_mode, tr.lambda_generator)
        return images, masks, domains, amplitude_mixup(images, partners, lam, config.method.window_ratio)

    # plain_b16 (NCHW) is the plain-PyTorch baseline; plain_b16_channels_last isolates what the method
    # itself adds at equal memory layout
    fns: dict[str, Callable[[], Any]] = {"plain_b16": plain(False), "ramdsir_b8": trainer.step}
    if not quick:
        fns["plain_b16_channels_last"] = plain(True)
    res = interleaved(fns, 2 if quick else 5, warmup=1)
    data = [_timed(lambda: draw(trainer)) for _ in range(5)]
    out: dict[str, Any] = {
        "config": "paper U-Net (base 16, depth 5), 256x256 crops, vessels (1 sigmoid head), 2 synthetic domains, "
                  "RAM + DSIR + consistency; fp32 (no native bf16 here); the Trainer runs channels_last",
        "steps": res,
        "data_draw_s_median": round(statistics.median(data), 4),
        "data_share_of_step": round(statistics.median(data) / res["ramdsir_b8"]["median_s"], 4),
        # training images per second; RAM-DSIR puts each through the network twice (original + mixed)
        "images_per_s": {k: round((16 if k.startswith("plain") else 8) / v["median_s"], 2) for k, v in res.items()},
        "network_images_per_s": {k: round(16 / v["median_s"], 2) for k, v in res.items()},
    }
    return out


# ------------------------------------------------------------------------------ subprocesses
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


def alloc_child(model_dir: str) -> None:
    """Runs in a fresh interpreter (RAMSEG_MALLOC_TUNE set by the parent): project 2D calls, wall and sys."""
    net, _ = load_model(model_dir, torch.device("cpu"))
    predictor = Predictor(net, metadata(PreprocessConfig(size=512)), "cpu")
    image, _ = fundus_512()
    predictor.predict_image(image)
    t0, times = os.times(), []
    for _ in range(8):
        times.append(_timed(lambda: predictor.predict_image(image)))
    t1 = os.times()
    print(json.dumps({"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
                      "user_s": round(t1.user - t0.user, 2), "sys_s": round(t1.system - t0.system, 2)}))


def bench_allocator(model_dir: Path) -> dict[str, Any]:
    """The allocator setting is process-wide (the in-process baseline gets it too), so time it apart."""
    out: dict[str, Any] = {}
    for rnd in range(2):
        for setting in ("0", "1"):
            env = {**os.environ, "RAMSEG_MALLOC_TUNE": setting}
            proc = subprocess.run([sys.executable, __file__, "--_alloc-child", str(model_dir)], env=env,
                                  capture_output=True, text=True, timeout=600)
            key = "tuned" if setting == "1" else "glibc_default"
            if proc.returncode == 0:
                out.setdefault(key, []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def bench_hrf(model_dir: Path, modes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in modes:
        log(f"HRF full resolution, {mode} (fresh process)")
        proc = subprocess.run([sys.executable, __file__, "--_hrf-child", mode, str(model_dir)],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            out[mode] = {"error": proc.stderr[-2000:]}
            continue
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def ui_child(model_dir: str, kinds: str) -> None:
    """Runs under Xvfb: the longest gap between 10 ms QTimer ticks while SegmentWidget segments."""
    os.environ.pop("RAMSEG_SYNC_WORKERS", None)
    import napari
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_ramseg.widgets.segment import SegmentWidget

    viewer = napari.Viewer(show=True)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="segment")
    widget.set_model(model_dir)
    widget.probabilities_box.setChecked(True)
    widget.uncertainty_box.setChecked(True)
    app = QApplication.instance()
    results = []

    def settle(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)

    image2d, _ = fundus_512()
    cases = []
    for kind in kinds.split(","):
        if kind == "2d":
            cases += [("2d_512_rgb_cold", image2d, True), ("2d_512_rgb_warm", image2d, True)]
        elif kind == "volume":
            cases += [("volume_24x384x384", synthetic_volume(), False)]
    for name, data, rgb in cases:
        layer_name = name.split("_cold")[0].split("_warm")[0]
        if layer_name not in viewer.layers:
            viewer.add_image(data, rgb=rgb, name=layer_name)
        widget.image_combo.set_layer(viewer.layers[layer_name])
        settle(0.5)
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        loop = QEventLoop()
        timer.start()
        settle(0.2)
        pandas_before = "pandas" in sys.modules
        t0 = time.perf_counter()
        worker = widget.segment(run_sync=False)
        if worker is None:
            results.append({"case": name, "error": "segment() refused the input"})
            continue
        done: dict[str, float] = {}
        worker.returned.connect(lambda *_: done.setdefault("returned", time.perf_counter()))
        worker.finished.connect(lambda: (done.setdefault("t", time.perf_counter()), QTimer.singleShot(400, loop.quit)))
        QTimer.singleShot(600_000, loop.quit)
        loop.exec_()
        timer.stop()
        kept = [t for t in ticks if t >= t0 - 0.05]
        gaps = np.diff(kept) * 1000
        worst = int(np.argmax(gaps)) if len(gaps) else 0
        # When the worst stall happened relative to the job: during the computation (worker thread)
        # or after it returned (the result is shown: layers added and drawn on the main thread).
        where = None
        if len(gaps) and "returned" in done:
            where = "after the result arrived (main thread shows layers)" if kept[worst + 1] > done["returned"] else \
                "while the worker computed"
        results.append({"case": name, "seconds": round(done.get("t", time.perf_counter()) - t0, 2),
                        "worst_gap_ends_at_s": round(kept[worst + 1] - t0, 3) if len(gaps) else None,
                        "returned_at_s": round(done["returned"] - t0, 3) if "returned" in done else None,
                        "worst_gap_when": where,
                        "max_gap_while_computing_ms": round(float(max((g for g, t in zip(gaps, kept[1:])
                                                                         if t <= done.get("returned", 1e18)), default=0)), 1),
                        "ticks": len(gaps), "max_gap_ms": round(float(gaps.max()), 1) if len(gaps) else None,
                        "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1) if len(gaps) else None,
                        "median_gap_ms": round(float(np.median(gaps)), 1) if len(gaps) else None,
                        "outcome": widget.runner.last_outcome,
                        "pandas_first_imported_by_this_job": (not pandas_before) and "pandas" in sys.modules,
                        "segmentation_layer": f"{layer_name} segmentation" in viewer.layers})
    print(json.dumps({"widget": "napari_ramseg.widgets.segment.SegmentWidget.segment()", "timer_interval_ms": 10,
                      "cases": results}))
    viewer.close()


def bench_ui(model_dir: Path, kinds: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_ui-child", str(model_dir), kinds]
    if not os.environ.get("DISPLAY"):
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-3000:]}
    return json.loads(lines[-1])


def profile_2d(net: RamSegNet) -> dict[str, Any]:
    """Where the project's 2D time goes: torch profiler, top operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    image, _ = fundus_512()
    predictor = Predictor(copy.deepcopy(net), metadata(PreprocessConfig(size=512)), "cpu")
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
    return {"wall_ms_profiled": round(wall * 1000, 1), "convolution_share": round(conv, 3), "top_ops": top}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats; < 3 minutes on a 2-core CPU")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--md", type=Path, help="markdown report (default: the JSON path with .md)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: 2d,volume,train,allocator,hrf,ui,profile")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the fast path (slow to compile)")
    ap.add_argument("--_hrf-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_ui-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_alloc-child", nargs=1, help=argparse.SUPPRESS)
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
                         "machine": machine(), "load_before": loadavg(), "notes": []}
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
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=1) + "\n", encoding="utf-8")
        write_markdown(args.md or args.json.with_suffix(".md"), r)
    elif args.md:
        write_markdown(args.md, r)


if __name__ == "__main__":
    main()
