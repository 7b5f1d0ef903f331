"""Restoration preview: the DSIR decoder's image for every source domain of a model, next to the
input, the input blurred to the decoder's scale, and the predicted mask.

Layout on the canvas, right of the chosen image in a place of its own (``_placement``: below any other
preview, such as the mixup of the same image; layers over it are hidden, the view is fitted to it)::

    [image]   [predicted mask]
              [input, blurred to 1/16]   [restored as <domain 1>]   [restored as <domain 2>]  ...

For a volume, the slice under the viewer's current position is used (with its 2.5D neighbours).

What it shows, honestly: the decoder sees only the encoder's bottleneck, 1/16 of the working
resolution, with no skip connections (by design: it regularises the encoder during training and is
never used to segment). Fine structure such as vessels cannot pass through it, so a restoration is
a blurred field: the colour, brightness and coarse layout that each source domain's style gives this
image. The blurred input beside the restorations is what "perfect" would look like at that scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from qtpy.QtWidgets import QFormLayout, QPushButton, QWidget

from .. import layer_meta
from ...errors import RamsegInputError
from ...palette import label_color
from ._base import DockWidget, note_label
from ._common import (
    PREVIEW_FLAG,
    FittedCaptions,
    JobControl,
    Progress,
    get_predictor,
    layer_array,
    notify_error,
    upsert_layer,
    world_box,
)
from ._placement import hidden_note, place, show_in_view, uncover
from .segment import input_kind, layer_spacing

GAP = 0.04  # between tiles in a row, as a fraction of the tile size
ROW_GAP = 0.15  # between the rows, room for the captions
MASK_LAYER = "predicted mask (restoration preview)"
LOW_PASS_LAYER = "input at the decoder's scale (restoration preview)"
GROUP = "restoration preview"  # layer_meta.PREVIEW_GROUP of its layers
EXPLANATION = (
    "The restoration decoder rebuilds the image from the encoder's deepest features alone: 1/16 of the "
    "resolution, no skip connections. Fine anatomy (vessels) cannot pass through it, so each tile shows "
    "the colour, brightness and coarse layout that one source domain's style gives this image. The first "
    "tile of the lower row ('input at 1/16') is the input blurred to that scale: what a perfect restoration "
    "would look like. "
    "Training uses this branch to make the encoder keep the image's content; segmenting never uses it.")


@dataclass
class RestorationResult:
    restored: dict[str, np.ndarray]  # domain -> (h, w, 3) or (h, w) in [0, 1]
    labels: np.ndarray  # (H, W) class indices of the input plane
    low_pass: np.ndarray  # the decoder's input image averaged over its bottleneck cells, like ``restored``
    class_names: list[str]
    slice_index: int | None
    factor: int = 16  # the bottleneck's downsampling


def to_display(out: np.ndarray) -> np.ndarray:
    """(C, h, w) in [-1, 1] -> (h, w, 3) or (h, w) in [0, 1]."""
    rgb = ((np.moveaxis(out, 0, -1) + 1.0) / 2.0).clip(0.0, 1.0).astype(np.float32)
    return rgb[..., 0] if rgb.shape[-1] == 1 else rgb


def low_pass_prepared(x: torch.Tensor, shape: tuple[int, int], factor: int) -> np.ndarray:
    """A prepared (C, H, W) network input at ``shape``, averaged over ``factor`` x ``factor`` cells (the
    bottleneck's grid) and smoothly upsampled again: (C, h, w) in [-1, 1]."""
    from ...core.data.geometry import resize_image

    small = F.avg_pool2d(resize_image(x, shape)[None], factor, ceil_mode=True)
    return F.interpolate(small, size=shape, mode="bilinear", align_corners=False)[0].numpy()


def low_pass(image: np.ndarray, shape: tuple[int, int], factor: int, in_channels: int) -> np.ndarray:
    """:func:`low_pass_prepared` of a raw 2D image, normalised as for prediction."""
    from ...core.data.preprocess import to_model_channels

    try:
        x = torch.tensor(to_model_channels(image, in_channels))  # a copy: the layer's array may be read-only
    except ValueError as exc:
        raise RamsegInputError(str(exc)) from None
    return low_pass_prepared(x, shape, factor)


def restoration_job(image: np.ndarray, kind: str, z: int | None, model: Path, device: str,
                    spacing: tuple[float, ...] | None = None):
    """The job: restore the image (a volume: slice ``z``) as every source domain and predict its mask.

    The predictor prepares the input once (``Predictor.prepare``: for a volume the 2.5D slice,
    normalised over the volume, as the Segment dock sees it); the restorations, the blurred input and
    the mask are all made from that one tensor, at one size."""

    def job(control: JobControl):
        from ...core.inference.predictor import labels_from_probabilities

        yield Progress(0, 0, "loading model…")
        predictor = get_predictor(model, device)
        yield Progress(0, 0, "restoring…" if kind != "volume" else f"restoring slice {z}…")
        x = predictor.prepare(image, z if kind == "volume" else None)
        shape = predictor.input_shape(*x.shape[-2:], volume=kind == "volume", spacing=spacing)
        restored = predictor.restore_prepared(x, shape)
        probs = predictor.predict_prepared(x, shape)
        labels = labels_from_probabilities(probs, predictor.labels, predictor.threshold)
        display = {domain: to_display(out) for domain, out in restored.items()}
        factor = int(predictor.model.stride)
        blurred = low_pass_prepared(x, shape, factor)
        return RestorationResult(display, labels, to_display(blurred), list(predictor.labels.names), z, factor)

    return job


class RestorationPreviewWidget(DockWidget):
    """Image layer + model -> one 'restored as <domain>' layer per source domain, plus the mask."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        form = QFormLayout()
        self.image_combo, self.model_picker, self.device_combo = self.add_image_model_device(form)
        self.run_button = QPushButton("Restore")
        self.runner = self.add_job_runner()
        self.explanation = note_label(EXPLANATION)
        self.lay_out(form, self.run_button, self.runner, self.explanation)
        self._captions: FittedCaptions | None = None  # cut to the tiles' width at every zoom
        self.run_button.clicked.connect(lambda: self.restore())
        self.runner.busy_changed.connect(lambda busy: self.run_button.setEnabled(not busy))

    def set_model(self, path: str | Path | None) -> None:
        """Use this run folder or model file (None: the bundled default)."""
        self.model_picker.set_model(path)

    def restore(self, run_sync: bool | None = None) -> Any:
        """Start the restoration preview for the chosen layer; returns the worker (None if refused)."""
        layer = self.image_combo.current_layer()
        try:
            if layer is None:
                raise RamsegInputError("no image layer: open an image first")
            kind = input_kind(layer)
            image = layer_array(layer)
            z = None
            if kind == "volume":
                coords = np.asarray(layer.world_to_data(self.viewer.dims.point), dtype=float)
                z = int(np.clip(np.round(coords[0]), 0, image.shape[0] - 1))
            job = restoration_job(image, kind, z, self.model_picker.model_path(), self.device_combo.value(),
                                  spacing=layer_spacing(layer) if kind == "volume" else None)
        except RamsegInputError as exc:
            notify_error(str(exc))
            return None
        return self.runner.start(job, on_result=lambda result: self._show(layer, result),
                                 description=f"restoring '{layer.name}'…", run_sync=run_sync)

    def _show(self, layer: Any, result: RestorationResult) -> Iterator[None]:
        """One layer per step: JobRunner runs each in its own event-loop tick, so the viewer stays live.

        The tiles go in the preview's own place (``_placement``): right of the image, below any other
        preview; the layers over it are hidden and the view is fitted to it."""
        viewer = self.viewer
        active = viewer.layers.selection.active
        _, size = world_box(layer)
        height, width = result.labels.shape
        pixel = size / np.array([height, width])
        step = size * (1 + np.array([ROW_GAP, GAP]))  # one tile plus a gap, (rows, columns) in world units
        columns = 1 + len(result.restored)
        extent = np.array([step[0] + size[0], (columns - 1) * step[1] + size[1]])
        corner = place(viewer, layer, GROUP, extent, step[1] - size[1])
        hidden = uncover(viewer, (corner, corner + extent), keep=[layer])
        meta = {PREVIEW_FLAG: True, layer_meta.SOURCE_LAYER: layer.name, layer_meta.PREVIEW_GROUP: GROUP}
        colors = {0: "transparent", None: "transparent"}
        colors.update({i: label_color(i) for i in range(1, len(result.class_names) + 1)})
        upsert_layer(viewer, MASK_LAYER, result.labels, "labels", scale=tuple(pixel), colormap=colors,
                     translate=tuple(corner + 0.5 * pixel), metadata=meta)
        yield
        stale = [lyr for lyr in viewer.layers if lyr.name.startswith("restored as ")
                 and lyr.name[len("restored as "):] not in result.restored]
        for old in stale:
            viewer.layers.remove(old)
        # first row: the mask; second row: the blurred input, then one restoration per domain
        tiles = {LOW_PASS_LAYER: result.low_pass, **{f"restored as {d}": im for d, im in result.restored.items()}}
        corners = [corner]
        for i, (name, image) in enumerate(tiles.items()):
            h, w = image.shape[:2]
            scale = size / np.array([h, w])
            tile_corner = corner + [step[0], i * step[1]]
            upsert_layer(viewer, name, image, "image", rgb=image.ndim == 3, scale=tuple(scale),
                         translate=tuple(tile_corner + 0.5 * scale), contrast_limits=(0.0, 1.0), metadata=meta)
            corners.append(tile_corner)
            yield
        where = "" if result.slice_index is None else f" (slice {result.slice_index})"
        if self._captions is None:
            self._captions = FittedCaptions(viewer, "restoration captions", group=GROUP)
        self._captions.show(corners, [f"predicted mask{where}", f"input at 1/{result.factor}",
                                      *[f"as {d}" for d in result.restored]], float(size[1]))
        if active is not None and active in viewer.layers:
            viewer.layers.selection.active = active
        show_in_view(viewer, GROUP)
        self.runner.status.setText(
            f"{len(result.restored)} source domains restored{where}, from the 1/{result.factor} bottleneck: "
            "colour and coarse layout, not fine detail (see below)." + hidden_note(hidden))
