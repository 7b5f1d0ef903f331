"""Correct and fine-tune widget: save painted corrections with provenance, then learn a new model version.

Layer metadata read here (keys: ``layer_meta``; written by the Segment widget when it makes a prediction):

- ``labels_layer.metadata[ORIGINAL]``: the model's prediction as produced (the "original");
  when it is missing, "Start correcting" snapshots the layer before any painting.
- ``labels_layer.metadata[MODEL]`` (or the older ``LEGACY_MODEL``): the model folder or file that made
  the prediction.
- ``image_layer.metadata[AFFINE]`` and ``[SPACING]`` (NIfTI reader), else the layer's scale as spacing,
  and ``[SOURCE_PATH]``: kept with volumes so saved masks overlay them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                            QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from .. import layer_meta
from ..core.config import FinetuneConfig
from ..core.corrections import CorrectionStore
from ._common import ORIGINAL_KEY
from .train import DEVICES, offer_model

DEFAULT_PROJECT = Path.home() / "ramseg-corrections"


class _Failed:
    """What the fine-tune generator returns instead of raising, so the message stays one plain line."""

    def __init__(self, message: str):
        self.message = message


def _finetune_job(model: str, project: str, out_root: str, iterations: int, replay: str | None, device: str,
                  should_stop):
    """The worker's generator: fine-tune progress events, then the result (or a _Failed)."""
    from ..core.finetune import iter_finetune
    from ..errors import one_line

    try:
        result = yield from iter_finetune(model, CorrectionStore(project), out_root, iterations, replay,
                                          device=device, should_stop=should_stop, command="napari Correct and fine-tune")
    except Exception as exc:
        return _Failed(one_line(exc))
    return result


class CorrectFinetuneWidget(QWidget):
    """Pick the image and its predicted Labels layer, save corrections, fine-tune a new model version."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.last_result = None
        self._stop_requested = False

        form = QFormLayout()
        self.image_combo = QComboBox()
        form.addRow("Image", self.image_combo)
        self.labels_combo = QComboBox()
        self.labels_combo.currentTextChanged.connect(self._labels_changed)
        form.addRow("Prediction (Labels)", self.labels_combo)
        self.model_edit = QLineEdit("default")
        self.model_edit.setToolTip("the model that made the prediction: a run folder, a .safetensors file or 'default'")
        form.addRow("Model", self._with_browse(self.model_edit, self._browse_model))
        self.project_edit = QLineEdit(str(DEFAULT_PROJECT))
        self.project_edit.editingFinished.connect(self.refresh_cases)
        form.addRow("Project folder", self._with_browse(self.project_edit, self._browse_project))

        correct_row = QHBoxLayout()
        self.start_button = QPushButton("Start correcting")
        self.start_button.clicked.connect(self.start_correcting)
        self.save_button = QPushButton("Save correction")
        self.save_button.clicked.connect(self.save_correction)
        correct_row.addWidget(self.start_button)
        correct_row.addWidget(self.save_button)
        self.case_list = QListWidget()
        self.case_list.setMaximumHeight(120)

        ft_form = QFormLayout()
        self.models_edit = QLineEdit()
        self.models_edit.setPlaceholderText("<project>/models")
        ft_form.addRow("New models in", self._with_browse(self.models_edit, self._browse_models))
        self.replay_edit = QLineEdit()
        self.replay_edit.setPlaceholderText("optional: source dataset folder to replay")
        ft_form.addRow("Replay data", self._with_browse(self.replay_edit, self._browse_replay))
        self.iterations_spin = QSpinBox()
        self.iterations_spin.setRange(1, 1_000_000)
        self.iterations_spin.setValue(FinetuneConfig().iterations)
        ft_form.addRow("Iterations", self.iterations_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        ft_form.addRow("Device", self.device_combo)
        ft_row = QHBoxLayout()
        self.finetune_button = QPushButton("Fine-tune")
        self.finetune_button.clicked.connect(self.start_finetune)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop_finetune)
        ft_row.addWidget(self.finetune_button)
        ft_row.addWidget(self.stop_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.dice_label = QLabel("")
        self.dice_label.setWordWrap(True)
        self.dice_label.setTextFormat(Qt.RichText)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(correct_row)
        layout.addWidget(QLabel("Saved corrections (split fixed at first save):"))
        layout.addWidget(self.case_list)
        layout.addLayout(ft_form)
        layout.addLayout(ft_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.dice_label)
        layout.addWidget(self.status)
        layout.addStretch(1)  # keep the controls together at the top of a tall dock

        if self.viewer is not None:
            events = self.viewer.layers.events
            for name in ("inserted", "removed", "moved", "reordered"):
                if hasattr(events, name):
                    getattr(events, name).connect(self._layers_changed)
        self.refresh_layers()
        self.refresh_cases()

    # -- builders ----------------------------------------------------------------------------------
    def _with_browse(self, edit: QLineEdit, slot) -> QWidget:
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit)
        button = QPushButton("…")
        button.setMaximumWidth(30)
        button.clicked.connect(slot)
        row.addWidget(button)
        return holder

    def _pick_folder(self, edit: QLineEdit, title: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, title, edit.text() or str(Path.home()))
        if folder:
            edit.setText(folder)

    def _browse_model(self) -> None:
        self._pick_folder(self.model_edit, "Model run folder")

    def _browse_project(self) -> None:
        self._pick_folder(self.project_edit, "Corrections project folder")
        self.refresh_cases()

    def _browse_models(self) -> None:
        self._pick_folder(self.models_edit, "Folder for new model versions")

    def _browse_replay(self) -> None:
        self._pick_folder(self.replay_edit, "Source dataset to replay")

    # -- layers ----------------------------------------------------------------------------------
    def _layers_changed(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and hasattr(layer, "events") and hasattr(layer.events, "name"):
            try:
                layer.events.name.connect(self._layers_changed)
            except Exception:
                pass
        self.refresh_layers()

    def refresh_layers(self) -> None:
        """Refill the layer choices, keeping the current picks where they still exist."""
        if self.viewer is None:
            return
        from napari.layers import Image, Labels

        for combo, kind in ((self.image_combo, Image), (self.labels_combo, Labels)):
            current = combo.currentText()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        self._labels_changed(self.labels_combo.currentText())

    def _layer(self, name: str, kind: str):
        if not name or self.viewer is None or name not in self.viewer.layers:
            raise ValueError(f"choose {kind} layer first")
        return self.viewer.layers[name]

    def _labels_changed(self, name: str) -> None:
        if self.viewer is None or not name or name not in self.viewer.layers:
            return
        model = layer_meta.model_of(self.viewer.layers[name].metadata)
        if model:
            self.model_edit.setText(str(model))

    # -- correcting ------------------------------------------------------------------------------
    def start_correcting(self) -> None:
        """Keep the prediction as "original" (unless the Segment widget already did) and switch to painting."""
        from napari.utils.notifications import show_error

        try:
            layer = self._layer(self.labels_combo.currentText(), "a Labels")
        except ValueError as exc:
            show_error(str(exc))
            return
        if layer.metadata.get(ORIGINAL_KEY) is None or np.shape(layer.metadata[ORIGINAL_KEY]) != np.shape(layer.data):
            layer.metadata[ORIGINAL_KEY] = np.array(layer.data, copy=True)
        try:
            self.viewer.layers.selection.active = layer
            layer.mode = "paint"
        except Exception:
            pass
        self._set_status(f"Paint your fixes on “{layer.name}” (label 0 erases), then press Save correction.")

    def store(self) -> CorrectionStore:
        return CorrectionStore(Path(self.project_edit.text().strip() or DEFAULT_PROJECT).expanduser())

    def model_path(self) -> Path:
        from ..models import resolve_model

        return resolve_model(self.model_edit.text().strip() or "default")

    def save_correction(self) -> str | None:
        """Write image, original and corrected mask with provenance to the project folder now."""
        from napari.utils.notifications import show_error, show_info, show_warning

        from ..errors import one_line

        try:
            image_layer = self._layer(self.image_combo.currentText(), "an image")
            labels_layer = self._layer(self.labels_combo.currentText(), "a Labels")
            if getattr(image_layer, "multiscale", False):
                raise ValueError("multiscale images cannot be saved as corrections")
            image = np.asarray(image_layer.data)
            final = np.asarray(labels_layer.data)
            original = labels_layer.metadata.get(ORIGINAL_KEY)
            snapshot = True
            if original is None or np.shape(original) != final.shape:
                show_warning("No prediction snapshot (press Start correcting before painting); "
                             "the current mask is saved as both original and final.")
                original, snapshot = final.copy(), False
            meta = {k: image_layer.metadata[k] for k in (layer_meta.AFFINE, layer_meta.SPACING, layer_meta.SOURCE_PATH)
                    if k in image_layer.metadata}
            if image.ndim == 3 and not image_layer.rgb and layer_meta.SPACING not in meta:
                meta[layer_meta.SPACING] = [float(s) for s in image_layer.scale]
            meta.update({"layer": image_layer.name, "labels_layer": labels_layer.name,
                         "original_snapshot": "segment widget or start correcting" if snapshot else "none",
                         "source": image_layer.source.path if getattr(image_layer, "source", None) else None})
            case_id = self.store().save(image, np.asarray(original), final, self.model_path(), image_layer.name, meta)
        except Exception as exc:
            message = f"Could not save the correction: {one_line(exc)}"
            show_error(message)
            self._set_status(message)
            return None
        split = self.store().split_of(case_id)
        self.refresh_cases()
        text = f"Saved {case_id} ({'held out for validation' if split == 'val' else 'training'}) in {self.store().root}"
        self._set_status(text)
        show_info(text)
        return case_id

    def refresh_cases(self) -> list[str]:
        self.case_list.clear()
        try:
            store = self.store()
            cases = store.list_cases()
            splits = store.splits()
        except Exception as exc:
            self._set_status(f"Cannot read the project folder: {exc}")
            return []
        for case_id in cases:
            self.case_list.addItem(f"{case_id}  [{splits.get(case_id, '?')}]")
        return cases

    # -- fine-tuning -----------------------------------------------------------------------------
    def models_root(self) -> Path:
        text = self.models_edit.text().strip()
        return Path(text).expanduser() if text else self.store().root / "models"

    def start_finetune(self):
        """Run a fine-tune round in a thread; progress, result and errors come back as signals."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error

        if self.worker is not None:
            return self.worker
        try:
            model = self.model_path()
            if not self.store().list_cases():
                raise ValueError("save at least one correction before fine-tuning")
        except Exception as exc:
            show_error(str(exc))
            self._set_status(str(exc))
            return None
        self._stop_requested = False
        replay = self.replay_edit.text().strip() or None
        iterations = self.iterations_spin.value()
        self.progress.setRange(0, iterations)
        self.progress.setValue(0)
        self.dice_label.setText("")
        self.worker = create_worker(
            _finetune_job, str(model), str(self.store().root), str(self.models_root()), iterations, replay,
            self.device_combo.currentText(), lambda: self._stop_requested,
            _connect={"yielded": self._on_progress, "returned": self._on_returned, "errored": self._on_error,
                      "finished": self._on_finished},
            _start_thread=False,
        )
        self.finetune_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self._set_status("Fine-tuning …")
        self.worker.start()
        return self.worker

    def stop_finetune(self) -> None:
        """Ask the round to stop after the current step; nothing is written."""
        self._stop_requested = True
        self._set_status("Stopping …")

    def _on_progress(self, event: Any) -> None:
        if event.phase == "train":
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.iteration)
            self._set_status(f"Fine-tuning {event.iteration}/{event.total}: loss {event.losses.get('loss', float('nan')):.4f}")
        elif event.message:
            self._set_status(event.message + ("" if event.dice is None else f": {event.dice:.3f}"))

    def _on_returned(self, result: Any) -> None:
        from napari.utils.notifications import show_error, show_info

        if isinstance(result, _Failed):
            self._set_status(f"Fine-tuning failed: {result.message}")
            show_error(f"Fine-tuning failed: {result.message}")
            return
        self.last_result = result
        if result.stopped or result.model_dir is None:
            self._set_status("Fine-tuning stopped; no new model was written.")
            return
        if result.before_dice is None:
            self.dice_label.setText("No held-out corrections yet (the 3rd saved image is the first one held out).")
        else:
            n = len(result.val_cases)
            change = result.after_dice - result.before_dice
            self.dice_label.setText(f"Dice on {n} held-out correction{'s' if n != 1 else ''}: "
                                    f"<b>before {result.before_dice:.3f} → after {result.after_dice:.3f}</b> "
                                    f"({change:+.3f})")
        self.model_edit.setText(str(result.model_dir))  # the new version is now this widget's model
        taken = offer_model(self.viewer, result.model_dir)
        where = "loaded in the Segment widget" if taken else "open the Segment widget to segment with it"
        text = f"New model {result.version} (round {result.round}) in {result.model_dir}; {where}."
        self._set_status(text)
        show_info(text)

    def _on_error(self, exc: BaseException) -> None:  # only for errors outside the job's own handling
        from napari.utils.notifications import show_error

        from ..errors import one_line

        self._set_status(f"Fine-tuning failed: {one_line(exc)}")
        show_error(f"Fine-tuning failed: {one_line(exc)}")

    def _on_finished(self) -> None:
        self.worker = None
        self.finetune_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
