"""Where a preview goes on the canvas: a place of its own beside its image, uncovered and in view.

Each preview (the mixup of one image, the restoration preview) is a *group* of layers whose metadata
carry ``layer_meta.PREVIEW_GROUP``. A group is placed to the right of its image, level with the image's
top; where that box would meet another group's layers it moves down below them, so that two previews
never draw their tiles, or print their captions, over each other. Layers that are not previews and lie
over the box (a large partner photograph, say) are hidden, and so are a mixup's partners lying over its
image; the dock says which. When a preview is made, the view is fitted to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import layer_meta
from ._common import world_box

Box = tuple[np.ndarray, np.ndarray]  # (top-left, bottom-right) in world (y, x)


def layer_box(layer: Any) -> Box:
    """A layer's last two axes in world units (an image's pixel edges included)."""
    from napari.layers import Image, Labels

    if isinstance(layer, (Image, Labels)):
        origin, size = world_box(layer)
        return origin, origin + size
    extent = np.asarray(layer.extent.world, dtype=float)[:, -2:]
    return extent[0], extent[1]


def overlaps(a: Box, b: Box) -> bool:
    """Do two boxes share some area (touching edges do not count)?"""
    return bool(np.all(a[0] < b[1]) and np.all(b[0] < a[1]))


def group_of(layer: Any) -> str | None:
    return (getattr(layer, "metadata", None) or {}).get(layer_meta.PREVIEW_GROUP)


def group_layers(viewer: Any, group: str) -> list[Any]:
    return [layer for layer in viewer.layers if group_of(layer) == group]


def other_groups(viewer: Any, group: str) -> list[Box]:
    """The box of every other preview group on the canvas (the union of its layers)."""
    boxes: dict[str, Box] = {}
    for layer in viewer.layers:
        name = group_of(layer)
        if name is None or name == group:
            continue
        lo, hi = layer_box(layer)
        if name in boxes:
            lo, hi = np.minimum(boxes[name][0], lo), np.maximum(boxes[name][1], hi)
        boxes[name] = (lo, hi)
    return list(boxes.values())


def place(viewer: Any, image: Any, group: str, size: Iterable[float], gap: float) -> np.ndarray:
    """The top-left world corner for a preview of ``size`` (height, width): right of ``image`` at its
    top, moved down below any other preview group it would meet."""
    origin, image_size = world_box(image)
    size = np.asarray(tuple(size), dtype=float)
    corner = np.array([origin[0], origin[1] + image_size[1] + gap], dtype=float)
    others = other_groups(viewer, group)
    moved = True
    while moved:  # each move goes below one box, so this ends
        moved = False
        for lo, hi in others:
            if overlaps((corner, corner + size), (lo, hi)):
                corner[0] = hi[0] + gap
                moved = True
    return corner


def uncover(viewer: Any, box: Box, keep: Iterable[Any] = (), only: Iterable[str] | None = None) -> list[str]:
    """Hide the visible layers that are not previews and lie over ``box`` (of them, those named in
    ``only`` when it is given); their names."""
    kept = {getattr(layer, "name", layer) for layer in keep}
    wanted = None if only is None else set(only)
    hidden = []
    for layer in viewer.layers:
        if (not layer.visible or layer.name in kept or (wanted is not None and layer.name not in wanted)
                or (getattr(layer, "metadata", None) or {}).get(layer_meta.PREVIEW)):
            continue
        if overlaps(layer_box(layer), box):
            layer.visible = False
            hidden.append(layer.name)
    return hidden


def show_in_view(viewer: Any, *groups: str, margin: float = 0.05) -> None:
    """Centre the 2D view on the preview group(s) and zoom so that they fill the canvas (napari's
    ``fit_to_view(layers=...)`` fails when the viewer holds layers of more dimensions)."""
    layers = [layer for group in groups for layer in group_layers(viewer, group)]
    if viewer.dims.ndisplay != 2 or not layers:
        return
    boxes = [layer_box(layer) for layer in layers]
    lo, hi = np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    canvas = np.asarray(viewer.canvas.size, dtype=float)  # (height, width) in screen pixels
    center = list(camera.center)
    center[-2:] = (lo + hi) / 2
    camera.center = tuple(center)
    camera.zoom = float((1 - margin) * np.min(canvas / np.maximum(hi - lo, 1e-9)))


def hidden_note(names: list[str]) -> str:
    """The dock's words for the layers :func:`uncover` hid ("" for none)."""
    if not names:
        return ""
    quoted = ", ".join(f"'{name}'" for name in names)
    return f" Hid {quoted}: {'it' if len(names) == 1 else 'they'} covered the preview (tick the eye to show again)."
