"""Post-processing of predicted label images: largest connected component and hole filling.

As the RAM-DSIR paper evaluates: per structure, keep the largest connected component and fill holes; for
prostate the largest component is taken in 3D. Whether to apply this at all is the caller's choice
(for thin, branching structures such as vessels the largest component would throw away real vessel
segments, so it should be switched off there).

Conventions
-----------
- Arrays are 2D ``(Y, X)`` or 3D ``(Z, Y, X)``, napari's order; axis 0 of a volume is the slice axis.
- Connected components use full connectivity by default (8-connected in 2D, 26-connected in 3D), the
  same default as MONAI's ``KeepLargestConnectedComponent``. A 3D volume is labelled as one volume,
  never slice by slice.
- Ties between equally large components keep the one scipy labels first (lowest label index).
- Hole filling of a 3D volume fills each 2D slice along the slice axis (see :func:`fill_holes`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..labels import LabelScheme

__all__ = ["keep_largest_component", "fill_holes", "postprocess_labels"]


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def keep_largest_component(mask: np.ndarray, connectivity: int | None = None) -> np.ndarray:
    """Return a boolean copy of ``mask`` with only its largest connected component.

    ``connectivity`` is the number of orthogonal hops counted as neighbours, as in
    ``scipy.ndimage.generate_binary_structure`` (1 = 4/6-connected, ``ndim`` = 8/26-connected);
    ``None`` means full connectivity. A 3D mask is labelled in 3D. An empty mask stays empty.
    """
    mask = _as_bool(mask)
    connectivity = mask.ndim if connectivity is None else int(connectivity)
    if not 1 <= connectivity <= mask.ndim:
        raise ValueError(f"connectivity must be in 1..{mask.ndim}, got {connectivity}")
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    labelled, n = ndimage.label(mask, structure=structure)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)
    sizes[0] = 0  # background
    return labelled == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray, slice_axis: int | None = 0) -> np.ndarray:
    """Fill holes (background regions not connected to the image border) in a boolean mask.

    2D masks use ``scipy.ndimage.binary_fill_holes`` directly.

    For a 3D volume the default (``slice_axis=0``) fills every 2D slice along the slice axis. This is
    what a prostate volume needs: a gap in the segmentation (e.g. around the urethra) runs through
    several slices as a tube that opens at the top or bottom of the organ, so a 3D fill, which only
    fills cavities sealed off in all three dimensions, would leave it open. The per-slice fill is
    also a superset of the 3D fill: a cavity sealed in 3D is sealed in each of its slices, so no
    separate 3D pass is needed. ``slice_axis=None`` gives the strict 3D fill instead.
    """
    mask = _as_bool(mask)
    if mask.ndim == 2 or slice_axis is None:
        return ndimage.binary_fill_holes(mask)
    moved = np.moveaxis(mask, slice_axis, 0)
    out = np.empty_like(moved)
    for i in range(moved.shape[0]):
        out[i] = ndimage.binary_fill_holes(moved[i]) if moved[i].any() else False
    return np.moveaxis(out, 0, slice_axis)


def _clean(mask: np.ndarray, largest_component: bool, fill: bool) -> np.ndarray:
    if largest_component:
        mask = keep_largest_component(mask)
    if fill:
        mask = fill_holes(mask)
    return mask


def postprocess_labels(
    labels: np.ndarray,
    scheme: LabelScheme,
    largest_component: bool = True,
    fill: bool = True,
) -> np.ndarray:
    """Apply largest-component and hole filling per structure of a class-index label image.

    ``labels`` is 2D or 3D with values ``0..scheme.num_classes``; the result has the same shape and
    dtype.

    - ``nested`` (e.g. disc ⊃ cup): structure ``k`` is ``labels >= k``. Structures are processed from
      the outermost inwards; each inner structure is first clipped to its processed parent, then
      cleaned, then clipped again, so an inner structure never lies outside its parent (cup pieces
      outside the disc are dropped). The masks are re-nested into class indices: a pixel's value is
      the number of structures containing it.
    - ``exclusive``: each class ``k`` (``labels == k``) is cleaned on its own. Removed pixels become
      background. Filled holes only take pixels that are background after the component step, so a
      class never overwrites another; a background pixel inside holes of several classes goes to
      the class with the smallest filled area (the innermost enclosing one).
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label image, got shape {labels.shape}")
    if not (largest_component or fill):
        return labels.copy()
    n = scheme.num_classes
    out = np.zeros_like(labels)

    if scheme.kind == "nested":
        parent = np.ones(labels.shape, dtype=bool)
        for k in range(1, n + 1):
            mask = (labels >= k) & parent
            mask = _clean(mask, largest_component, fill) & parent
            out[mask] = k  # inner structures overwrite: value = depth of nesting
            parent = mask
        return out

    # exclusive
    kept = []
    for k in range(1, n + 1):
        mask = labels == k
        if largest_component:
            mask = keep_largest_component(mask)
        out[mask] = k
        kept.append(mask)
    if fill:
        background = out == 0
        filled = [(fill_holes(m) & background) for m in kept]
        # larger filled areas first, so an inner (smaller) enclosing class wins shared pixels
        order = sorted(range(n), key=lambda i: int(kept[i].sum() + filled[i].sum()), reverse=True)
        for i in order:
            out[filled[i]] = i + 1
    return out
