"""Plain helpers the tests (and bench scripts) import: ``from helpers import make_synthetic_domains``.

Fixtures live in ``conftest.py``, which pytest loads itself; a test never imports ``conftest``.
"""

from __future__ import annotations

from pathlib import Path


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
