"""Target-style RAM for fine-tuning: unlabelled scans of the new site lend their low-frequency
amplitude as RAM partners next to the source domains (``SourcePool.set_style_images``), and the
consistency loss acts on the images mixed with them. Here: reading those scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ....errors import RamsegInputError
from ...config import ADAPT
from ...shift.domain_fit import _even
from ...data.preprocess import to_model_channels, volume_to_slices_25d


def load_style_images(folder: str | Path, in_channels: int = 3, max_slices: int = ADAPT.max_slices
                      ) -> tuple[list[torch.Tensor], dict]:
    """Every readable image in ``folder`` (a volume: ``max_slices`` evenly spaced 2.5D slices), in the
    model's channels and range, ``(C, H, W)``; and what was read, for ``model.json``."""
    from ....io import is_supported, read_image

    root = Path(folder)
    if not root.is_dir():
        raise RamsegInputError("the folder of unlabelled scans was not found", root)
    files = sorted(p for p in root.iterdir() if p.is_file() and is_supported(p))
    if not files:
        raise RamsegInputError("no readable images (PNG, JPEG, TIFF, NIfTI) among the unlabelled scans", root)
    images: list[torch.Tensor] = []
    for path in files:
        image = read_image(path)
        try:
            if image.is_volume:
                array = volume_to_slices_25d(image.array, _even(image.array.shape[0], max_slices))
                images += [torch.from_numpy(np.ascontiguousarray(s)) for s in array]
            else:
                images.append(torch.from_numpy(to_model_channels(image.array, in_channels)))
        except ValueError as exc:
            raise RamsegInputError(str(exc), path) from None
    return images, {"folder": root.resolve().name, "scans": len(files), "images": len(images)}
