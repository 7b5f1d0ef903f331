"""Pieces every napari-ramseg widget shares: layer pickers and layer helpers here; the model and
device pickers with the cached model loader in ``_models``; background jobs with progress and Stop,
and plain-message notifications, in ``_jobs``. All of them can be imported from this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QListWidget, QListWidgetItem, QWidget

from .. import layer_meta
from ...errors import RamsegInputError
from ._jobs import (  # noqa: F401 - re-exported: the widgets import everything shared from here
    SYNC_ENV,
    Job,
    JobCancelled,
    JobControl,
    JobFailed,
    JobRunner,
    Progress,
    error_message,
    notify_error,
    notify_info,
    sync_workers,
)
from ._models import (  # noqa: F401 - re-exported
    DEVICE_LABELS,
    DeviceCombo,
    ModelPicker,
    available_devices,
    clear_predictor_cache,
    get_predictor,
    model_summary,
    release_accelerator_memory,
)

logger = logging.getLogger(__name__)

PREVIEW_FLAG = layer_meta.PREVIEW  # marks preview layers, which layer pickers skip
ORIGINAL_KEY = layer_meta.ORIGINAL  # Labels: the prediction as made, saved as a correction's "original"


# ------------------------------------------------------------------------------------------ layers


def is_preview(layer: Any) -> bool:
    """Whether the layer is one the pickers never offer: a preview, or the Correct dock's strokes."""
    metadata = getattr(layer, "metadata", {})
    return bool(metadata.get(PREVIEW_FLAG) or metadata.get(layer_meta.STROKES))


def watch_layers(viewer: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` whenever layers are added, removed, reordered or renamed."""

    def safe(*_args: Any) -> None:
        try:
            callback()
        except RuntimeError:  # the Qt widget behind the callback is gone
            pass

    def on_inserted(event: Any) -> None:
        event.value.events.name.connect(safe)
        safe()

    viewer.layers.events.inserted.connect(on_inserted)
    viewer.layers.events.removed.connect(safe)
    viewer.layers.events.moved.connect(safe)
    for layer in viewer.layers:
        layer.events.name.connect(safe)


class LayerCombo(QComboBox):
    """A combo box of the viewer's layers of one type, kept in sync with the layer list."""

    def __init__(self, viewer: Any, layer_type: type | None = None, include_previews: bool = False,
                 parent: QWidget | None = None):
        super().__init__(parent)
        from napari.layers import Image

        self.viewer = viewer
        self.layer_type = layer_type or Image
        self.include_previews = include_previews
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(14)
        watch_layers(viewer, self.refresh)
        self.refresh()

    def candidates(self) -> list[Any]:
        return [layer for layer in self.viewer.layers
                if isinstance(layer, self.layer_type) and (self.include_previews or not is_preview(layer))]

    def refresh(self) -> None:
        current = self.currentText()
        names = [layer.name for layer in self.candidates()]
        if names == [self.itemText(i) for i in range(self.count())]:
            return
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentIndexChanged.emit(self.currentIndex())

    def current_layer(self) -> Any | None:
        name = self.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def set_layer(self, layer: Any) -> None:
        self.refresh()
        self.setCurrentText(getattr(layer, "name", str(layer)))


class LayerChecklist(QListWidget):
    """Checkable list of the viewer's image layers (for choosing several partners)."""

    def __init__(self, viewer: Any, exclude: Callable[[], Any] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.exclude = exclude
        self.setMaximumHeight(110)
        watch_layers(viewer, self.refresh)
        self.refresh()

    def refresh(self) -> None:
        from napari.layers import Image

        checked = set(self.checked_names())
        excluded = self.exclude() if self.exclude is not None else None
        excluded_name = getattr(excluded, "name", None)  # names, not identity: layers may come as proxies
        names = [layer.name for layer in self.viewer.layers
                 if isinstance(layer, Image) and not is_preview(layer) and layer.name != excluded_name]
        if names == [self.item(i).text() for i in range(self.count())]:
            return
        self.blockSignals(True)
        self.clear()
        for name in names:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if name in checked else Qt.Unchecked)
            self.addItem(item)
        self.blockSignals(False)

    def checked_names(self) -> list[str]:
        return [self.item(i).text() for i in range(self.count()) if self.item(i).checkState() == Qt.Checked]

    def set_checked(self, names: Sequence[str]) -> None:
        self.refresh()
        wanted = set(names)
        for i in range(self.count()):
            item = self.item(i)
            item.setCheckState(Qt.Checked if item.text() in wanted else Qt.Unchecked)

    def checked_layers(self) -> list[Any]:
        return [self.viewer.layers[n] for n in self.checked_names() if n in self.viewer.layers]


def layer_array(layer: Any) -> np.ndarray:
    """The layer's full-resolution data as a numpy array."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.asarray(data)


def displayed_plane(layer: Any, viewer: Any) -> tuple[np.ndarray, int | None]:
    """The 2D image (grey ``(H, W)`` or colour ``(H, W, C)``) the viewer shows now, and its slice index.

    For a volume the slice is the one under the viewer's current dims position; ``None`` for 2D data.
    """
    data = layer_array(layer)
    spatial = data.ndim - (1 if layer.rgb else 0)
    if spatial == 2:
        return data, None
    if spatial != 3:
        raise RamsegInputError(
            f"layer '{layer.name}' has {spatial}D data (shape {data.shape}); expected 2D or a 3D volume")
    coords = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    z = int(np.clip(np.round(coords[0]) if coords.size else 0, 0, data.shape[0] - 1))
    return data[z], z


def world_box(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """(origin, size) of a layer's last two (Y, X) axes in world units, pixel edges included."""
    shape = np.asarray(layer.data.shape if not getattr(layer, "multiscale", False) else layer.data[0].shape)
    if getattr(layer, "rgb", False):
        shape = shape[:-1]
    scale = np.asarray(layer.scale)[-2:]
    translate = np.asarray(layer.translate)[-2:]
    return translate - 0.5 * scale, shape[-2:] * scale


def _layer_class(layer_type: str) -> type:
    import napari.layers

    return getattr(napari.layers, layer_type.capitalize())


def _unchanged(current: Any, value: Any) -> bool:
    try:
        if isinstance(value, (tuple, list, np.ndarray)) and not isinstance(current, str):
            a, b = np.asarray(current, dtype=float), np.asarray(value, dtype=float)
            return a.shape == b.shape and bool(np.allclose(a, b))
        if isinstance(value, str):
            return getattr(current, "name", current) == value
        return bool(current == value)
    except Exception:  # colormaps, dicts, frames...: just set them
        return False


def upsert_layer(viewer: Any, name: str, data: Any, layer_type: str, below: Any = None, **kwargs: Any) -> Any:
    """Update the layer called ``name`` in place (same type and dimensionality), or add a new one
    (just beneath the layer ``below``, when that is given and in the viewer)."""
    from napari.layers import Layer

    existing = viewer.layers[name] if name in viewer.layers else None
    # isinstance, not type(): plugin widgets see layers through napari's PublicOnlyProxy
    same = existing is not None and isinstance(existing, _layer_class(layer_type))
    if same and layer_type == "image":
        rgb = kwargs.get("rgb")
        same = np.ndim(data) == np.ndim(existing.data) and (rgb is None or bool(rgb) == bool(existing.rgb))
    elif same and layer_type != "shapes":
        same = np.ndim(data) == np.ndim(existing.data)
    if same:
        if data is not existing.data:
            existing.data = data
        for key, value in kwargs.items():
            if key in ("rgb", "name", "shape_type") or _unchanged(getattr(existing, key, None), value):
                continue  # every setter re-slices and redraws the layer: skip the ones that change nothing
            try:
                setattr(existing, key, value)
            except (AttributeError, TypeError, ValueError):
                logger.debug("cannot update %s.%s", name, key)
        return existing
    index = None
    if existing is not None:
        index = viewer.layers.index(existing)
        viewer.layers.remove(existing)
    layer = Layer.create(data, {"name": name, **kwargs}, layer_type)
    if index is None and below is not None and below in viewer.layers:
        index = viewer.layers.index(below)
    if index is None:
        viewer.add_layer(layer)
    else:
        viewer.layers.insert(index, layer)
    return layer


def add_captions(viewer: Any, name: str, positions: Sequence[Sequence[float]], texts: Sequence[str],
                 size: int = 10, group: str | None = None) -> Any:
    """A Points layer whose invisible points carry text labels (world coordinates, upper-left anchored);
    ``group``: the preview they caption (``layer_meta.PREVIEW_GROUP``)."""
    positions = np.asarray(positions, dtype=float).reshape(-1, 2)
    props = dict(
        features={"caption": list(texts)},
        text={"string": "{caption}", "color": "white", "anchor": "upper_left", "size": size,
              "translation": [2.0, 2.0]},
        size=1, face_color="transparent", border_color="transparent",
        metadata={PREVIEW_FLAG: True, **({layer_meta.PREVIEW_GROUP: group} if group else {})},
        blending="translucent_no_depth",
    )
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and isinstance(existing, _layer_class("points")) and len(existing.data) == len(positions):
        if not np.allclose(existing.data, positions):
            existing.data = positions
        if list(existing.features["caption"]) != list(texts):
            existing.features = {"caption": list(texts)}
            existing.refresh_text()
        return existing
    if existing is not None:
        viewer.layers.remove(existing)
    return viewer.add_points(positions, name=name, **props)


CAPTION_CHAR_PX = 8.5  # screen pixels per caption character at size 9-10 (an upper estimate)


def fit_caption(text: str, tile_px: float, char_px: float = CAPTION_CHAR_PX) -> str:
    """``text`` cut (with an ellipsis) to what fits in ``tile_px`` screen pixels, so that the captions
    of neighbouring tiles never run into each other, however far the view is zoomed out."""
    chars = max(1, int(tile_px / char_px))
    return text if len(text) <= chars else (text[: chars - 1] + "…" if chars > 1 else "…")


class FittedCaptions:
    """Captions over a row of tiles, cut to the tiles' width on screen and re-cut at every zoom."""

    def __init__(self, viewer: Any, name: str, size: int = 10, group: str | None = None):
        self.viewer, self.name, self.size, self.group = viewer, name, size, group
        self.positions: np.ndarray | None = None
        self.texts: list[str] = []
        self.tile_world = 0.0
        viewer.camera.events.zoom.connect(self.refit)

    def show(self, positions: Sequence[Sequence[float]], texts: Sequence[str], tile_world: float) -> None:
        self.positions, self.texts, self.tile_world = np.asarray(positions, float), list(texts), float(tile_world)
        self.refit()

    def refit(self, event: Any = None) -> None:
        if self.positions is None or (event is not None and self.name not in self.viewer.layers):
            return  # nothing shown yet, or the user removed the captions: a zoom does not bring them back
        try:
            width = 0.92 * self.tile_world * float(self.viewer.camera.zoom)
            add_captions(self.viewer, self.name, self.positions, [fit_caption(t, width) for t in self.texts],
                         size=self.size, group=self.group)
        except RuntimeError:  # the viewer is closing
            pass

    def shown(self) -> list[str]:
        return list(self.viewer.layers[self.name].features["caption"]) if self.name in self.viewer.layers else []
