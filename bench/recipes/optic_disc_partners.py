"""RAM partners for the optic-disc recipe: disc-region crops of the vessel sets' photographs (issue 28).

The cup is annotated on one camera (Drishti-GS) and four REFUGE ROIs, so in the DRIONS-DB -> Drishti-GS
check the cup model sees few camera styles. RAM's partners need no labels: the 88 photographs of HRF,
STARE and CHASE_DB1 are three more cameras. Their disc-region crops lend their low-frequency amplitude
through ``ramseg train --partners`` (never trained on as images).

Where to crop needs no model, so no held-out camera can leak in: the disc is where the vessel tree
converges, the peak of the expert vessel mask's density (``optic_disc_settings.convergence_point``, about
half a disc diameter off its centre at most). The crop's side is ``DiscConfig.roi_ratio`` x a typical disc
diameter (``HIT_RADIUS`` x the field-of-view width), as the training ROIs are cut; each crop is written at
``ROI_SIDE`` px like ``bench/recipes/optic_disc_data.py``'s ROIs. None of these cameras is a disc check's
held-out camera, so one folder serves the bundled model and both checks.

    python -m bench.recipes.optic_disc_partners [--data ../shared/data] [--out bench/work/optic_disc/partners]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.recipes.optic_disc_settings import vessel_photographs
from napari_ramseg.core.config import DiscConfig
from napari_ramseg.files import atomic_write

CAMERAS = ("HRF", "STARE", "CHASE_DB1")
ROI_SIDE = 256  # px, as bench/recipes/optic_disc_data.py writes the training ROIs


def disc_region(image: np.ndarray, centre: tuple[float, float], side: float) -> np.ndarray:
    """The square of ``side`` px around ``centre``, padded black past the photograph's edge, at ROI_SIDE px."""
    from PIL import Image

    half = int(round(side / 2))
    y, x = (int(round(c)) for c in centre)
    padded = np.pad(image, ((half, half), (half, half), (0, 0)))
    crop = padded[y:y + 2 * half, x:x + 2 * half]
    return np.asarray(Image.fromarray(crop).resize((ROI_SIDE, ROI_SIDE), Image.BILINEAR))


def main(argv=None) -> int:
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "work" / "optic_disc" / "partners")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ratio = DiscConfig().roi_ratio
    written = 0
    for camera in CAMERAS:
        for photo in vessel_photographs(args.data, camera):
            crop = disc_region(photo.image, photo.point, ratio * photo.radius)
            atomic_write(args.out / f"{camera}_{photo.name}.png",
                         lambda tmp, crop=crop: Image.fromarray(crop).save(tmp, format="PNG"))
            written += 1
    print(f"{written} partner ROIs from {', '.join(CAMERAS)} in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
