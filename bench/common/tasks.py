"""Data preparation for the generalization benchmark (bench/generalization/benchmark.py).

Everything here is benchmark-specific: it turns the raw research folders of ``../shared/data`` into
arrays at a common scale, cached as ``.npz`` under ``bench/work/`` so that repeated jobs never decode
the 3504x2336 HRF JPEGs again. Nothing here is shipped with the package.

vessels (HRF, STARE, CHASE_DB1)
    All three domains are brought to one field-of-view (FOV) scale: crop each image to the bounding box of
    its FOV and resize so that the longer side of that box is ``long_side`` pixels (540 by default,
    the scale the issue's reference run used). HRF and CHASE_DB1 ship FOV masks; for STARE the FOV is computed:
    red channel (lightly smoothed) > 30, opened, largest component, holes filled. Images are resized
    with PIL's antialiased Lanczos filter; the vessel mask and the FOV with an area-weighted
    (antialiased bilinear) resize of the binary mask, thresholded at 0.5. Scoring is at this scale and
    inside the FOV (predictions outside it are discarded).

optic_disc (Drishti-GS, DRIONS-DB)
    A disc-centred region of interest at a matching scale, found from the ground-truth disc as the
    DoFE packaging did: ROI side = ``ratio`` x disc diameter, centred on the disc centroid, padded with
    black where it leaves the image, then resized to ``roi_size``. The disc diameter is the larger
    extent of the disc's bounding box; ``ratio`` is the median over Drishti-GS of (shorter side of the
    crop as released) / (its disc diameter), i.e. the scale at which Drishti-GS was packaged (about
    1.35). The same rule is applied to both domains. Masks: 0 background, 1 disc rim, 2 cup (DRIONS-DB
    has only 0/1).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from napari_ramseg.core.inference.postprocess import keep_largest_component
from napari_ramseg.io import atomic_write

PREP_VERSION = 1  # bump when the preparation changes, so stale caches are not reused
STARE_FOV_THRESHOLD = 30
VESSEL_DOMAINS = ("HRF", "STARE", "CHASE_DB1")


@dataclass
class Prepared:
    """One prepared case: ``image`` (H, W, 3) uint8, ``mask`` (H, W) uint8, ``fov`` (H, W) bool or None."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    fov: np.ndarray | None = None


# ------------------------------------------------------------------------------------------ helpers


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_index(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:
        a = a[..., 0]
    a = a.astype(np.uint8)
    if a.max() == 255 and set(np.unique(a).tolist()) <= {0, 255}:
        a = (a == 255).astype(np.uint8)
    return a


def resize_rgb(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> ``shape`` (h, w), antialiased Lanczos."""
    if image.shape[:2] == tuple(shape):
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.LANCZOS))


def resize_binary(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Binary (H, W) -> ``shape``: area-weighted (antialiased bilinear) resize, thresholded at 0.5."""
    if mask.shape == tuple(shape):
        return mask.astype(bool)
    f = Image.fromarray(mask.astype(np.float32), mode="F").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(f) >= 0.5


def resize_nested(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Class-index mask of nested structures (value k means inside structures 1..k) -> ``shape``."""
    out = np.zeros(shape, dtype=np.uint8)
    parent = np.ones(shape, dtype=bool)
    for k in range(1, int(mask.max()) + 1):
        inside = resize_binary(mask >= k, shape) & parent
        out[inside] = k
        parent = inside
    return out


def long_side_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom/right exclusive, of the non-zero pixels."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        raise ValueError("empty mask has no bounding box")
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


# ------------------------------------------------------------------------------------------ vessels


def threshold_fov(image: np.ndarray, threshold: float = STARE_FOV_THRESHOLD) -> np.ndarray:
    """FOV of a fundus photograph without a mask: red channel (smoothed) > threshold, opened,
    largest component, holes filled."""
    red = ndimage.gaussian_filter(image[..., 0].astype(np.float32), 1.5)
    mask = ndimage.binary_opening(red > threshold, iterations=2)
    if not mask.any():
        return np.ones(image.shape[:2], dtype=bool)
    return ndimage.binary_fill_holes(keep_largest_component(mask, connectivity=1))


def fov_crop(image: np.ndarray, mask: np.ndarray, fov: np.ndarray, long_side: int) -> Prepared:
    """Crop to the FOV's bounding box and resize so that its longer side is ``long_side``."""
    t, b, l, r = bbox(fov)
    image, mask, fov = image[t:b, l:r], mask[t:b, l:r], fov[t:b, l:r]
    shape = long_side_shape(b - t, r - l, long_side)
    fov_small = resize_binary(fov, shape)
    mask_small = (resize_binary(mask > 0, shape) & fov_small).astype(np.uint8)
    return Prepared("", resize_rgb(image, shape), mask_small, fov_small)


def domain_cases(folder: Path):
    """(stem, RGB image, index mask) of every case of a domain folder (images/ + labels/<stem>.png)."""
    for img_path in sorted((folder / "images").iterdir()):
        if img_path.name.startswith("."):
            continue
        stem = img_path.name.split(".")[0]
        yield stem, read_rgb(img_path), read_index(folder / "labels" / f"{stem}.png")


def _prepare_vessel_domain(root: Path, domain: str, long_side: int) -> list[Prepared]:
    folder = root / domain
    out = []
    for stem, image, mask in domain_cases(folder):
        fov_path = folder / "fov" / f"{stem}.png"
        fov = read_index(fov_path) > 0 if fov_path.exists() else threshold_fov(image)
        p = fov_crop(image, mask, fov, long_side)
        p.name = stem
        out.append(p)
    return out


# --------------------------------------------------------------------------------------- optic disc


def disc_diameter(mask: np.ndarray) -> float:
    """Larger extent of the disc's (mask >= 1) bounding box, in pixels."""
    t, b, l, r = bbox(mask >= 1)
    return float(max(b - t, r - l))


def disc_roi(image: np.ndarray, mask: np.ndarray, ratio: float, roi_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Disc-centred square ROI of side ``ratio`` x disc diameter, padded black, resized to ``roi_size``."""
    disc = mask >= 1
    cy, cx = ndimage.center_of_mass(disc)
    side = max(8, int(round(ratio * disc_diameter(mask))))
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    h, w = mask.shape
    pad = max(0, -top, -left, top + side - h, left + side - w)
    if pad:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
        mask = np.pad(mask, pad)
        top, left = top + pad, left + pad
    img = image[top:top + side, left:left + side]
    msk = mask[top:top + side, left:left + side]
    return resize_rgb(img, (roi_size, roi_size)), resize_nested(msk, (roi_size, roi_size))


def drishti_ratio(root: Path) -> float:
    """Median over Drishti-GS of (shorter side of the released crop) / (disc diameter)."""
    ratios = []
    for p in sorted((root / "Drishti-GS" / "labels").glob("*.png")):
        m = read_index(p)
        ratios.append(min(m.shape) / disc_diameter(m))
    return float(np.median(ratios))


def _prepare_disc_domain(root: Path, domain: str, ratio: float, roi_size: int) -> list[Prepared]:
    out = []
    for stem, image, mask in domain_cases(root / domain):
        img, msk = disc_roi(image, mask, ratio, roi_size)
        out.append(Prepared(stem, img, msk, None))
    return out


# -------------------------------------------------------------------------------------------- cache


def _atomic_savez(path: Path, **arrays) -> None:
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


def _save(path: Path, cases: list[Prepared], info: dict) -> None:
    arrays = {"_info": np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)}
    for i, c in enumerate(cases):
        arrays[f"{i}_image"] = c.image
        arrays[f"{i}_mask"] = c.mask
        if c.fov is not None:
            arrays[f"{i}_fov"] = c.fov
    arrays["_names"] = np.array([c.name for c in cases])
    _atomic_savez(path, **arrays)


def _load(path: Path) -> tuple[list[Prepared], dict]:
    with np.load(path) as z:
        info = json.loads(bytes(z["_info"]).decode())
        names = [str(n) for n in z["_names"]]
        cases = [Prepared(n, z[f"{i}_image"], z[f"{i}_mask"], z[f"{i}_fov"] if f"{i}_fov" in z else None)
                 for i, n in enumerate(names)]
    return cases, info


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps([PREP_VERSION, *parts]).encode()).hexdigest()[:10]


def synthetic_domains(n: int = 6, shape: tuple[int, int] = (96, 128), seed: int = 0) -> dict[str, list[Prepared]]:
    """Three tiny vessel-like domains (for tests): dark lines on a disc-shaped FOV, each domain its own tint."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (min(h, w) / 2 - 2) ** 2
    out: dict[str, list[Prepared]] = {}
    for domain, tint in (("SynA", (200, 90, 40)), ("SynB", (120, 160, 60)), ("SynC", (90, 60, 170))):
        cases = []
        for i in range(n):
            mask = np.zeros(shape, dtype=np.uint8)
            for _ in range(4):
                y0, x0, y1, x1 = rng.integers(0, [h, w, h, w])
                t = np.linspace(0, 1, 200)
                mask[np.round(y0 + t * (y1 - y0)).astype(int), np.round(x0 + t * (x1 - x0)).astype(int)] = 1
            mask = (ndimage.binary_dilation(mask, iterations=1) & fov).astype(np.uint8)
            image = np.empty((h, w, 3), dtype=np.float32)
            image[:] = tint
            image *= 1 - 0.5 * mask[..., None]
            image += rng.normal(0, 8, image.shape)
            image[~fov] = 0
            cases.append(Prepared(f"{domain.lower()}_{i:02d}", np.clip(image, 0, 255).astype(np.uint8), mask, fov))
        out[domain] = cases
    return out


def prepare_task(task: str, data_root: Path, cache_dir: Path, *, long_side: int = 540,
                 roi_size: int = 256) -> tuple[dict[str, list[Prepared]], dict]:
    """``({domain: [Prepared]}, info)`` for ``vessels`` or ``optic_disc``, from the cache when present."""
    data_root = Path(data_root)
    if task == "synthetic":
        return synthetic_domains(), {"task": task, "note": "generated, for tests"}
    if task == "vessels":
        root = data_root / "vessels"
        # CHASE_DB1 arrived later: an older copy of the data without it still runs the two-domain rows.
        domains = [d for d in VESSEL_DOMAINS if (root / d).is_dir()]
        params = {"long_side": long_side}
    elif task == "optic_disc":
        root, domains = data_root / "fundus", ["Drishti-GS", "DRIONS-DB"]
        params = {"roi_size": roi_size}
    else:
        raise ValueError(f"no preparation for task {task!r}")
    out: dict[str, list[Prepared]] = {}
    info: dict = {"task": task, **params}
    ratio = None
    for domain in domains:
        path = Path(cache_dir) / f"{task}_{domain}_{_key(task, domain, params)}.npz"
        if path.exists():
            cases, dinfo = _load(path)
        else:
            if task == "vessels":
                cases = _prepare_vessel_domain(root, domain, long_side)
                dinfo = {"fov": "fov/ masks" if (root / domain / "fov").is_dir()
                         else f"red channel > {STARE_FOV_THRESHOLD}, largest component"}
            else:
                ratio = drishti_ratio(root) if ratio is None else ratio
                cases = _prepare_disc_domain(root, domain, ratio, roi_size)
                dinfo = {"roi_ratio": ratio}
            dinfo["shapes"] = sorted({tuple(c.mask.shape) for c in cases})
            _save(path, cases, dinfo)
        out[domain] = cases
        info[domain] = {"cases": len(cases), **dinfo, "cache": str(path)}
    return out, info
