"""How the Segment dock puts a result on the canvas: a Labels layer, and optionally probability and
uncertainty layers, without stalling the viewer and without overwriting a user's corrections.

- :func:`show_result` is a generator: one layer per step, and :class:`~._jobs.JobRunner` runs one step
  per event-loop tick. A layer napari has to build (its visual, controls and overlays) costs 50-150 ms
  on the UI thread; one per tick keeps every stall near that of the slowest single layer. Layers that
  exist already are updated in place, which costs a few milliseconds.
- The uncertainty map is transparent where the model is certain (most of the image), so it does not
  tint the whole canvas.
- A segmentation layer the user has painted is never replaced: the new result goes to a new layer,
  ``"<image> segmentation 2"`` (then 3, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import layer_meta
from ...palette import label_color
from ._common import ORIGINAL_KEY, notify_info, upsert_layer
from ._measures import feature_columns

UNCERTAINTY_CLEAR_BELOW = 0.05  # normalised entropy below which the uncertainty overlay is fully transparent
UNCERTAINTY_OPAQUE_AT = 0.3  # and from which it is fully opaque
_UNCERTAINTY_CMAP: Any = None


def uncertainty_colormap() -> Any:
    """viridis with an alpha ramp: up to 0.05 (certain) fully transparent, from 0.3 fully opaque."""
    global _UNCERTAINTY_CMAP
    if _UNCERTAINTY_CMAP is None:
        from napari.utils.colormaps import AVAILABLE_COLORMAPS, Colormap

        viridis = AVAILABLE_COLORMAPS["viridis"]
        colors = np.array(viridis.colors, dtype=np.float32)
        controls = np.asarray(viridis.controls, dtype=np.float32)
        ramp = (controls - UNCERTAINTY_CLEAR_BELOW) / (UNCERTAINTY_OPAQUE_AT - UNCERTAINTY_CLEAR_BELOW)
        colors[:, 3] = np.clip(ramp, 0.0, 1.0)
        _UNCERTAINTY_CMAP = Colormap(colors, controls=controls, name="ramseg uncertainty")
    return _UNCERTAINTY_CMAP


def user_edited(layer: Any) -> bool:
    """True unless ``layer`` is a Labels layer that still holds the prediction it was made with."""
    from napari.layers import Labels

    original = getattr(layer, "metadata", {}).get(ORIGINAL_KEY)
    if not isinstance(layer, Labels) or original is None:
        return True  # not ours, or made before the prediction was kept: never overwrite it
    data = np.asarray(layer.data)
    return data.shape != np.shape(original) or not np.array_equal(data, original)


def labels_layer_name(viewer: Any, base: str) -> tuple[str, list[str]]:
    """``"<base> segmentation"``, or ``... segmentation 2``, 3, ... past layers the user has edited;
    and the names of those edited layers, which are left as they are."""
    kept: list[str] = []
    while True:
        name = f"{base} segmentation" + (f" {len(kept) + 1}" if kept else "")
        if name not in viewer.layers or not user_edited(viewer.layers[name]):
            return name, kept
        kept.append(name)


def _fraction(labels: np.ndarray, index: int, measured: float | None) -> float:
    """A structure's share: the measures' (a nested disc includes its cup), else its label's pixels
    (per class, not np.bincount: that copies a volume to int64 first)."""
    return float(measured) if measured is not None else np.count_nonzero(labels == index) / labels.size


def show_result(viewer: Any, layer: Any, result: Any, want_probs: bool, want_entropy: bool,
                say: Callable[[str], None]) -> Iterator[None]:
    """Labels first (what the user waits for), then probability and uncertainty layers beneath it."""
    base = layer.name
    geometry = {"scale": tuple(layer.scale), "translate": tuple(layer.translate)}
    source_meta = layer_meta.geometry_of(layer.metadata)
    class_names = ["background", *result.class_names]
    colors = {0: "transparent", None: "transparent"}
    colors.update({i: label_color(i) for i in range(1, len(class_names))})
    name, kept = labels_layer_name(viewer, base)
    measures = dict(getattr(result, "measures", None) or {})  # core/evaluation/measures.measure_case, computed by the job
    labels = upsert_layer(
        viewer, name, result.labels, "labels", opacity=0.7, colormap=colors,
        features={"index": list(range(len(class_names))), "class": class_names,
                  **feature_columns(measures, result.class_names)},
        metadata={**source_meta, layer_meta.CLASS_NAMES: {str(i): n for i, n in enumerate(class_names) if i},
                  layer_meta.MODEL: result.model, layer_meta.DEVICE: result.device, layer_meta.MEASURES: measures,
                  ORIGINAL_KEY: result.labels.copy()},  # kept apart from the data the user paints
        **geometry)
    yield
    if want_probs:
        for c, channel in enumerate(result.channel_names):
            if channel == "background":
                continue
            upsert_layer(viewer, f"{base} probability: {channel}", result.probabilities[c], "image",
                         colormap="magma", contrast_limits=(0.0, 1.0), blending="additive", below=labels,
                         **geometry)
            yield
    if want_entropy:
        upsert_layer(viewer, f"{base} uncertainty", result.entropy, "image", colormap=uncertainty_colormap(),
                     contrast_limits=(0.0, 1.0), blending="translucent", below=labels, **geometry)
        yield
    if labels in viewer.layers and viewer.layers.selection.active is not labels:
        viewer.layers.selection.active = labels  # ready to paint corrections
    share = ", ".join(f"{n} {100 * _fraction(result.labels, i, measures.get(f'{n}_fraction')):.1f}%"
                      for i, n in enumerate(class_names) if i)
    text = f"done on {result.device}: {share}"
    if kept:
        note = f"'{kept[-1]}' holds your edits and was kept; this result is '{name}'"
        text += f"; {note}"
        notify_info(f"napari-ramseg: {note}")
    say(text)
