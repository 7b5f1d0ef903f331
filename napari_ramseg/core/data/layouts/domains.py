"""``domains``, the native layout: ``<root>/<domain>/images/<case>.<ext>`` with ``labels/<case>.<ext>``.

Images: PNG, JPEG, TIFF or NIfTI; masks: PNG, TIFF or NIfTI at ``<root>/<domain>/labels/<case>``.
Other subfolders (``fov/``...) are ignored. Masks are class-index images (0 background, 1..K);
binary masks stored as 0/255 are read as 0/1. Labels come from ``dataset.json`` or, without one,
are nested ``label_1 .. label_K`` with K the largest mask value found.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ramseg.core.labels import LabelScheme

from .base import Case, Layout, child_dir, mask_values, pair_folders


class DomainsLayout(Layout):
    name = "domains"
    pattern = "<root>/<domain>/images/<case>.png with <root>/<domain>/labels/<case>.png"
    single_domain_hint = ("this is a single domain folder (it holds images/); give the folder above it, "
                          "which holds one folder per domain")
    fallback = True  # "a folder with images/" is the loosest signature; specific layouts win

    def is_domain(self, folder: Path) -> bool:
        return child_dir(folder, "images") is not None

    def list_cases(self, root: Path, domain: str, require_masks: bool) -> list[Case]:
        ddir = root / domain
        img_dir = child_dir(ddir, "images")
        lbl_dir = child_dir(ddir, "labels")
        assert img_dir is not None
        hint = str((lbl_dir or ddir / "labels") / "{stem}") + ".png (or .tif, .nii.gz)"
        return pair_folders(self.name, img_dir, lbl_dir, domain, None, require_masks, hint)

    def map_mask(self, mask: np.ndarray, labels: LabelScheme) -> np.ndarray:
        # binary masks are often saved 0/255 so that they are visible; 255 is then the one class
        if labels.num_classes < 255 and mask.size:
            values = mask_values(mask)
            if values.max() == 255 and set(values.tolist()) <= {0, 255}:
                mask = (mask == 255).astype(np.uint8)
        return mask
