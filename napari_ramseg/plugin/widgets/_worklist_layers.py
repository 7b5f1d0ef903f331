"""The Worklist dock's open scan in the viewer: its image and its prediction as a Labels layer to paint.

Both layers are named after the scan (``worklist: <scan>`` and ``... prediction``), so the dock finds
them again; a prediction keeps the mask it opened with (``ORIGINAL_KEY``), so painted edits show.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import layer_meta
from ...palette import label_color
from ._common import ORIGINAL_KEY, notify_info

LAYER_PREFIX = "worklist: "


def image_layer_name(scan: str) -> str:
    return LAYER_PREFIX + scan


def labels_layer_name(scan: str) -> str:
    return image_layer_name(scan) + " prediction"


def is_edited(viewer: Any, scan: str) -> bool:
    """Whether the scan's prediction was painted since it was opened or last saved."""
    name = labels_layer_name(scan)
    if name not in viewer.layers:
        return False
    layer = viewer.layers[name]
    original = layer.metadata.get(ORIGINAL_KEY)
    return original is None or not np.array_equal(np.asarray(layer.data), original)


def close_scan_layers(viewer: Any, scan: str) -> None:
    """Take the scan's layers away, unless its mask was painted and not saved: those stay, renamed."""
    names = [labels_layer_name(scan), image_layer_name(scan)]
    if is_edited(viewer, scan):
        notify_info(f"napari-ramseg: '{labels_layer_name(scan)}' has unsaved edits and was left in the viewer")
        for name in names:  # renamed, so the next time this scan opens it gets fresh layers
            if name in viewer.layers:
                viewer.layers[name].name = name + " (unsaved)"
        return
    for name in names:
        if name in viewer.layers:
            viewer.layers.remove(name)


def show_scan_layers(viewer: Any, scan: str, image: Any, labels: np.ndarray, model: str | None,
                     source_path: str) -> Any:
    """Add the scan's image and prediction (unless they are open already), in the image's geometry;
    the prediction layer made active, in paint mode. Returns the prediction layer."""
    scale = tuple(image.spacing) if image.is_volume and image.spacing else None
    meta = {layer_meta.SOURCE_PATH: source_path}
    if image.spacing is not None:
        meta[layer_meta.SPACING] = [float(s) for s in image.spacing]
    if image.affine is not None:
        meta[layer_meta.AFFINE] = np.asarray(image.affine).tolist()
    geometry = {"scale": scale} if scale else {}
    if image_layer_name(scan) not in viewer.layers:
        viewer.add_image(image.array, name=image_layer_name(scan), rgb=image.axes == "YXC", metadata=meta,
                         **geometry)
    if labels_layer_name(scan) not in viewer.layers:
        colours = {0: "transparent", None: "transparent", **{i: label_color(i) for i in range(1, 9)}}
        viewer.add_labels(labels, name=labels_layer_name(scan), opacity=0.7, colormap=colours,
                          metadata={layer_meta.MODEL: model, ORIGINAL_KEY: labels.copy(),
                                    **layer_meta.geometry_of(meta)}, **geometry)
    layer = viewer.layers[labels_layer_name(scan)]
    viewer.layers.selection.active = layer
    try:
        layer.mode = "paint"
    except Exception:  # noqa: BLE001 - a napari without paint mode for this layer: the user picks a tool
        pass
    return layer
