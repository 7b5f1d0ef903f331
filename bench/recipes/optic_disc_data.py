"""Training folders for the optic-disc model (``bench/recipes/shipped.py``), at the ROI scale.

Every case becomes disc-centred ROIs as the product's stage two sees them (``core/tasks/disc/roi.py``):
the ground-truth ROI (``DiscConfig.roi_ratio`` x disc diameter, the DoFE/Drishti-GS packaging scale)
plus ``jitter`` copies whose centre moves by up to ``shift`` disc diameters and whose side ratio is
drawn from ``ratio_range``, so the model is used to the small errors of its own locator. Each ROI is
resized to 256 px and written as a ``domains``-layout folder under ``bench/work/optic_disc/`` (never
shipped: the README of the data forbids it). Masks: 0 background, 1 disc rim, 2 cup.

Drishti-GS is split once by case number: numbers divisible by 4 (25 cases) are held out for the
vCDR benchmark and never trained on. Whole photographs (DRIONS-DB) also give ``negatives`` ROIs away
from the disc, with empty masks. The DoFE samples of REFUGE (Domain3, Domain4: two ROIs each)
are extra cup-annotated source domains; Domain1 (Drishti-GS in DoFE packaging) is left out so that
held-out Drishti-GS cases cannot leak in through it.

    python -m bench.recipes.optic_disc_data [--data ../shared/data] [--out bench/work/optic_disc]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common.tasks import domain_cases, read_index, read_rgb
from napari_ramseg.core.config import DiscConfig, DiscRoiSampling
from napari_ramseg.core.labels import OPTIC_DISC_CUP
from napari_ramseg.core.tasks.disc.roi import negative_rois, training_rois
from napari_ramseg.core.data.layouts import get as get_layout
from napari_ramseg.files import atomic_write
from napari_ramseg.io import write_labels

WHOLE_PHOTOGRAPHS = ("DRIONS-DB",)  # domains whose images show the whole fundus: negatives come from them
HELD_OUT_EVERY = 4  # Drishti-GS cases whose number is divisible by this are the held-out test set
SETS = {  # training set -> its source domains (the target is the domain left out)
    "drishti_to_drions": ("Drishti-GS", "REFUGE-train", "REFUGE-val"),
    "drions_to_drishti": ("DRIONS-DB", "REFUGE-train", "REFUGE-val"),
    "bundled": ("Drishti-GS", "DRIONS-DB", "REFUGE-train", "REFUGE-val"),
}


def held_out(stem: str) -> bool:
    """Drishti-GS held-out test case (``drishtiGS_004``, ``_008``, ...)."""
    return int(stem.rsplit("_", 1)[-1]) % HELD_OUT_EVERY == 0


def write_rgb(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"), suffix=".png")


def dofe_cases(root: Path, domain: str):
    layout = get_layout("dofe")
    for split in ("train", "test"):
        for img in sorted((root / domain / split / "ROIs" / "image").glob("*.png")):
            raw = read_index(root / domain / split / "ROIs" / "mask" / img.name)
            yield f"{split}_{img.stem}", read_rgb(img), layout.convert_mask(raw, OPTIC_DISC_CUP)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "work" / "optic_disc")
    ap.add_argument("--jitter", type=int, default=DiscRoiSampling.jitter,
                    help="jittered ROIs per case besides the ground-truth one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--negatives", type=int, default=DiscRoiSampling.negatives,
                    help="ROIs without the disc per whole photograph (DRIONS-DB), empty masks")
    args = ap.parse_args(argv)
    cfg, sampling = DiscConfig(), DiscRoiSampling()
    rng = np.random.default_rng(args.seed)
    sources = {
        "Drishti-GS": ((s, i, m) for s, i, m in domain_cases(args.data / "fundus" / "Drishti-GS") if not held_out(s)),
        "DRIONS-DB": domain_cases(args.data / "fundus" / "DRIONS-DB"),
        "REFUGE-train": dofe_cases(args.data / "fundus_dofe_layout", "Domain3"),
        "REFUGE-val": dofe_cases(args.data / "fundus_dofe_layout", "Domain4"),
    }
    domains_dir = args.out / "domains"
    for domain, cases in sources.items():
        # two ROIs per DoFE domain: more jittered copies, so they are not the same two pictures all run long
        jitter = args.jitter if domain in ("Drishti-GS", "DRIONS-DB") else 8 * args.jitter
        n = 0
        for stem, image, mask in cases:
            pairs = training_rois(image, mask, rng, cfg.roi_ratio, sampling, jitter=jitter)
            if domain in WHOLE_PHOTOGRAPHS:
                pairs += negative_rois(image, mask, rng, args.negatives, sampling)
            for j, (img, msk) in enumerate(pairs):
                name = f"{stem}_r{j}"
                write_rgb(domains_dir / domain / "images" / f"{name}.png", img)
                write_labels(domains_dir / domain / "labels" / f"{name}.png", msk, overwrite=True)
                n += 1
        print(f"{domain}: {n} ROIs")
    for name, members in SETS.items():
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        for domain in members:
            link = folder / domain
            if not link.exists():
                link.symlink_to(Path("..") / "domains" / domain)
    print(f"sets: {', '.join(str(args.out / s) for s in SETS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
