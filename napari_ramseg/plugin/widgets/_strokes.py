"""Strokes in the Correct dock: draw what a structure is (or is not), press Refine, the mask follows.

The strokes live in a Labels layer of their own beside the prediction (``layer_meta.STROKES`` names the
prediction layer it belongs to; layer pickers never offer it): each stroked pixel holds the class the
mask should have there, 255 for background, 0 where nothing was drawn (``core/review/refine.py``'s format, the
same file ``ramseg refine --strokes`` reads). Refine runs ``core.review.refine.refine_case`` in the dock's
background job: the scan is segmented once (its probabilities kept for the next strokes), and every
Refine refines from all the strokes drawn so far, starting from the mask as it was before the first
stroke or as it was last painted by hand. Undo puts back the mask and the strokes before the last Refine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from .. import layer_meta
from ...core.review.refine import BACKGROUND_STROKE
from ._common import ORIGINAL_KEY, Progress

BRUSH_SIZE = 3  # napari's brush, in pixels: thin enough to follow a vessel
# Colours that stand out from a fundus' reds and from the mask's own (palette.LABEL_COLORS): "this is
# not" magenta, "this is <class>" lime, white, then blue.
STROKE_COLOURS = {0: "transparent", None: "transparent", BACKGROUND_STROKE: "#ff3df5", 1: "#7cff4f", 2: "#ffffff",
                  3: "#4f7bff"}


@dataclass
class _Step:
    """What Undo puts back: the mask before one Refine, the strokes the Refine before it used, and the start."""

    mask: np.ndarray
    strokes: np.ndarray
    start: np.ndarray | None


def strokes_name(labels_name: str) -> str:
    return f"{labels_name} strokes"


class StrokesPanel(QWidget):
    """The dock's strokes row: what a stroke means, Draw strokes, Refine and Undo."""

    def __init__(self, dock: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.dock = dock
        self.meaning = QComboBox()
        self.meaning.setToolTip("what the next stroke says about the pixels it covers")
        self.meaning.currentIndexChanged.connect(lambda _: self._use_meaning())
        self.draw_button = QPushButton("Draw strokes")
        self.draw_button.setToolTip("paint on the image what a structure is (or is not), then press Refine")
        self.draw_button.clicked.connect(lambda: self.draw())
        self.refine_button = QPushButton("Refine")
        self.refine_button.setToolTip("the mask follows all the strokes drawn so far")
        self.refine_button.clicked.connect(lambda: self.refine())
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("put back the mask and the strokes before the last Refine")
        self.undo_button.clicked.connect(lambda: self.undo())
        row = QHBoxLayout()
        for button in (self.draw_button, self.refine_button, self.undo_button):
            row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.meaning)
        layout.addLayout(row)
        self.history: list[_Step] = []
        self.start: np.ndarray | None = None  # the mask the strokes refine
        self.refined: np.ndarray | None = None  # the last Refine's mask: anything else was painted by hand
        self.refined_strokes: np.ndarray | None = None  # the strokes the last Refine used
        self.case: tuple[Any, Any] | None = None  # (what was segmented, its CaseResult)
        self.layer_name = ""  # the prediction layer the history above belongs to
        self.set_classes(("vessel",))
        self._update_buttons()

    # -- the strokes layer -----------------------------------------------------------------------
    def set_classes(self, names: tuple[str, ...]) -> None:
        """Offer "this is <name>" for each class of the model, and "this is background"."""
        self.meaning.blockSignals(True)
        self.meaning.clear()
        for value, name in enumerate(names, start=1):
            self.meaning.addItem(f"this is {name}", value)
        self.meaning.addItem(f"this is not {' / '.join(names)} (background)", BACKGROUND_STROKE)
        self.meaning.blockSignals(False)
        self._use_meaning()

    def stroke_value(self) -> int:
        return int(self.meaning.currentData())

    def set_meaning(self, value: int) -> None:
        """Choose what the next stroke means by its value (a class index, or 255 for background)."""
        index = self.meaning.findData(int(value))
        if index < 0:
            raise ValueError(f"no stroke means {value} for this model")
        self.meaning.setCurrentIndex(index)

    def strokes_layer(self, labels: Any, create: bool = False) -> Any:
        """The strokes layer of the Labels layer ``labels`` (made, empty, when ``create``)."""
        viewer = self.dock.viewer
        name = strokes_name(labels.name)
        if name in viewer.layers:
            return viewer.layers[name]
        if not create:
            return None
        return viewer.add_labels(np.zeros(np.shape(labels.data), np.uint8), name=name, scale=labels.scale,
                                 translate=labels.translate, opacity=1.0, colormap=STROKE_COLOURS,
                                 metadata={layer_meta.STROKES: labels.name})

    def draw(self) -> Any:
        """Make (or pick) the strokes layer, select it and paint with the chosen meaning."""
        labels = self.dock.current_labels()
        if labels is None:
            return None
        layer = self.strokes_layer(labels, create=True)
        self.dock.viewer.layers.selection.active = layer
        layer.brush_size = BRUSH_SIZE
        layer.mode = "paint"
        self._use_meaning()
        self.dock.say("Draw on the image with the meaning chosen above, then press Refine.")
        return layer

    def _use_meaning(self) -> None:
        labels = self.dock.current_labels(quiet=True)
        layer = None if labels is None else self.strokes_layer(labels)
        if layer is not None and self.meaning.count():
            layer.selected_label = self.stroke_value()

    # -- refining --------------------------------------------------------------------------------
    def refine(self, run_sync: bool | None = None) -> Any:
        """Refine the chosen prediction from its strokes as a background job; returns its worker."""
        labels = self.dock.current_labels()
        self.follow(labels)
        layer = None if labels is None else self.strokes_layer(labels)
        if layer is None or not np.any(layer.data):
            self.dock.say("Draw strokes first (Draw strokes), then press Refine.", error=True)
            return None
        image_layer = self.dock.current_image()
        if image_layer is None:
            return None
        try:
            model = self.dock.model_path()
        except Exception as exc:
            self.dock.say(str(exc), error=True)
            return None
        mask = np.array(labels.data, copy=True)
        if labels.metadata.get(ORIGINAL_KEY) is None or np.shape(labels.metadata[ORIGINAL_KEY]) != mask.shape:
            labels.metadata[ORIGINAL_KEY] = mask.copy()  # the correction's "original", as Start correcting keeps it
        if self.start is None or self.refined is None or not np.array_equal(mask, self.refined):
            self.start = mask  # painted by hand since the last Refine (or the first stroke): refine from here
        strokes = np.array(layer.data, np.uint8, copy=True)
        before = np.zeros_like(strokes) if self.refined_strokes is None else self.refined_strokes
        step = _Step(mask, before, self.start)
        key = (image_layer.name, id(image_layer.data), str(model))
        case = self.case[1] if self.case is not None and self.case[0] == key else None
        job = refine_job(model, self.dock.device_combo.value(), np.asarray(image_layer.data), image_layer.rgb,
                         strokes, self.start, case)
        return self.dock.runner.start(job, on_result=lambda out: self._refined(out, labels, step, strokes, key),
                                      description="Refining …", run_sync=run_sync)

    def _refined(self, out: Any, labels: Any, step: _Step, strokes: np.ndarray, key: tuple) -> None:
        if not isinstance(out, tuple):  # failed or stopped: the runner has said why
            return
        refined, result = out
        self.case = (key, result)
        self.history.append(step)
        labels.data = refined
        self.refined, self.refined_strokes = refined, strokes
        changed = int(np.count_nonzero(refined != step.mask))
        self.dock.say(f"Refined from {int(np.count_nonzero(strokes))} stroked pixels: {changed} pixels changed.")
        self._update_buttons()

    def undo(self) -> bool:
        """Put back the mask and the strokes before the last Refine."""
        labels = self.dock.current_labels()
        self.follow(labels)
        if labels is None or not self.history:
            self.dock.say("Nothing to undo.")
            return False
        step = self.history.pop()
        labels.data = step.mask
        layer = self.strokes_layer(labels, create=True)
        layer.data = step.strokes
        # the mask put back is the previous Refine's (or the start, refined from again next time)
        self.start, self.refined = step.start, (np.array(step.mask) if self.history else None)
        self.refined_strokes = np.array(step.strokes) if self.history else None
        self.dock.say("Undone: the mask and the strokes are as they were before the last Refine.")
        self._update_buttons()
        return True

    def follow(self, labels: Any) -> None:
        """Forget the history of another prediction layer: Undo never reaches across layers."""
        name = "" if labels is None else labels.name
        if name != self.layer_name:
            self.history, self.start, self.refined, self.refined_strokes = [], None, None, None
            self.layer_name = name
            self._update_buttons()

    def saved_strokes(self, labels: Any) -> np.ndarray | None:
        """The strokes to keep with a correction of ``labels`` (None when none were drawn)."""
        layer = self.strokes_layer(labels)
        return None if layer is None or not np.any(layer.data) else np.asarray(layer.data, np.uint8)

    def _update_buttons(self) -> None:
        self.undo_button.setEnabled(bool(self.history))


def refine_job(model: Any, device: str, image: np.ndarray, rgb: bool, strokes: np.ndarray, start: np.ndarray,
               case: Any):
    """The job: segment the scan (unless ``case`` holds it already) and refine from the strokes
    (``core.review.refine.refine_case``, as ``ramseg refine``); it returns (the refined mask, the CaseResult)."""

    def job(control):
        from ...core.inference.predictor import Predictor
        from ...core.review.refine import refine_case
        from ...io import ImageData

        yield Progress(0, 0, "Segmenting the scan …" if case is None else "Refining …")
        predictor = Predictor.from_path(model, device=device)
        axes = "YXC" if rgb else ("ZYX" if image.ndim == 3 else "YX")
        refined, result = refine_case(predictor, ImageData(array=image, axes=axes), strokes, start, result=case)
        return refined, result

    return job
