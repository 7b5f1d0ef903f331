"""``saml-npy``, the RAM-DSIR paper's prostate package: ``<root>/Domain{1..6}/{image,mask}/<slice>.npy``.

This is SAML's six sites already cut into 2D slices, as the paper's code reads them: each image is
an ``H x W x 3`` float (or integer) array whose channels are a slice and its two neighbours, each
mask an ``H x W`` array of class indices (0 background, 1 prostate; a 2 counts as 1, as in
``saml``). Every file is one case, so validation holds out slices, not volumes. The images are
normalised again per slice as every other image is, so a model trained here reads any other
3-channel slice the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ramseg import io as rio
from napari_ramseg.core.labels import LabelScheme, PROSTATE
from napari_ramseg.errors import RamsegInputError, one_line

from .base import Case, Layout, child_dir, files, pair_folders

_NPY = (".npy",)


def _load(path: Path, role: str) -> np.ndarray:
    """The array in a .npy file; memory-mapped first so that a header claiming a huge array is refused
    before anything is read, and never unpickled (a .npy from elsewhere must not run code)."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise RamsegInputError("file not found", path) from None
    except Exception as exc:  # ValueError (bad header, object arrays), OSError, EOFError
        raise RamsegInputError(f"cannot read NumPy {role} (truncated or corrupt?): {one_line(exc, 200, typed=False)}",
                               path) from None
    if not isinstance(mapped, np.ndarray) or mapped.dtype.fields is not None or mapped.dtype.kind not in "biuf":
        raise RamsegInputError(f"NumPy {role} of type {getattr(mapped, 'dtype', type(mapped))} is not supported", path)
    if mapped.nbytes > rio.MAX_IMAGE_BYTES:
        raise RamsegInputError(f"NumPy {role} of shape {mapped.shape} is over {rio.MAX_IMAGE_BYTES / 2**30:.0f} GiB", path)
    if mapped.size == 0:
        raise RamsegInputError(f"NumPy {role} is empty (shape {mapped.shape})", path)
    return np.array(mapped, dtype=mapped.dtype.newbyteorder("="))


class SamlNpyLayout(Layout):
    name = "saml-npy"
    pattern = "RAM-DSIR prostate slices <root>/DomainK/{image,mask}/*.npy"
    single_domain_hint = "this is a single domain of .npy slices; give the folder that holds Domain1, Domain2, ..."
    labels = PROSTATE
    labels_source = "the saml-npy layout"

    def is_domain(self, folder: Path) -> bool:
        images = child_dir(folder, "image")
        return images is not None and any(rio.suffix_of(f) in _NPY for f in files(images))

    def list_cases(self, root: Path, domain: str, require_masks: bool) -> list[Case]:
        img_dir = child_dir(root / domain, "image")
        mask_dir = child_dir(root / domain, "mask")
        assert img_dir is not None
        hint = str((mask_dir or root / domain / "mask") / "{stem}") + ".npy"
        return pair_folders(self.name, img_dir, mask_dir, domain, None, require_masks, hint,
                            image_suffixes=_NPY, mask_suffixes=_NPY, refuse_lossy_masks=False)

    def read_image(self, path: Path) -> rio.ImageData:
        array = _load(path, "image")
        if array.ndim == 2:
            return rio.ImageData(array=array, path=str(path), axes="YX")
        if array.ndim == 3 and 1 <= array.shape[-1] <= 4:
            return rio.ImageData(array=array, path=str(path), axes="YXC")
        raise RamsegInputError(f"expected an H x W x 3 slice (or H x W), not shape {array.shape}", path)

    def read_mask(self, path: Path) -> np.ndarray:
        array = _load(path, "mask")
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 2:
            raise RamsegInputError(f"expected an H x W mask of class indices, not shape {array.shape}", path)
        return rio.as_index_array(array, path)

    def depth(self, path: Path) -> int | None:
        return None  # every file is one 2D slice

    def map_mask(self, mask: np.ndarray, labels: LabelScheme) -> np.ndarray:
        if (mask == 2).any():
            mask = mask.copy()
            mask[mask == 2] = 1
        return mask
