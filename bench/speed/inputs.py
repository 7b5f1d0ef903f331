"""What the speed benchmark (bench/speed/benchmark.py, and bench/speed/gpu.py on a GPU) runs on: the network's weights,
the model metadata, and deterministic inputs (a 512x512 fundus photograph, a 24x384x384 volume, a
full-resolution HRF photograph, two small synthetic training domains)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_ramseg.core.models.checkpoint import ModelMetadata, load_model
from napari_ramseg.core.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.labels import VESSELS
from napari_ramseg.core.method.model import RamSegNet

from bench.speed.timing import log

ROOT = Path(__file__).resolve().parents[2]
HRF_SHAPE = (2336, 3504)


@dataclass(frozen=True)
class Sizes:
    """The size of every case. ``full`` is the benchmark; ``tiny`` runs the same cases at toy sizes (for the
    test that runs them for real): its figures time nothing worth reporting."""

    name: str = "full"
    image: int = 512  # the 2D case and the UI case: a side x side RGB image, the network at side x side
    volume: tuple[int, int] = (24, 384)  # depth, side
    train_side: int = 256  # training images and crops
    hrf: tuple[int, int] = HRF_SHAPE  # the full-resolution photograph
    hrf_tile: int = 512  # tile side (and working size) of the tiled full-resolution case
    hrf_long_side: int = 540  # the bundled model's field of view

    def hrf_preprocess(self, mode: str) -> PreprocessConfig:
        f = self.hrf_tile / 512  # the full sizes' preprocess, scaled
        return {"no_long_side": PreprocessConfig(size=max(16, round(256 * f))),
                "long_side_540": PreprocessConfig(size=max(16, round(128 * f)), long_side=self.hrf_long_side),
                "full_res_tiled": PreprocessConfig(size=self.hrf_tile, long_side=max(self.hrf))}[mode]


SIZES = {"full": Sizes(), "tiny": Sizes("tiny", image=64, volume=(4, 64), train_side=64, hrf=(292, 438),
                                         hrf_tile=64, hrf_long_side=68)}


def model_source() -> tuple[RamSegNet, str]:
    """The trained vessel model if one is around (bundled, then the training output), else random.
    Save it with ``metadata(..., domains_of(net))``: its restoration decoder has one BatchNorm per source
    domain (the bundled model has three), and a model.json listing another number does not load."""
    from napari_ramseg.models import bundled_model_path

    for candidate in (bundled_model_path(), ROOT / "bench" / "work" / "default-vessels"):
        if (candidate / "model.safetensors").is_file() and (candidate / "model.json").is_file():
            try:
                net, meta = load_model(candidate, torch.device("cpu"))
                if meta.config.model == ModelConfig() and meta.config.labels == VESSELS:
                    where = candidate.resolve()
                    return net.eval(), str(where.relative_to(ROOT) if where.is_relative_to(ROOT) else where)
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


def domains_of(net: RamSegNet) -> list[str]:
    """As many source-domain names as the network has domain BatchNorms (the names are the vessel data's
    where they fit; only their number matters to the weights)."""
    known = ["HRF", "STARE", "CHASE_DB1"]
    return [known[i] if i < len(known) else f"domain{i}" for i in range(net.num_domains)]


def metadata(preprocess: PreprocessConfig, domains=("HRF", "STARE")) -> ModelMetadata:
    return ModelMetadata(TrainConfig(labels=VESSELS, model=ModelConfig(), preprocess=preprocess), list(domains))


def fundus_512(side: int = 512) -> tuple[np.ndarray, str]:
    """The sample fundus photograph resized to 1.5 side x side, its centre side x side (512 by default)."""
    from PIL import Image

    path = ROOT / "sample_data" / "hrf_01_h.jpg"
    if path.is_file():
        im = Image.open(path).convert("RGB").resize((side * 3 // 2, side), Image.BILINEAR)
        arr = np.asarray(im)[:, side // 4:side // 4 + side]
        return (np.ascontiguousarray(arr),
                f"sample_data/hrf_01_h.jpg resized to {side * 3 // 2}x{side}, centre {side}x{side}")
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (side, side, 3), dtype=np.uint8), "uniform noise (sample image missing)"


def synthetic_volume(depth=24, size=384) -> np.ndarray:
    """Smooth blobs and texture in int16, like an MRI stack (deterministic)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    vol = gaussian_filter(rng.normal(0, 1, (depth, size, size)), sigma=(1, 6, 6))
    vol = (vol - vol.min()) / (vol.max() - vol.min()) * 1200 + rng.normal(0, 20, vol.shape)
    return vol.astype(np.int16)


def hrf_fullres(shape: tuple[int, int] = HRF_SHAPE) -> tuple[np.ndarray, str]:
    """HRF 01_h at full resolution (3504x2336); another ``shape``: the sample photograph resized to it."""
    from PIL import Image

    real = ROOT.parent / "shared" / "data" / "vessels" / "HRF" / "images" / "01_h.jpg"
    if real.is_file() and tuple(shape) == HRF_SHAPE:
        arr = np.asarray(Image.open(real).convert("RGB"))
        if arr.shape[:2] == HRF_SHAPE:
            return arr, "HRF 01_h.jpg at full resolution (shared data)"
    im = Image.open(ROOT / "sample_data" / "hrf_01_h.jpg").convert("RGB")
    return (np.asarray(im.resize(tuple(shape)[::-1], Image.BICUBIC)),
            f"sample HRF photograph ({im.width}x{im.height}) resized to {shape[1]}x{shape[0]}")


def train_samples(n_per_domain=4, size=256):
    """Two synthetic domains ("A", "B") of smooth-noise images with thresholded masks (deterministic)."""
    from napari_ramseg.core.data.dataset import Sample
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
