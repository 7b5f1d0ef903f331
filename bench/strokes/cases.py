"""The cases of the strokes benchmark (bench/strokes/benchmark.py): each leave-one-camera-out direction's model and
unseen images, predicted once at the model's working scale and cached under ``bench/work/strokes/cache``.

Everything the simulated clinician does happens at the working scale (the vessels' long side 768 px,
the disc ROIs' 256 px), where the network's probabilities live: the image, the expert's mask (nearest
neighbour) and the field of view are brought there once. ``--features`` adds, per case, what the head
refinement looks at (``core.review.refine_head.scan_features``: the network's last decoder features and its
input), next to the case as ``<case>.features.npz``.

Directions: the three leave-one-camera-out vessel ones; the cup on the bundled optic-disc model's two
REFUGE cameras (seen: both were among its sources); and the optic disc's leave-one-camera-out models
(``bench/work/runs/disc_to_<target>``, 6000 iterations of the shipped recipe): DRIONS-DB + REFUGE ->
Drishti-GS (cup and disc rows) and Drishti-GS + REFUGE -> DRIONS-DB (disc only: DRIONS-DB has no cup).
The disc cases are the target's ground-truth ROIs (the ``_r0`` crops, 256 px), each predicted whole by
the model as a crop (``Predictor.predict_image``), at its ROI size.

    OMP_NUM_THREADS=1 nice -n 10 python -m bench.strokes.cases --tasks vessels,cup,disc --images 4 \
        --disc-images 6 --features
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
WORK = REPO / "bench" / "work"
CACHE = WORK / "strokes" / "cache"


@dataclass(frozen=True)
class Direction:
    """One leave-one-camera-out direction: sources -> target, its model run folder and its data."""

    task: str  # "vessels", "cup" (the bundled model on seen cameras) or "disc" (leave-one-camera-out disc models)
    name: str  # "<sources>-<target>"
    model: Path
    images: Path  # the target domain's images/ folder


def _vessel_model(name: str) -> Path:
    """The direction's 768 px RAM-DSIR model (bench/generalization.py's run folders)."""
    import json

    for folder in sorted((WORK / "generalization" / "models").glob(f"vessels__{name}__ram_dsir__s0__*")):
        if json.loads((folder / "model.json").read_text())["config"]["preprocess"].get("long_side") == 768:
            return folder
    raise SystemExit(f"no 768 px model for {name} under bench/work/generalization/models")


VESSEL_NAMES = ("HRF+STARE-CHASE_DB1", "STARE+CHASE_DB1-HRF", "HRF+CHASE_DB1-STARE")
# the optic disc's leave-one-camera-out directions: name -> (run folder, target domain)
DISC_DIRECTIONS = {"DRIONS-DB+REFUGE-Drishti-GS": ("disc_to_Drishti-GS", "Drishti-GS"),
                   "Drishti-GS+REFUGE-DRIONS-DB": ("disc_to_DRIONS-DB", "DRIONS-DB")}


def directions(tasks: tuple[str, ...] = ("vessels",)) -> list[Direction]:
    out = []
    if "vessels" in tasks:
        for name in VESSEL_NAMES:
            target = name.split("-")[-1]
            out.append(Direction("vessels", name, _vessel_model(name), DATA / "vessels" / target / "images"))
    if "cup" in tasks:  # the bundled model: both REFUGE cameras were among its sources (seen; see README)
        for domain in ("REFUGE-val", "REFUGE-train"):
            out.append(Direction("cup", f"bundled-{domain}", REPO / "napari_ramseg" / "bundled_models" / "optic-disc",
                                 WORK / "optic_disc" / "domains" / domain / "images"))
    if "disc" in tasks:  # never saw the target camera (bench/optic_disc_data.py's SETS)
        for name, (run, target) in DISC_DIRECTIONS.items():
            images = WORK / "optic_disc" / "domains" / target / "images"
            out.append(Direction("disc", name, WORK / "runs" / run, images))
    return out


def pick_images(direction: Direction, count: int) -> list[Path]:
    """``count`` images spread evenly over the sorted folder (for the disc ROIs: the r0 crops only)."""
    files = sorted(p for p in direction.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif"))
    if direction.task in ("cup", "disc"):
        files = [p for p in files if p.stem.endswith("_r0")]
    step = max(1, len(files) // count)
    return files[::step][:count]


def _label_path(image: Path) -> Path:
    return image.parent.parent / "labels" / f"{image.stem}.png"


def _fov_path(image: Path) -> Path | None:
    folder = image.parent.parent / "fov"
    found = sorted(folder.glob(f"{image.stem}*")) if folder.is_dir() else []
    return found[0] if found else None


def cache_path(direction: Direction, image: Path) -> Path:
    return CACHE / direction.name / f"{image.stem}.npz"


def predict_case(direction: Direction, image_path: Path) -> Path:
    """The case at the working scale: image (uint8), expert mask, field of view, the network's
    probabilities and its mask, written once to the cache."""
    import torch
    from PIL import Image

    from napari_ramseg.core.data.geometry import working_shape
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.io import read_image, read_mask

    torch.set_num_threads(1)
    out = cache_path(direction, image_path)
    if out.exists():
        return out
    predictor = Predictor.from_path(direction.model, device="cpu", precision="fp32")
    array = np.asarray(read_image(image_path).array)
    h, w = array.shape[:2]
    if predictor.preprocess.long_side is not None:  # photographs: the field-of-view scale; ROIs stay as cut
        h, w = working_shape(h, w, predictor.preprocess)
    image = np.asarray(Image.fromarray(array[..., :3].astype(np.uint8)).resize((w, h), Image.BILINEAR))
    gt = np.asarray(Image.fromarray(read_mask(_label_path(image_path)).astype(np.uint8)).resize((w, h), Image.NEAREST))
    fov_file = _fov_path(image_path)
    fov = (np.ones((h, w), bool) if fov_file is None else
           np.asarray(Image.fromarray((read_mask(fov_file) > 0).astype(np.uint8)).resize((w, h), Image.NEAREST)) > 0)
    prediction = predictor.predict_image(image)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, image=image, gt=gt, fov=fov, labels=prediction.labels,
                        probabilities=prediction.probabilities.astype(np.float16),
                        threshold=np.float32(predictor.threshold), kind=predictor.labels.kind,
                        names=np.array(predictor.labels.names))
    tmp.rename(out)
    return out


def features_path(case: Path) -> Path:
    return case.with_name(f"{case.stem}.features.npz")


def features_case(direction: Direction, image_path: Path) -> Path:
    """The head refinement's features of a cached case (``core.review.refine_head.scan_features``, the code path
    the Correct dock and ``ramseg refine`` take), on the case's working-scale image, written once."""
    import torch

    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.core.review.refine_head import scan_features
    from napari_ramseg.io import ImageData

    torch.set_num_threads(1)
    case = predict_case(direction, image_path)
    out = features_path(case)
    if out.exists():
        return out
    predictor = Predictor.from_path(direction.model, device="cpu", precision="fp32")
    with np.load(case) as data:
        image = data["image"]
    features = scan_features(predictor, ImageData(array=image, axes="YXC"), {})
    tmp = out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, features=features.map(None).astype(np.float16), box=np.array(features.box, np.float64))
    tmp.rename(out)
    return out


def load_features(case: Path):
    """The cached ``ScanFeatures`` of a case (``features_case``)."""
    from napari_ramseg.core.review.refine_head import ScanFeatures

    with np.load(features_path(case)) as data:
        return ScanFeatures(tuple(float(v) for v in data["box"]), {None: data["features"].astype(np.float32)})


def load_case(path: Path) -> dict:
    with np.load(path) as data:
        case = {key: data[key] for key in data.files}
    case["probabilities"] = case["probabilities"].astype(np.float32)
    return case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="vessels")
    parser.add_argument("--images", type=int, default=4, help="images per direction")
    parser.add_argument("--disc-images", type=int, default=6, help="ROIs per leave-one-camera-out disc direction")
    parser.add_argument("--features", action="store_true", help="also cache the head refinement's features")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args(argv)
    jobs = [(d, p) for d in directions(tuple(args.tasks.split(",")))
            for p in pick_images(d, args.disc_images if d.task == "disc" else args.images)]
    with ProcessPoolExecutor(args.workers) as pool:
        for path in pool.map(features_case if args.features else predict_case, *zip(*jobs)):
            print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
