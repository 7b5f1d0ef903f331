"""Image geometry shared by training, inference, review and adaptation: the network's working scale of
an image, and resizing images and masks to it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import PreprocessConfig


def working_shape(height: int, width: int, preprocess: PreprocessConfig) -> tuple[int, int]:
    """The (H, W) an image of this size has at the network's scale (see PreprocessConfig)."""
    if preprocess.long_side is None:
        return preprocess.size, preprocess.size
    scale = preprocess.long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) or (B, C, H, W) float image -> bilinear resize with antialiasing when shrinking."""
    batched = image.dim() == 4
    x = image if batched else image[None]
    if tuple(x.shape[-2:]) != tuple(shape):
        shrinking = shape[0] < x.shape[-2] or shape[1] < x.shape[-1]
        x = F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=shrinking)
    return x if batched else x[0]


def resize_mask(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(H, W) integer mask -> nearest-neighbour resize."""
    if tuple(mask.shape[-2:]) == tuple(shape):
        return mask
    return F.interpolate(mask[None, None].float(), size=shape, mode="nearest")[0, 0].to(mask.dtype)
