"""Train widget: collects a TrainRequest, runs it in a child process, shows progress, loss and Dice."""

from __future__ import annotations

import datetime as _dt
import functools
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                            QListWidget, QListWidgetItem, QProgressBar, QPushButton, QSpinBox, QVBoxLayout,
                            QWidget)

from ..core.config import LabelScheme, MethodConfig, ModelConfig, PreprocessConfig, TrainConfig
from ..core.train_process import TrainProcess
from ._plot import LivePlot

DEVICES = ("auto", "cpu", "cuda", "mps")  # as core.device.DEVICE_CHOICES, without importing torch here
FORMATS = ("auto", "domains", "dofe", "saml")
NO_TARGET = "(none)"


def default_run_dir() -> Path:
    return Path.home() / "ramseg-runs" / _dt.datetime.now().strftime("ramseg-%Y%m%d-%H%M%S")


# ------------------------------------------------------------------------- handing models around


def find_model_consumers(viewer: Any) -> list[Any]:
    """Docked widgets that take a model through ``set_model(path)`` (the Segment widget), if any."""
    window = getattr(viewer, "window", None)
    if window is None:
        return []
    widgets: list[Any] = []
    try:
        widgets = list(window.dock_widgets.values())  # napari >= 0.6.2: the inner widgets
    except Exception:
        docks = getattr(window, "_wrapped_dock_widgets", None) or {}
        for dock in list(docks.values()):
            try:
                widgets.append(dock.widget())
            except Exception:
                continue
    out = []
    for widget in widgets:
        for candidate in (widget, getattr(widget, "native", None)):
            if candidate is not None and callable(getattr(candidate, "set_model", None)):
                out.append(candidate)
                break
    return out


def offer_model(viewer: Any, path: str | Path) -> int:
    """Give the model to every docked Segment widget; returns how many took it (failures are reported)."""
    from napari.utils.notifications import show_warning

    taken = 0
    for widget in find_model_consumers(viewer):
        try:
            widget.set_model(str(path))
            taken += 1
        except Exception as exc:  # another engineer's widget: never let it break this one
            show_warning(f"the Segment widget could not load {path}: {exc}")
    return taken


def _stop_quietly(holder: dict[str, Any], *_: Any) -> None:
    process = holder.get("process")
    if process is not None and process.is_alive():
        process.stop()


# ---------------------------------------------------------------------------------------- widget


class TrainWidget(QWidget):
    """Data folder, domains, budget and ablation switches; Start/Stop; live loss and validation Dice."""

    poll_interval_ms = 200

    def __init__(self, napari_viewer: Any = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.process: TrainProcess | None = None
        self.last_run: Path | None = None
        self._holder: dict[str, Any] = {"process": None}
        self.destroyed.connect(functools.partial(_stop_quietly, self._holder))
        defaults, method, prep, model = TrainConfig(), MethodConfig(), PreprocessConfig(), ModelConfig()

        form = QFormLayout()
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("<root>/<domain>/images, labels")
        self.data_edit.editingFinished.connect(self.refresh_domains)
        form.addRow("Data folder", self._with_browse(self.data_edit, self._browse_data))
        self.format_combo = QComboBox()
        self.format_combo.addItems(FORMATS)
        self.format_combo.currentTextChanged.connect(lambda _: self.refresh_domains())
        form.addRow("Format", self.format_combo)
        self.domain_list = QListWidget()
        self._fit_domain_list()
        form.addRow("Source domains", self.domain_list)
        self.target_combo = QComboBox()
        self.target_combo.addItem(NO_TARGET)
        self.target_combo.currentTextChanged.connect(self._target_changed)
        form.addRow("Held-out target", self.target_combo)
        self.iterations_spin = self._spin(1, 10_000_000, defaults.iterations)
        form.addRow("Iterations", self.iterations_spin)
        self.size_spin = self._spin(16, 4096, prep.size, step=16)
        form.addRow("Size (px)", self.size_spin)
        self.batch_spin = self._spin(1, 1024, defaults.batch)
        form.addRow("Batch", self.batch_spin)
        self.width_spin = self._spin(2, 256, model.base_width)
        self.width_spin.setToolTip("channels of the first U-Net level (16 in the paper)")
        form.addRow("Model width", self.width_spin)
        switches = QHBoxLayout()
        self.ram_check = QCheckBox("RAM")
        self.ram_check.setChecked(method.ram)
        self.dsir_check = QCheckBox("DSIR")
        self.dsir_check.setChecked(method.dsir)
        self.consistency_check = QCheckBox("Consistency")
        self.consistency_check.setChecked(method.consistency)
        for box in (self.ram_check, self.dsir_check, self.consistency_check):
            switches.addWidget(box)
        form.addRow("Method", self._wrap(switches))
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        form.addRow("Device", self.device_combo)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("~/ramseg-runs/ramseg-<time>")
        form.addRow("Output folder", self._with_browse(self.out_edit, self._browse_out))

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.use_button = QPushButton("Use in Segment")
        self.use_button.setEnabled(False)
        self.use_button.setToolTip("hand the trained model to the Segment widget")
        self.use_button.clicked.connect(self.use_in_segment)
        for b in (self.start_button, self.stop_button, self.use_button):
            buttons.addWidget(b)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.plot = LivePlot(x_label="iteration")
        self.plot.setToolTip("training loss (left axis) and source-domain validation Dice (right axis, 0 to 1)")
        self.plot.add_series("loss")
        self.plot.add_series("val Dice", fixed_range=(0.0, 1.0))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.plot)
        layout.addWidget(self.status)

        self.timer = QTimer(self)
        self.timer.setInterval(self.poll_interval_ms)
        self.timer.timeout.connect(self.poll)

    # -- small builders --------------------------------------------------------------------------
    @staticmethod
    def _spin(lo: int, hi: int, value: int, step: int = 1) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(lo, hi)
        spin.setSingleStep(step)
        spin.setValue(value)
        return spin

    @staticmethod
    def _wrap(layout) -> QWidget:
        holder = QWidget()
        layout.setContentsMargins(0, 0, 0, 0)
        holder.setLayout(layout)
        return holder

    def _with_browse(self, edit: QLineEdit, slot) -> QWidget:
        row = QHBoxLayout()
        row.addWidget(edit)
        button = QPushButton("…")
        button.setMaximumWidth(30)
        button.clicked.connect(slot)
        row.addWidget(button)
        return self._wrap(row)

    def _browse_data(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder", self.data_edit.text() or str(Path.home()))
        if folder:
            self.data_edit.setText(folder)
            self.refresh_domains()

    def _browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder (a new run folder inside)", str(Path.home()))
        if folder:
            self.out_edit.setText(str(Path(folder) / default_run_dir().name))

    # -- domains ---------------------------------------------------------------------------------
    def refresh_domains(self) -> list[str]:
        """Fill the domain list (all checked) and the target choice from the data folder."""
        from ..core.data import discover

        text = self.data_edit.text().strip()
        self.domain_list.clear()
        self._fit_domain_list()
        self.target_combo.blockSignals(True)
        self.target_combo.clear()
        self.target_combo.addItem(NO_TARGET)
        self.target_combo.blockSignals(False)
        if not text:
            return []
        try:
            # a placeholder label scheme spares reading every mask just to list the domains
            dataset = discover(Path(text).expanduser(), self.format_combo.currentText(), labels=LabelScheme(("_",)),
                               split=None)
        except Exception as exc:
            self._set_status(f"Cannot read this data folder: {exc}")
            return []
        counts: dict[str, int] = {}
        for case in dataset.cases:
            counts[case.domain] = counts.get(case.domain, 0) + 1
        for domain in dataset.domains:
            item = QListWidgetItem(f"{domain}")
            item.setData(Qt.UserRole, domain)
            item.setToolTip(f"{counts.get(domain, 0)} cases")
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked)
            self.domain_list.addItem(item)
            self.target_combo.addItem(domain)
        self._fit_domain_list()
        self._set_status(f"{dataset.format} layout: {', '.join(f'{d} ({counts.get(d, 0)})' for d in dataset.domains)}")
        return list(dataset.domains)

    def _fit_domain_list(self) -> None:
        """As tall as its rows (up to 90 px), so two domains do not sit in a large empty box."""
        rows = max(self.domain_list.count(), 1)
        row = self.domain_list.sizeHintForRow(0) if self.domain_list.count() else self.fontMetrics().height()
        self.domain_list.setFixedHeight(min(90, rows * row + 2 * self.domain_list.frameWidth() + 4))

    def _target_changed(self, target: str) -> None:
        for i in range(self.domain_list.count()):
            item = self.domain_list.item(i)
            if item.data(Qt.UserRole) == target:
                item.setCheckState(Qt.Unchecked)

    def checked_domains(self) -> list[str]:
        return [self.domain_list.item(i).data(Qt.UserRole) for i in range(self.domain_list.count())
                if self.domain_list.item(i).checkState() == Qt.Checked]

    # -- the job ---------------------------------------------------------------------------------
    def build_request(self):
        """The TrainRequest the fields describe (the output folder is filled in when left empty)."""
        from ..core.train_job import TrainRequest

        data = self.data_edit.text().strip()
        if not data:
            raise ValueError("choose a data folder first")
        target = self.target_combo.currentText()
        target = None if target in ("", NO_TARGET) else target
        domains = [d for d in self.checked_domains() if d != target]
        all_domains = [self.domain_list.item(i).data(Qt.UserRole) for i in range(self.domain_list.count())]
        if all_domains and not domains:
            raise ValueError("check at least one source domain")
        if not self.out_edit.text().strip():
            self.out_edit.setText(str(default_run_dir()))
        return TrainRequest(
            data=Path(data).expanduser(), format=self.format_combo.currentText(),
            domains=domains or None,
            target=target, out=Path(self.out_edit.text().strip()).expanduser(),
            iterations=self.iterations_spin.value(), size=self.size_spin.value(), batch=self.batch_spin.value(),
            base_width=self.width_spin.value(), ram=self.ram_check.isChecked(), dsir=self.dsir_check.isChecked(),
            consistency=self.consistency_check.isChecked(), device=self.device_combo.currentText(),
            command="napari Train widget",
        )

    def start(self) -> TrainProcess | None:
        """Launch training in a child process; progress arrives through :meth:`poll`."""
        from napari.utils.notifications import show_error

        if self.process is not None and self.process.is_alive():
            return self.process
        try:
            request = self.build_request()
        except ValueError as exc:
            show_error(str(exc))
            self._set_status(str(exc))
            return None
        self.process = TrainProcess(request).start()
        self._holder["process"] = self.process
        self.last_run = None
        self.plot.clear()
        self.progress.setRange(0, request.iterations)
        self.progress.setValue(0)
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.use_button.setEnabled(False)
        self._set_status(f"Starting training into {request.out} …")
        self.timer.start()
        return self.process

    def poll(self) -> list[dict[str, Any]]:
        """Read the child's events and update the progress bar, the plot and the status."""
        from napari.utils.notifications import show_error, show_info

        if self.process is None:
            return []
        events = self.process.poll()
        for event in events:
            kind = event["type"]
            if kind == "iteration":
                self.progress.setRange(0, event["total"])
                self.progress.setValue(event["iteration"])
                self.plot.add_point("loss", event["iteration"], event["losses"].get("loss"))
                text = f"Iteration {event['iteration']}/{event['total']}: loss {event['losses'].get('loss', float('nan')):.4f}"
                if event.get("validation"):
                    self.plot.add_point("val Dice", event["iteration"], event["validation"]["dice"])
                    text += f", source validation Dice {event['validation']['dice']:.3f}"
                self._set_status(text)
            elif kind == "log":
                self._set_status(event["message"])
            elif kind == "done":
                self._finished(event)
                show_info(f"Training {'stopped' if event['stopped'] else 'finished'}: model saved in {event['run_dir']}")
            elif kind == "error":
                self._set_status(f"Training failed: {event['message']}")
                show_error(f"Training failed: {event['message']}")
        if self.process.finished:
            self.timer.stop()
            self.start_button.setEnabled(True)
            self.stop_button.setEnabled(False)
        return events

    def _finished(self, event: dict[str, Any]) -> None:
        self.last_run = Path(event["run_dir"]) if event.get("run_dir") else None
        text = f"{'Stopped' if event['stopped'] else 'Finished'} after {event['iterations_done']} iterations"
        validation = event.get("validation") or {}
        if validation.get("dice") is not None:
            text += f" (source validation Dice {validation['dice']:.3f})"
        text += f"; model in {self.last_run}"
        if self.last_run is not None:
            self.use_button.setEnabled(True)
            if find_model_consumers(self.viewer):
                text += ". Press “Use in Segment” to segment with it."
        self._set_status(text)

    def stop(self) -> None:
        """End the child process now (its memory, GPU memory included, is freed at once)."""
        if self.process is None:
            return
        self.process.stop()
        self.poll()
        self.timer.stop()
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        run = self.process.run_dir
        done = len(self.process.history)
        text = f"Stopped after {done} iterations."
        if run is not None and (run / "model.json").exists():
            self.last_run = run
            self.use_button.setEnabled(True)
            text += f" The run folder {run} holds a model."
        elif run is not None and (run / "resume.json").exists():
            text += f" Continue it later with: ramseg train --data {self.process.request.data} --resume {run}"
        self._set_status(text)

    def use_in_segment(self) -> bool:
        from napari.utils.notifications import show_info

        if self.last_run is None:
            return False
        if offer_model(self.viewer, self.last_run):
            show_info(f"Segment widget now uses {self.last_run}")
            return True
        show_info(f"Open the Segment widget and choose the model folder {self.last_run}")
        return False

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
