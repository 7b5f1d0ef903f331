"""Train widget: collects a TrainRequest, runs it in a child process, shows progress, loss and Dice.

It offers what ``ramseg train`` offers, with the defaults of core/config.py, and stops as it does: Stop
sends the child SIGTERM, the child finishes its step and writes a resume state and the model, and
Continue resumes that run folder (``--resume``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QListWidget, QListWidgetItem, QProgressBar,
                            QPushButton, QWidget)

from ...core.labels import LabelScheme
from ...core.device import DEVICE_CHOICES
from ...core.data.layouts import FORMATS as LAYOUT_NAMES
from ...core.models.run_folder import RunFolder, dock_run_dir
from ...core.training.process import TrainProcess
from ._base import WARNING_COLOUR, DockWidget, status_label
from ._handover import find_model_consumers, offer_model
from ._plot import LivePlot
from ._train_options import BATCH, ITERATIONS, METHOD, SIZE, WIDTH, LabelOptions, MoreOptions

__all__ = ["TrainWidget", "find_model_consumers", "offer_model", "DEVICES"]

DEVICES = DEVICE_CHOICES  # the one device list (core.device; importing it does not load torch)
WEAK_DICE = 0.1  # below this source-validation Dice a model found (almost) nothing it was trained to find
USE_TEXT = "Use in Segment"
FORMATS = ("auto", *LAYOUT_NAMES)
NO_TARGET = "(none)"


def default_run_dir() -> Path:
    return dock_run_dir()  # ~/ramseg-runs/ramseg-<time> (core/models/run_folder.py)


def _stop_quietly(holder: dict[str, Any], *_: Any) -> None:
    """The dock went away: the child stops after its step and saves (it also does if napari exits)."""
    process = holder.get("process")
    if process is not None and process.is_alive():
        process.request_stop()


def weak_model_caution(dice: float | None) -> str:
    """The caution for a model whose source-validation Dice says it learnt (almost) nothing; "" otherwise."""
    if dice is None or dice >= WEAK_DICE:
        return ""
    return (f"Caution: its source validation Dice is {dice:.3f}: on its own validation scans it found "
            "(almost) nothing of the labels. Train longer (more iterations) or check the labels before "
            "segmenting with it")


# ---------------------------------------------------------------------------------------- widget


class TrainWidget(DockWidget):
    """Data folder, domains, budget and ablation switches; Start/Stop; live loss and validation Dice.

    Every setting's default is core/config.py's (``_train_options``: the fields magicgui builds)."""

    poll_interval_ms = 200
    stop_timeout_s = 30.0  # Stop waits this long for the step and the saving, then kills the child

    def __init__(self, napari_viewer: Any = None, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        self.process: TrainProcess | None = None
        self.last_run: Path | None = None
        self._holder: dict[str, Any] = {"process": None}
        self.destroyed.connect(functools.partial(_stop_quietly, self._holder))

        form = QFormLayout()
        self.data_edit = self.add_path(form, "Data folder", "Dataset folder", placeholder="<root>/<domain>/images, labels",
                                       then=self.refresh_domains)
        self.data_edit.editingFinished.connect(self.refresh_domains)
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
        self.params = {p.name: self.add_param(form, p) for p in (ITERATIONS, SIZE)}
        self.label_options = LabelOptions(self, form)
        self.labels_edit = self.label_options.labels_edit
        self.label_kind_combo = self.label_options.kind_combo
        self.long_side_spin = self.label_options.long_side_spin
        self.params.update({p.name: self.add_param(form, p) for p in (BATCH, WIDTH)})
        switches = QHBoxLayout()
        for p in METHOD:  # check boxes that carry their own text, in one row
            self.params[p.name] = self.add_param(None, p)
            switches.addWidget(self.params[p.name].native)
        form.addRow("Method", self._wrap(switches))
        self.iterations_spin, self.size_spin, self.batch_spin, self.width_spin = (
            self.params[n].native for n in ("iterations", "size", "batch", "base_width"))
        self.ram_check, self.dsir_check, self.consistency_check = (
            self.params[n].native for n in ("ram", "dsir", "consistency"))
        self.device_combo = self.add_device_choice(form, "Device", server=True)
        self.out_edit = self.add_path(form, "Output folder", "Output folder (a new run folder inside)",
                                      placeholder="~/ramseg-runs/ramseg-<time>",
                                      chosen=lambda folder: str(Path(folder) / default_run_dir().name))
        self.more = MoreOptions()
        form.addRow(self.more)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.use_button = QPushButton(USE_TEXT)
        self.use_button.setEnabled(False)
        self.use_button.setToolTip("hand the trained model to the Segment widget")
        self.use_button.clicked.connect(self.use_in_segment)
        self.continue_button = QPushButton("Continue")
        self.continue_button.setEnabled(False)
        self.continue_button.setToolTip("resume the stopped run from its resume state (ramseg train --resume)")
        self.continue_button.clicked.connect(self.resume)
        for b in (self.start_button, self.stop_button, self.continue_button, self.use_button):
            buttons.addWidget(b)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.plot = LivePlot(x_label="iteration")
        self.plot.setToolTip("training loss (left axis) and source-domain validation Dice (right axis, 0 to 1)")
        self.plot.add_series("loss")
        self.plot.add_series("val Dice", fixed_range=(0.0, 1.0))
        self.status = status_label()
        self.caution = ""  # weak_model_caution of the last finished run
        self.lay_out(form, buttons, self.progress, self.plot, self.status, stretch=False)

        self.timer = QTimer(self)
        self.timer.setInterval(self.poll_interval_ms)
        self.timer.timeout.connect(self.poll)

    @staticmethod
    def _wrap(layout) -> QWidget:
        holder = QWidget()
        layout.setContentsMargins(0, 0, 0, 0)
        holder.setLayout(layout)
        return holder

    # -- domains ---------------------------------------------------------------------------------
    def refresh_domains(self) -> list[str]:
        """Fill the domain list (all checked) and the target choice from the data folder."""
        from ...core.data.dataset import discover

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
        from ...core.training.job import TrainRequest

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
            target=target, out=Path(self.out_edit.text().strip()).expanduser(), device=self._local_device(),
            command="napari Train widget", **{name: widget.value for name, widget in self.params.items()},
            **self.label_options.request_kwargs(), **self.more.request_kwargs(),
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
        return self._launch(request, f"Starting training into {request.out} …", server=self._on_server())

    def resume(self) -> TrainProcess | None:
        """Continue the stopped run from its resume state in a child process (``ramseg train --resume``)."""
        from napari.utils.notifications import show_error

        from ...core.training.job import TrainRequest

        if self.process is not None and self.process.is_alive():
            return self.process
        run, data = self.resumable_run(), self.data_edit.text().strip()
        problem = ("no stopped run to continue (its folder holds no resume state)" if run is None else
                   "choose the data folder the run was trained on" if not data else None)
        if problem:
            show_error(problem)
            self._set_status(problem)
            return None
        request = TrainRequest(data=Path(data).expanduser(), format=self.format_combo.currentText(), resume=run,
                               device=self._local_device(), command="napari Train widget",
                               resume_every_s=self.more.request_kwargs()["resume_every_s"])
        return self._launch(request, f"Continuing {run} from iteration {RunFolder(run).saved_iteration()} …")

    def resumable_run(self) -> Path | None:
        """The run folder Continue would resume: the last job's, else the output folder's, if it has a resume state."""
        from ...core.training.resume import has_state

        out = self.out_edit.text().strip()
        for run in (self.process.run_dir if self.process is not None else None, Path(out).expanduser() if out else None):
            if has_state(run):
                return run
        return None

    def _on_server(self) -> bool:
        from ._server import SERVER

        return self.device_combo.value() == SERVER

    def _local_device(self) -> str:
        """The request's device: on a server, the server's own (it trains with its ``--device``)."""
        return "auto" if self._on_server() else self.device_combo.value()

    def _launch(self, request: Any, status: str, server: bool = False) -> TrainProcess:
        """Train in a child process, or (``server``) on the remembered server (``_server_train.py``)."""
        from ._server_train import ServerTraining

        self.process = (ServerTraining if server else TrainProcess)(request).start()
        self._holder["process"] = self.process
        self.last_run = None
        self._set_caution("")
        self.plot.clear()
        self.progress.setRange(0, request.iterations or 1)
        self.progress.setValue(0)
        for button, enabled in ((self.start_button, False), (self.stop_button, True),
                                (self.continue_button, False), (self.use_button, False)):
            button.setEnabled(enabled)
        self._set_status(status)
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
                show_info(self.status.text())
            elif kind == "error":
                self._failed(event)
                show_error(f"Training failed: {event['message']}")
        if self.process.finished:
            self.timer.stop()
            if self.process.result is None and self.process.error is None:  # stopped before it reported
                self._stopped_without_result()
            self.start_button.setEnabled(True)
            self.stop_button.setEnabled(False)
            self.continue_button.setEnabled(self.resumable_run() is not None)
        return events

    def _failed(self, event: dict[str, Any]) -> None:
        """The message, and the child's last error lines (a crash's own words, from its stderr)."""
        text = f"Training failed: {event['message']}"
        tail = self.process.last_error_lines() if self.process is not None else []
        if tail and not all(line in text for line in tail):
            text += "\n" + "\n".join(tail)
        self._set_status(text)

    def _finished(self, event: dict[str, Any]) -> None:
        self.last_run = Path(event["run_dir"]) if event.get("run_dir") else None
        text = f"{'Stopped' if event['stopped'] else 'Finished'} after {event['iterations_done']} iterations"
        validation = event.get("validation") or {}
        dice = validation.get("dice")
        if dice is not None:
            text += f" (source validation Dice {dice:.3f})"
        self._set_caution(weak_model_caution(dice))
        if self.last_run is not None and RunFolder(self.last_run).has_model():
            text += f"; model in {self.last_run}"
            self.use_button.setEnabled(True)
            if find_model_consumers(self.viewer):
                text += ". Press “Use in Segment” to segment with it"
            if self.caution:
                text += f". {self.caution}"
        elif self.last_run is not None:
            text += f"; no model yet in {self.last_run}"
        elif event.get("server_model"):
            text += f"; the model is on the server as {event['server_model']}"
        if event["stopped"]:
            text += self._continue_hint()
        self._set_status(text + ".")

    def _continue_hint(self) -> str:
        run = self.resumable_run()
        if run is None:
            return ""
        return (f". Its resume state is at iteration {RunFolder(run).saved_iteration()}: press “Continue”, or run "
                f"ramseg train --data {self.process.request.data} --resume {run}")

    def _stopped_without_result(self) -> None:
        process = self.process
        how = "killed (it did not stop in time)" if process.killed else "stopped"
        self._set_status(f"Training {how} after {len(process.history)} iterations{self._continue_hint()}.")

    def stop(self) -> None:
        """Stop as Ctrl-C stops ``ramseg train``: the child finishes its step, writes a resume state and
        the model, and ends (killed if it has not after ``stop_timeout_s``); :meth:`poll` reports it."""
        if self.process is None or not self.process.is_alive():
            return
        self.process.request_stop(self.stop_timeout_s)
        self.stop_button.setEnabled(False)
        self._set_status("Stopping after the current step (writing a resume state and the model) …")

    def _set_caution(self, caution: str) -> None:
        """A weak model is still offered, but the button, its tooltip and the status say so."""
        self.caution = caution
        self.use_button.setText(f"{USE_TEXT} ⚠" if caution else USE_TEXT)
        self.use_button.setToolTip(caution or "hand the trained model to the Segment widget")
        self.status.setStyleSheet(f"color: {WARNING_COLOUR};" if caution else "")

    def use_in_segment(self) -> bool:
        from napari.utils.notifications import show_info, show_warning

        if self.last_run is None:
            return False
        if offer_model(self.viewer, self.last_run):
            if self.caution:
                show_warning(f"Segment widget now uses {self.last_run}. {self.caution}")
            else:
                show_info(f"Segment widget now uses {self.last_run}")
            return True
        show_info(f"Open the Segment widget and choose the model folder {self.last_run}")
        return False

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
