"""What the speed benchmark (bench/speed.py, and bench/gpu.py on a GPU) runs on: the network's weights,
the model metadata, and deterministic inputs (a 512x512 fundus photograph, a 24x384x384 volume, a
full-resolution HRF photograph, two small synthetic training domains)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from napari_ramseg.core.checkpoint import ModelMetadata, load_model
from napari_ramseg.core.config import VESSELS, ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.model import RamSegNet

from speed_timing import log

ROOT = Path(__file__).resolve().parents[1]
HRF_SHAPE = (2336, 3504)


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


def train_samples(n_per_domain=4, size=256):
    """Two synthetic domains ("A", "B") of smooth-noise images with thresholded masks (deterministic)."""
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
