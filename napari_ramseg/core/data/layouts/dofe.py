"""``dofe``, the DoFE fundus packaging: ``<root>/DomainK/{train,test}/ROIs/{image,mask}/<case>.png``.

Masks hold 255 background, 128 disc rim, 0 cup; they become (with DoFE's own thresholds: >200,
51..200, <=50) 0 background, 1 disc rim, 2 cup under ``OPTIC_DISC_CUP``. The folder gives the split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ramseg.core.labels import LabelScheme, OPTIC_DISC_CUP
from napari_ramseg.errors import RamsegInputError

from .base import Case, Layout, child_dir, pair_folders


class DofeLayout(Layout):
    name = "dofe"
    pattern = "DoFE <root>/DomainK/{train,test}/ROIs/{image,mask}/*.png"
    single_domain_hint = "this is a single DoFE domain; give the folder that holds Domain1, Domain2, ..."
    labels = OPTIC_DISC_CUP
    labels_source = "the DoFE layout"
    splits_from = "folders"
    image_kinds = frozenset({(True, False)})  # colour fundus photographs

    def is_domain(self, folder: Path) -> bool:
        return any(child_dir(child_dir(folder, s), "ROIs") is not None for s in ("train", "test"))

    def list_cases(self, root: Path, domain: str, require_masks: bool) -> list[Case]:
        cases: list[Case] = []
        for split in ("train", "test"):
            roi = child_dir(child_dir(root / domain, split), "ROIs")
            if roi is None:
                continue
            img_dir = child_dir(roi, "image")
            mask_dir = child_dir(roi, "mask")
            if img_dir is None:
                raise RamsegInputError("DoFE folder has no image/ subfolder", roi)
            hint = str((mask_dir or roi / "mask") / "{stem}") + ".png"
            cases += pair_folders(self.name, img_dir, mask_dir, domain, split, require_masks, hint)
        return cases

    def map_mask(self, mask: np.ndarray, labels: LabelScheme) -> np.ndarray:
        out = np.full(mask.shape, 2, dtype=np.uint8)  # <= 50: cup
        out[mask > 50] = 1  # disc rim
        out[mask > 200] = 0  # background
        return out
