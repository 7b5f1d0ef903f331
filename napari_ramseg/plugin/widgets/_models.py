"""The model and device pickers every dock shares, and the cached model loader.

The model picker offers every bundled model by name (``napari_ramseg.models``, the same names the
CLI's ``--model`` takes) and "run folder or file"; under it one line says what the chosen model is
(its labels and source domains, read from its ``model.json``), so a user sees a real name rather
than a path.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from ...core.device import DEVICE_CHOICES, available_devices
from ...errors import RamsegInputError

DEVICE_LABELS = DEVICE_CHOICES  # the one device list: core.device's


class DeviceCombo(QComboBox):
    """auto / cpu / cuda / mps (``core.device.DEVICE_CHOICES``); devices this machine lacks are greyed out.

    Which ones it has is asked of torch when the list first opens, or at once when torch is loaded
    already, so a dock that does not need torch yet (Train: it trains in a child process) does not load it.
    ``server``: a ramseg server is offered last (``_server.py``); choosing it the first time, or "Server
    settings…" in the list's context menu, opens its settings.
    """

    def __init__(self, parent: QWidget | None = None, server: bool = False):
        super().__init__(parent)
        self.addItems(DEVICE_CHOICES)
        self.setToolTip("auto picks CUDA, then Apple MPS, then the CPU")
        self._probed = False
        self._previous = 0
        if server:
            from ._server import SERVER, remembered_server_text

            self.addItem(SERVER)
            self.setItemData(self.count() - 1, remembered_server_text(), Qt.ItemDataRole.ToolTipRole)
            self.activated.connect(self._chosen)
        if "torch" in sys.modules:
            self.probe()

    def _chosen(self, index: int) -> None:
        from ._server import SERVER, saved_connection

        if self.itemText(index) == SERVER and saved_connection() is None and not self.server_settings():
            self.setCurrentIndex(self._previous)  # no server set: back to the device it was on
        self._previous = self.currentIndex()

    def choose_server(self) -> None:
        """Select the ramseg server, as a script does (no settings dialog: its connection is saved already)."""
        from ._server import SERVER

        self.setCurrentText(SERVER)

    def server_settings(self) -> bool:
        """The server's settings dialog; True when they were saved."""
        from ._server import SERVER, ServerSettingsDialog, remembered_server_text

        saved = bool(ServerSettingsDialog(self).exec())
        index = self.findText(SERVER)
        if index >= 0:
            self.setItemData(index, remembered_server_text(), Qt.ItemDataRole.ToolTipRole)
        return saved

    def contextMenuEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        from ._server import SERVER

        if self.findText(SERVER) < 0:
            return super().contextMenuEvent(event)
        from qtpy.QtWidgets import QMenu

        menu = QMenu(self)
        menu.addAction("Server settings…", self.server_settings)
        menu.exec(event.globalPos())

    def probe(self) -> None:
        """Grey out the devices this machine lacks."""
        if self._probed:
            return
        self._probed = True
        available = available_devices()
        for i, name in enumerate(DEVICE_CHOICES):
            if not available.get(name, False):
                item = self.model().item(i)
                item.setEnabled(False)
                item.setToolTip(f"{name} is not available on this machine")

    def showPopup(self) -> None:  # noqa: N802 - Qt's name
        self.probe()
        super().showPopup()

    def value(self) -> str:
        return self.currentText()


def model_summary(path: str | Path) -> str:
    """'vessel · trained on HRF + STARE' from a model's ``model.json``; '' when it cannot be read."""
    from ...core.models.checkpoint import resolve_model_path

    path = Path(path).expanduser()
    try:  # the owner of model paths also knows BioImage.IO packages (their model.json is an attachment)
        _, meta = resolve_model_path(path)
    except (RamsegInputError, OSError):
        return ""
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        names = [str(n) for n in info.get("label_scheme", {}).get("names", [])]
        domains = [str(d) for d in info.get("source_domains", [])]
    except (OSError, ValueError, AttributeError, TypeError):
        return ""
    what = ", ".join(names) or "segmentation"
    return f"{what} · trained on {' + '.join(domains)}" if domains else what


class ModelPicker(QWidget):
    """A bundled model by name, or a run folder / ``.safetensors`` file chosen by the user."""

    changed = Signal()
    CUSTOM = "run folder or file"

    def __init__(self, parent: QWidget | None = None):
        from ... import models

        super().__init__(parent)
        self.source = QComboBox()
        for name in models.bundled_models() or [models.DEFAULT_MODEL]:
            self.source.addItem(self.bundled_text(name), name)
        self.source.addItem(self.CUSTOM, None)
        self.source.setCurrentIndex(max(0, self.source.findData(models.DEFAULT_MODEL)))
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("run folder, model.safetensors or BioImage.IO .zip")
        self.folder_button = QPushButton("Folder…")
        self.file_button = QPushButton("File…")
        for button in (self.folder_button, self.file_button):
            button.setMaximumWidth(70)
        self.summary = QLabel("")  # what the chosen model segments, and what it was trained on
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color: #9aa4b1;")

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.folder_button)
        row.addWidget(self.file_button)
        self.path_row = QWidget()
        self.path_row.setLayout(row)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.source)
        layout.addWidget(self.path_row)
        layout.addWidget(self.summary)

        self.source.currentIndexChanged.connect(self._source_changed)
        self.path_edit.editingFinished.connect(self._source_changed)
        self.folder_button.clicked.connect(self._browse_folder)
        self.file_button.clicked.connect(self._browse_file)
        self._source_changed()

    @staticmethod
    def bundled_text(name: str) -> str:
        from ...models import DEFAULT_MODEL

        return f"{name} (bundled{', default' if name == DEFAULT_MODEL else ''})"

    def bundled_name(self) -> str | None:
        """The chosen bundled model's name, or None when a run folder or file is chosen."""
        return self.source.currentData()

    def _source_changed(self, *_: Any) -> None:
        self.path_row.setVisible(self.bundled_name() is None)
        try:
            summary = model_summary(self.model_path())
        except RamsegInputError as exc:
            summary = "" if self.bundled_name() is None and not self.path_edit.text().strip() else exc.problem
        self.summary.setText(summary)
        self.summary.setVisible(bool(summary))
        self.changed.emit()

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model run folder")
        if folder:
            self.set_model(folder)

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model file", "", "Model (*.safetensors *.json *.zip *.yaml)")
        if path:
            self.set_model(path)

    def set_model(self, path: str | Path | None) -> None:
        """A bundled model's name (``None``/"default": the default one), a run folder or a file.

        A path that is a bundled model's folder selects that model by name."""
        from ... import models

        name = models.DEFAULT_MODEL if path is None else models.canonical_name(str(path))
        if name is None:
            try:
                resolved = Path(path).expanduser().resolve()
            except (OSError, RuntimeError):
                resolved = None
            name = next((n for n in models.bundled_models()
                         if resolved is not None and models.bundled_model_path(n).resolve() == resolved), None)
        index = self.source.findData(name) if name is not None else -1
        self.source.blockSignals(True)
        if index >= 0:
            self.source.setCurrentIndex(index)
        else:
            self.path_edit.setText(str(path))
            self.source.setCurrentIndex(self.source.count() - 1)
        self.source.blockSignals(False)
        self._source_changed()

    def model_path(self) -> Path:
        """The chosen model; raises RamsegInputError with a plain message when there is none."""
        from ...core.models.run_folder import RunFolder
        from ...models import bundled_model_path

        name = self.bundled_name()
        if name is not None:
            path = bundled_model_path(name)
            if not RunFolder(path).model_weights.exists():
                raise RamsegInputError(
                    f"the bundled {name} model is not installed; choose a run folder or a .safetensors file "
                    f"under '{self.CUSTOM}'", path)
            return path
        text = self.path_edit.text().strip()
        if not text:
            raise RamsegInputError("no model chosen: pick a run folder or a .safetensors file")
        return Path(text).expanduser()


_PREDICTORS: dict[tuple[str, str], tuple[tuple[int, int], Any]] = {}
_PREDICTOR_LOCK = threading.Lock()


def get_predictor(path: str | Path, device: str = "auto") -> Any:
    """A :class:`~napari_ramseg.core.inference.predictor.Predictor`, loaded once per (model, device) and reused.

    A model file that changed on disk since it was loaded (same path, newer weights) is reloaded.
    """
    from ...core.models.checkpoint import resolve_model_path
    from ...core.device import resolve_device
    from ...core.inference.predictor import Predictor

    resolved = Path(path).expanduser().resolve()
    weights, meta = resolve_model_path(resolved)
    torch_device = resolve_device(device)
    stamp = (weights.stat().st_mtime_ns, meta.stat().st_mtime_ns)
    key = (str(resolved), str(torch_device))
    with _PREDICTOR_LOCK:
        cached = _PREDICTORS.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        predictor = Predictor.from_path(resolved, device=str(torch_device))
        _PREDICTORS[key] = (stamp, predictor)
        return predictor


def clear_predictor_cache() -> None:
    with _PREDICTOR_LOCK:
        _PREDICTORS.clear()
    release_accelerator_memory()


def release_accelerator_memory() -> None:
    """Give cached GPU memory back to the driver (no-op on CPU)."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - never let cleanup fail a job
        pass

