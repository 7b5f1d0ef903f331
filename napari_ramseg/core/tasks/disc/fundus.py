"""Is this a colour fundus image at all? The check at the edge of ``DiscPredictor``.

The disc/cup network was trained on disc-centred regions and draws a disc on almost anything with a
bright blob (a prostate MRI slice, a cat), and stage one always finds a brightest blob; so without a
check the user gets a disc mask and a vCDR on an image that has no optic disc. What every colour
fundus photograph and disc crop shares is its colour: the retina, seen through the pupil, is
red-dominant (blood, melanin and the choroid absorb blue and green far more than red), so inside the
field of view the mean red channel holds well over a third of the brightness. A grey image (an MRI
slice stored as RGB, a red-free photograph) has exactly a third, noise about a third.

The statistic is the **red excess**: mean R / (mean R + mean G + mean B) - 1/3 over the field of view
(``locate.field_of_view``, at stage one's coarse scale), 0 for grey, 2/3 for pure red. The threshold
(``DiscConfig.min_red_excess``) is set on fundus images only: a margin times the lowest red excess
over every photograph and crop of the project's fundus sets (``bench/recipes/optic_disc_settings.py
--fundus-check`` -> ``bench/results/fundus_check.json``). The ordering R > G > B is not required:
some scanned DRIONS-DB slides are bluer than green.

The model's source-fit score (``core/shift/domain_fit.py``) was measured as a second test and is not used:
fundus photographs of the sets score as low as everyday photographs do (bundled optic-disc model:
DRIONS-DB, CHASE_DB1 and DoFE samples down to 0.26, a cat photograph 0.31), so no threshold chosen on
fundus images alone refuses anything more than the colour test does.
"""

from __future__ import annotations

import numpy as np

from ....errors import RamsegInputError
from ...config import DiscConfig
from .locate import field_of_view

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _block_mean(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """(H, W, 3) -> the means of k x k blocks, k the smallest step that brings the longer side to at
    most ``long_side`` (a mean colour needs no finer look, and a 3504 px photograph stays cheap)."""
    k = max(1, -(-max(rgb.shape[:2]) // long_side))
    if k == 1:
        return rgb.astype(np.float32)
    h, w = (rgb.shape[0] // k) * k, (rgb.shape[1] // k) * k
    if h == 0 or w == 0:  # thinner than a block: one row or column of means
        return rgb.astype(np.float32).mean(axis=(0, 1), keepdims=True)
    blocks = rgb[:h, :w].reshape(h // k, k, w // k, k, 3)
    # one axis at a time, accumulating in float64 without a float copy of the image (10x faster)
    return (blocks.sum(axis=1, dtype=np.float64).sum(axis=2) / (k * k)).astype(np.float32)


def red_excess(image: np.ndarray, cfg: DiscConfig | None = None) -> float:
    """Mean red share minus a third inside the field of view of an (H, W, 3|4) image (negative values
    count as 0); 0 for a grey or black image."""
    cfg = cfg or DiscConfig()
    rgb = np.clip(_block_mean(np.asarray(image)[..., :3], cfg.coarse_long_side), 0.0, None)
    luma = rgb @ _LUMA
    inside = rgb[field_of_view(luma, cfg)]
    mean = inside.mean(axis=0) if inside.size else np.zeros(3)
    total = float(mean.sum())
    return float(mean[0]) / total - 1.0 / 3.0 if total > 0 else 0.0


def check_fundus(image: np.ndarray, cfg: DiscConfig | None = None) -> float:
    """``image``'s red excess; ``RamsegInputError`` when it is below ``cfg.min_red_excess`` (0: off)."""
    cfg = cfg or DiscConfig()
    value = red_excess(image, cfg)
    if cfg.min_red_excess > 0 and value < cfg.min_red_excess:
        raise RamsegInputError(
            f"not a colour fundus image: it is not red-dominant inside its field of view (red excess "
            f"{value:.3f} < {cfg.min_red_excess}, a grey image has 0); the optic disc model needs a colour "
            "photograph of the retina or a disc-centred crop of one")
    return value
