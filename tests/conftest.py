"""Shared fixtures. The real data live outside the repository, in ``../shared/data``."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real evaluation data folder; tests using it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


def make_synthetic_domains(root: Path, domains=("siteA", "siteB"), cases: int = 4, size: int = 48,
                           seed: int = 0) -> Path:
    """A tiny domain-folder dataset: bright discs on a textured background, each domain its own "style"."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for d, domain in enumerate(domains):
        (root / domain / "images").mkdir(parents=True, exist_ok=True)
        (root / domain / "labels").mkdir(parents=True, exist_ok=True)
        tint = np.array([1.0, 0.6 + 0.3 * d, 0.4 + 0.5 * d])
        for i in range(cases):
            cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [int(rng.integers(size // 8, size // 4))]
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
            base = 60 + 120 * mask + rng.normal(0, 15, (size, size))
            image = np.clip(base[..., None] * tint, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / domain / "images" / f"case{i}.png")
            Image.fromarray(mask).save(root / domain / "labels" / f"case{i}.png")
    return root


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """Two synthetic source domains of 4 cases each, 48x48 RGB with a binary mask."""
    return make_synthetic_domains(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, synthetic_data) -> Path:
    """A run folder with a tiny RAM-DSIR model (base width 4) trained for 3 steps on synthetic data."""
    from napari_ramseg.core.train_job import TrainRequest, run_training

    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_training(TrainRequest(data=synthetic_data, out=out, iterations=3, size=32, batch=4, base_width=4,
                              labels=["blob"], device="cpu", val_every=3))
    return out
