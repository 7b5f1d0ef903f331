"""Correct and fine-tune widget: save painted corrections with provenance, then learn a new model version.

Layer metadata read here (keys: ``layer_meta``; written by the Segment widget when it makes a prediction):

- ``labels_layer.metadata[ORIGINAL]``: the model's prediction as produced (the "original");
  when it is missing, "Start correcting" snapshots the layer before any painting.
- ``labels_layer.metadata[MODEL]`` (or the older ``LEGACY_MODEL``): the model folder or file that made
  the prediction; choosing the layer chooses that model.
- ``image_layer.metadata[AFFINE]`` and ``[SPACING]`` (NIfTI reader), else the layer's scale as spacing,
  and ``[SOURCE_PATH]``: kept with volumes so saved masks overlay them.

Built like every dock (``_base.DockWidget``): layer pickers that never offer preview layers, the shared
model and device pickers, the fine-tune round as a background job (``JobRunner``: progress, Stop, one
status line), its settings' defaults from ``core.config.FinetuneConfig``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QListWidget, QPushButton, QWidget

from .. import layer_meta
from ...core.config import FinetuneConfig
from ...core.finetune.corrections import CorrectionStore
from ._base import WARNING_COLOUR, DockWidget
from ._common import ORIGINAL_KEY, JobControl, Progress
from ._handover import offer_model
from ._server import SERVER, ServerRound, remote_model_name, server_finetune_job
from ._strokes import StrokesPanel
from ._train_options import FINETUNE_ITERATIONS, FINETUNE_MORE, MoreOptions

DEFAULT_PROJECT = Path.home() / "ramseg-corrections"
ITERATIONS = FINETUNE_ITERATIONS  # the round's other settings fold away under "More options"


def finetune_job(model: Path, project: Path, out_root: Path, settings: FinetuneConfig, replay: str | None,
                 target_style: str | None = None):
    """The job: one fine-tune round (``core.finetune.round.iter_finetune``), its events as progress; it returns
    the :class:`~napari_ramseg.core.finetune.round.FinetuneResult`. Stop asks the round to stop after its step
    (nothing is written) and the result still says so. ``target_style``: a folder of unlabelled scans
    of the new site, whose style RAM mixes in (target-style RAM)."""

    def job(control: JobControl):
        from ...core.finetune.round import iter_finetune

        events = iter_finetune(str(model), CorrectionStore(project), str(out_root), settings, replay,
                               should_stop=control.cancelled, command="napari Correct and fine-tune",
                               target_style=target_style)
        done, total = 0, settings.iterations
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                return stop.value
            if event.phase == "train":
                done, total = event.iteration, event.total
                text = f"Fine-tuning {done}/{total}: loss {(event.losses or {}).get('loss', float('nan')):.4f}"
            else:
                text = event.message + ("" if event.dice is None else f": {event.dice:.3f}")
            yield Progress(done, total, text)

    return job


class CorrectFinetuneWidget(DockWidget):
    """Pick the image and its predicted Labels layer, save corrections, fine-tune a new model version."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        from napari.layers import Labels

        super().__init__(napari_viewer, parent)
        self.last_result = None

        form = QFormLayout()
        self.image_combo = self.add_layer_choice(form, "Image")
        self.labels_combo = self.add_layer_choice(form, "Prediction (Labels)", Labels)
        self.model_picker = self.add_model_choice(form, "Model")
        self.model_picker.setToolTip("the model that made the prediction (choosing the Labels layer chooses it)")
        self.model_edit = self.model_picker.path_edit  # the picker's run folder / file field
        self.project_edit = self.add_path(form, "Project folder", "Corrections project folder",
                                          text=str(DEFAULT_PROJECT), then=self.refresh_cases)
        self.project_edit.editingFinished.connect(self.refresh_cases)

        correct_row = QHBoxLayout()
        self.start_button = QPushButton("Start correcting")
        self.start_button.clicked.connect(self.start_correcting)
        self.save_button = QPushButton("Save correction")
        self.save_button.clicked.connect(self.save_correction)
        correct_row.addWidget(self.start_button)
        correct_row.addWidget(self.save_button)
        self.strokes = StrokesPanel(self)  # draw what is (not) the structure, Refine, Undo
        self.case_list = QListWidget()
        self.case_list.setMaximumHeight(120)

        ft_form = QFormLayout()
        self.models_edit = self.add_path(ft_form, "New models in", "Folder for new model versions",
                                         placeholder="<project>/models")
        self.replay_edit = self.add_path(ft_form, "Replay data", "Source dataset to replay",
                                         placeholder="optional: source dataset folder to replay")
        self.target_style_edit = self.add_path(ft_form, "New site's scans", "Unlabelled scans of the new site",
                                               placeholder="optional: their style joins RAM's partners",
                                               tooltip="Unlabelled scans of the site the model is tuned for: their "
                                                       "low-frequency amplitude (style) is mixed into the training "
                                                       "images as RAM partners, with the consistency loss on them")
        self.iterations = self.add_param(ft_form, ITERATIONS)
        self.iterations_spin = self.iterations.native
        self.device_combo = self.add_device_choice(ft_form, "Device", server=True)
        self.more = MoreOptions(params=FINETUNE_MORE)
        ft_form.addRow(self.more)
        self.finetune_button = QPushButton("Fine-tune")
        self.finetune_button.clicked.connect(lambda: self.start_finetune())
        self.runner = self.add_job_runner()  # progress, Stop and the one status line of this dock
        self.progress, self.stop_button, self.status = self.runner.progress, self.runner.stop_button, self.runner.status
        self.stop_button.setToolTip("stop after the current step; no new model is written")
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)  # paths, to copy
        self.dice_label = QLabel("")
        self.dice_label.setWordWrap(True)
        self.dice_label.setTextFormat(Qt.RichText)

        self.lay_out(form, QLabel("Correct with strokes:"), self.strokes, correct_row,
                     QLabel("Saved corrections (split fixed at first save):"), self.case_list, ft_form,
                     self.finetune_button, self.runner, self.dice_label)

        self.labels_combo.currentIndexChanged.connect(lambda _: self._labels_changed(self.labels_combo.currentText()))
        self.runner.busy_changed.connect(lambda busy: self.finetune_button.setEnabled(not busy))
        self._labels_changed(self.labels_combo.currentText())
        self.refresh_cases()

    @property
    def worker(self) -> Any:
        """The running fine-tune round's worker; None when none runs."""
        return self.runner.worker

    # -- layers ----------------------------------------------------------------------------------
    def refresh_layers(self) -> None:
        """Refill the layer choices, keeping the current picks where they still exist."""
        self.image_combo.refresh()
        self.labels_combo.refresh()

    def _layer(self, name: str, kind: str):
        if not name or self.viewer is None or name not in self.viewer.layers:
            raise ValueError(f"choose {kind} layer first")
        return self.viewer.layers[name]

    def _labels_changed(self, name: str) -> None:
        if self.viewer is None or not name or name not in self.viewer.layers:
            return
        layer = self.viewer.layers[name]
        model = layer_meta.model_of(layer.metadata)
        if model:
            self.model_picker.set_model(model)
        names = (layer.metadata or {}).get(layer_meta.CLASS_NAMES)
        if names:  # the strokes offer the prediction's own classes
            self.strokes.set_classes(tuple(names[k] for k in sorted(names, key=int)))
        self.strokes.follow(layer)  # Undo belongs to the prediction it refined

    def current_labels(self, quiet: bool = False) -> Any:
        """The chosen prediction (Labels) layer; None (said, unless ``quiet``) when there is none."""
        return self._chosen(self.labels_combo.currentText(), "a Labels", quiet)

    def current_image(self, quiet: bool = False) -> Any:
        return self._chosen(self.image_combo.currentText(), "an image", quiet)

    def _chosen(self, name: str, kind: str, quiet: bool) -> Any:
        try:
            return self._layer(name, kind)
        except ValueError as exc:
            if not quiet:
                self.say(str(exc), error=True)
            return None

    def say(self, text: str, error: bool = False) -> None:
        """One line in the dock's status (and a notification for an error)."""
        if error:
            from napari.utils.notifications import show_error

            show_error(text)
        self._set_status(text)

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
        """The chosen model (a bundled one by name, or a run folder / file); RamsegInputError if none."""
        return self.model_picker.model_path()

    def save_correction(self) -> str | None:
        """Write image, original and corrected mask with provenance to the project folder now."""
        from napari.utils.notifications import show_error, show_info, show_warning

        from ...errors import one_line

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
            case_id = self.store().save(image, np.asarray(original), final, self.model_path(), image_layer.name, meta,
                                        strokes=self.strokes.saved_strokes(labels_layer))
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

    def start_finetune(self, run_sync: bool | None = None) -> Any:
        """Run a fine-tune round as a background job; returns its worker (None when refused)."""
        from napari.utils.notifications import show_error

        if self.runner.busy:
            return self.worker
        try:
            model = self.model_path()
            if not self.store().list_cases():
                raise ValueError("save at least one correction before fine-tuning")
        except Exception as exc:
            show_error(str(exc))
            self._set_status(str(exc))
            return None
        self.dice_label.setText("")
        if self.device_combo.value() == SERVER:  # the round on the server, its version kept there
            job = server_finetune_job(remote_model_name(model, self.model_picker.bundled_name()),
                                      self.store().root, self.settings())
        else:
            job = finetune_job(model, self.store().root, self.models_root(), self.settings(),
                               self.replay_edit.text().strip() or None, self.target_style_edit.text().strip() or None)
        return self.runner.start(job, on_result=self._on_returned, description="Fine-tuning …", run_sync=run_sync,
                                 stops_itself=True)

    def settings(self) -> FinetuneConfig:
        """The round's settings as the fields show them (``core.config.FinetuneConfig``)."""
        device = self.device_combo.value()
        return FinetuneConfig(iterations=self.iterations.value, device="auto" if device == SERVER else device,
                              **self.more.request_kwargs())

    def stop_finetune(self) -> None:
        """Ask the round to stop after the current step; nothing is written."""
        self.runner.cancel()
        self._set_status("Stopping …")

    def _on_returned(self, result: Any) -> None:
        from napari.utils.notifications import show_info, show_warning

        self.last_result = result
        if isinstance(result, ServerRound):
            self._set_status(result.line())
            (show_warning if result.worse else show_info)(result.line())
            return
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
        if result.worse:
            # never a silent step backwards: the version is kept on disk, the model in use stays the old one
            self.dice_label.setText(self.dice_label.text() + f"<br><span style='color:{WARNING_COLOUR}'>⚠ the new "
                                    "version is <b>worse</b> on the held-out corrected cases; the previous model "
                                    "stays selected</span>")
            text = (f"New model {result.version} (round {result.round}) is worse on the held-out corrections "
                    f"and was not selected; it is kept in {result.model_dir} if you want it anyway.")
            self._set_status(text)
            show_warning(text)
            return
        self.model_picker.set_model(result.model_dir)  # the new version is now this widget's model
        taken = offer_model(self.viewer, result.model_dir)
        where = "loaded in the Segment widget" if taken else "open the Segment widget to segment with it"
        text = f"New model {result.version} (round {result.round}) in {result.model_dir}; {where}."
        self._set_status(text)
        show_info(text)

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
