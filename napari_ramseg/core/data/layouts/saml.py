"""``saml``, the SAML multi-site prostate volumes: ``<root>/<site>/<case>.nii.gz`` with
``<case>_segmentation.nii.gz`` (any capitalisation); mask label 2 counts as 1, scheme ``PROSTATE``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from napari_ramseg import io as rio
from napari_ramseg.core.labels import LabelScheme, PROSTATE
from napari_ramseg.errors import RamsegInputError

from .base import Case, Layout, cases_from, files

_SEG_RE = re.compile(r"^(?P<case>.+?)_segmentation$", re.IGNORECASE)
_NIFTI = (".nii", ".nii.gz")


class SamlLayout(Layout):
    name = "saml"
    pattern = "SAML <root>/<site>/<case>.nii.gz with <case>_segmentation.nii.gz"
    single_domain_hint = "this is a single SAML site; give the folder that holds one folder per site"
    labels = PROSTATE
    labels_source = "the SAML layout"
    image_kinds = frozenset({(False, True)})  # grey MRI volumes

    def is_domain(self, folder: Path) -> bool:
        return any(rio.suffix_of(f) in _NIFTI and _SEG_RE.match(rio.stem_of(f)) for f in files(folder))

    def holds_domain(self, folder: Path) -> bool:
        # any folder with NIfTI files, so that a site whose masks are all missing is reported, not skipped
        return any(rio.suffix_of(f) in _NIFTI for f in files(folder))

    def list_cases(self, root: Path, domain: str, require_masks: bool) -> list[Case]:
        site = root / domain
        images: dict[str, Path] = {}
        segs: dict[str, Path] = {}
        for f in files(site):
            if rio.suffix_of(f) not in _NIFTI:
                continue
            stem = rio.stem_of(f)
            m = _SEG_RE.match(stem)
            target, key = (segs, m.group("case")) if m else (images, stem)
            if key in target:
                raise RamsegInputError(f"two files for case {key!r}: {target[key].name} and {f.name}", site)
            target[key] = f
        for key, seg in segs.items():
            if key not in images:
                raise RamsegInputError(f"segmentation has no image: expected {site / key}.nii.gz", seg)
        return cases_from(self.name, images, segs, domain, None, require_masks,
                          lambda key: f"volume has no mask: expected {site / key}_segmentation.nii.gz")

    def map_mask(self, mask: np.ndarray, labels: LabelScheme) -> np.ndarray:
        mask = mask.copy()
        mask[mask == 2] = 1  # sites that label two zones (1, 2): both are prostate
        return mask
