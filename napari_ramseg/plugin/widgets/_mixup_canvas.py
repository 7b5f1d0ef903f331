"""Where the mixup preview draws: the mosaic, the spectra, the mixing window and the captions.

The preview has a place of its own (``_placement``): right of its image, below any other preview it
would meet; layers over it are hidden and the view fitted to it when it is made.
Only what changed is touched (every napari update costs a redraw). Captions are numbered ("1 · name")
and cut to their tile's width on screen, and re-cut when the view zooms, so several partners' captions
never run into each other; the dock lists the partners' full names under the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import layer_meta
from ...core.method.ram import window_bounds
from ._common import PREVIEW_FLAG, FittedCaptions, upsert_layer, world_box
from ._mixup_tiles import PreviewImage, mosaic
from ._placement import place, show_in_view, uncover

GAP = 0.04  # space between tiles, as a fraction of the tile size
ROW_GAP = 0.15  # space between the mosaic and the spectra row, room for the captions
CAPTION_SIZE = 9


def tile_names(partners: list[PreviewImage]) -> list[str]:
    """The mosaic's full captions: the original, then each partner under its number."""
    return ["original", *[f"{i} · {p.name}" for i, p in enumerate(partners, 1)]]


class MixupCanvas:
    """The preview's layers for one viewer; ``show`` puts a result up (its captions follow the zoom)."""

    def __init__(self, viewer: Any):
        self.viewer = viewer
        self._spectra_key: tuple | None = None
        self._captions: FittedCaptions | None = None

    def show(self, layer: Any, original: PreviewImage, partners: list[PreviewImage], display: np.ndarray,
             window_ratio: float, focus: bool = False) -> list[str]:
        """Put a result up, in the preview's own place (``_placement``). ``focus`` (and a first show)
        hides the layers over it and fits the view to it; returns the names of the layers hidden."""
        viewer = self.viewer
        active = viewer.layers.selection.active
        h, w = display.shape[1:3]
        gap = max(2, round(GAP * max(h, w)))
        name = layer.name
        group = f"mixup: {name}"
        focus = focus or group not in viewer.layers  # the mosaic layer bears the group's name: a first show
        size = world_box(layer)[1]
        scale = size / np.array([h, w])  # one preview pixel in world units: tiles match the image's size
        n = 1 + len(partners)
        row_step = h + max(gap, round(ROW_GAP * h))
        extent = np.array([row_step + h, n * w + (n - 1) * gap]) * scale
        corner = place(viewer, layer, group, extent, gap * scale[1])
        hidden = []
        if focus:  # what lies over the tiles, and the partners lying over the image itself
            hidden = uncover(viewer, (corner, corner + extent), keep=[layer])
            origin, _ = world_box(layer)
            hidden += uncover(viewer, (origin, origin + size), keep=[layer], only=[p.name for p in partners])
        top_row = corner + 0.5 * scale
        bottom_row = top_row + np.array([row_step * scale[0], 0.0])
        geometry = {"scale": tuple(scale), "translate": tuple(top_row)}
        spectra_geometry = {"scale": tuple(scale), "translate": tuple(bottom_row)}
        meta = {PREVIEW_FLAG: True, layer_meta.PREVIEW_GROUP: group}

        upsert_layer(viewer, f"mixup: {name}", mosaic(display, gap), "image", rgb=True,
                     contrast_limits=(0.0, 1.0), metadata=meta, **geometry)

        # spectra depend only on the images, not on L or lam: rebuilt when the images change
        spectra_name = f"spectra: {name}"
        spectra_key = (id(original), *[id(p) for p in partners], tuple(scale), tuple(bottom_row))
        if spectra_name not in viewer.layers or self._spectra_key != spectra_key:
            spectra = np.stack([original.spectrum, *[p.spectrum for p in partners]])
            lo, hi = np.percentile(spectra, (1, 99.8))
            upsert_layer(viewer, spectra_name, mosaic(spectra, gap, fill=float(lo)), "image", colormap="inferno",
                         contrast_limits=(float(lo), float(hi)), metadata=meta, **spectra_geometry)
            self._spectra_key = spectra_key

        r0, r1, c0, c1 = window_bounds(h, w, window_ratio)
        rects = [np.array([[r0 - 0.5, i * (w + gap) + c0 - 0.5], [r1 - 0.5, i * (w + gap) + c1 - 0.5]])
                 for i in range(n)]
        shapes_name = f"mixing window: {name}"
        shapes = viewer.layers[shapes_name] if shapes_name in viewer.layers else None
        if shapes is not None and shapes.nshapes == n:
            boxes = [np.array([d.min(axis=0), d.max(axis=0)]) for d in shapes.data]
            if not all(np.allclose(a, b) for a, b in zip(boxes, rects)):
                shapes.data = [(r, "rectangle") for r in rects]
            for key, value in spectra_geometry.items():
                if not np.allclose(getattr(shapes, key), value):
                    setattr(shapes, key, value)
        else:
            if shapes is not None:
                viewer.layers.remove(shapes)
            viewer.add_shapes(rects, shape_type="rectangle", name=shapes_name, edge_color="cyan",
                              face_color="transparent", edge_width=max(1.0, h / 128), metadata=meta,
                              **spectra_geometry)

        step = (w + gap) * scale[1]
        below = corner + np.array([row_step * scale[0], 0.0])
        positions = np.array([corner + [0, i * step] for i in range(n)] + [below + [0, i * step] for i in range(n)])
        texts = tile_names(partners) + ["|F| original", *[f"|F| {i}" for i in range(1, n)]]
        if self._captions is None or self._captions.name != f"mixup captions: {name}":
            self._captions = FittedCaptions(viewer, f"mixup captions: {name}", size=CAPTION_SIZE, group=group)
        self._captions.show(positions, texts, float(w * scale[1]))
        if active is not None and active in viewer.layers:
            viewer.layers.selection.active = active
        if focus:
            show_in_view(viewer, group)
        return hidden

    def caption_texts(self) -> tuple[list[str], list[str]]:
        """(full captions, as shown at the current zoom)."""
        if self._captions is None:
            return [], []
        return list(self._captions.texts), self._captions.shown()
