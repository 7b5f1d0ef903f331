"""Sample data for napari: a downscaled HRF fundus photograph with its expert vessel mask (CC0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_DIR = Path(__file__).parents[1] / "sample_data"  # the package's symlink to the top-level sample_data/
FUNDUS_IMAGE = SAMPLE_DIR / "hrf_01_h.jpg"
FUNDUS_VESSELS = SAMPLE_DIR / "hrf_01_h_vessels.png"
CREDIT = "HRF database, Budai et al., Int J Biomed Imaging 2013 (CC0)"


def fundus_image() -> np.ndarray:
    """The HRF ``01_h`` photograph, 876 x 584 RGB uint8."""
    from ..io import read_image

    return read_image(FUNDUS_IMAGE).array


def fundus_vessels() -> np.ndarray:
    """Its expert vessel mask: 0 background, 1 vessel."""
    from ..io import read_mask

    return read_mask(FUNDUS_VESSELS)


def fundus_with_vessels() -> list[tuple]:
    """napari sample: the fundus image and its expert vessel mask as a Labels layer."""
    from . import layer_meta
    from .napari_io import prefer_our_readers

    prefer_our_readers()  # from here on File > Open takes our reader for NIfTI and DICOM, without asking
    source = {layer_meta.SOURCE: CREDIT, layer_meta.SOURCE_PATH: str(FUNDUS_IMAGE)}
    return [
        (fundus_image(), {"name": "HRF fundus 01_h", "metadata": source}, "image"),
        (
            fundus_vessels(),
            {
                "name": "vessels (expert)",
                "opacity": 0.5,
                "colormap": {0: "transparent", 1: "lime", None: "transparent"},
                "features": {"index": [0, 1], "class": ["background", "vessel"]},
                "metadata": {layer_meta.SOURCE: CREDIT, layer_meta.CLASS_NAMES: {"1": "vessel"}},
            },
            "labels",
        ),
    ]
