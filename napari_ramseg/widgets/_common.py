"""Pieces every napari-ramseg widget shares: layer pickers, the model and device pickers, a cached
model loader, background jobs with progress and Stop, and plain-message notifications.

Background jobs follow stardist-napari: the work is a generator that yields :class:`Progress` and
returns a result, run by napari's ``thread_worker``. With ``RAMSEG_SYNC_WORKERS=1`` (or
``run_sync=True``) the same generator runs in the calling thread, which keeps scripted runs (the
demo's screenshot, some tests) deterministic. Errors never reach napari's traceback dialog: the job
wrapper turns them into one-line ``show_error`` notifications.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import RamsegInputError

logger = logging.getLogger(__name__)

SYNC_ENV = "RAMSEG_SYNC_WORKERS"
PREVIEW_FLAG = "ramseg_preview"  # metadata key marking preview layers, which layer pickers skip
ORIGINAL_KEY = "ramseg_original"  # Labels metadata: the prediction as made, saved as a correction's "original"


# ---------------------------------------------------------------------------------- notifications


def sync_workers() -> bool:
    """True when ``RAMSEG_SYNC_WORKERS`` asks for jobs to run in the calling thread."""
    return os.environ.get(SYNC_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def error_message(exc: BaseException) -> str:
    """One plain line for a notification: our own input errors verbatim, others with their type."""
    if isinstance(exc, (RamsegInputError, FileNotFoundError, FileExistsError, PermissionError)):
        text = str(exc)
    elif isinstance(exc, ValueError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def notify_error(message: str) -> None:
    """A napari error notification with a plain message (no traceback)."""
    from napari.utils.notifications import show_error

    show_error(message)


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


# ------------------------------------------------------------------------------------------ layers


def is_preview(layer: Any) -> bool:
    return bool(getattr(layer, "metadata", {}).get(PREVIEW_FLAG))


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


def upsert_layer(viewer: Any, name: str, data: Any, layer_type: str, **kwargs: Any) -> Any:
    """Update the layer called ``name`` in place (same type and dimensionality), or add a new one."""
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
    if index is None:
        viewer.add_layer(layer)
    else:
        viewer.layers.insert(index, layer)
    return layer


def add_captions(viewer: Any, name: str, positions: Sequence[Sequence[float]], texts: Sequence[str],
                 size: int = 10) -> Any:
    """A Points layer whose invisible points carry text labels (world coordinates, upper-left anchored)."""
    positions = np.asarray(positions, dtype=float).reshape(-1, 2)
    props = dict(
        features={"caption": list(texts)},
        text={"string": "{caption}", "color": "white", "anchor": "upper_left", "size": size,
              "translation": [2.0, 2.0]},
        size=1, face_color="transparent", border_color="transparent",
        metadata={PREVIEW_FLAG: True}, blending="translucent_no_depth",
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


# ---------------------------------------------------------------------------------- model pickers

DEVICE_LABELS = ("auto", "cpu", "cuda", "mps")


def available_devices() -> dict[str, bool]:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return {"auto": True, "cpu": True, "cuda": torch.cuda.is_available(),
            "mps": bool(mps is not None and mps.is_available())}


class DeviceCombo(QComboBox):
    """auto / cpu / cuda / mps; devices this machine lacks are shown greyed out."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        available = available_devices()
        for name in DEVICE_LABELS:
            self.addItem(name)
            if not available[name]:
                item = self.model().item(self.count() - 1)
                item.setEnabled(False)
                item.setToolTip(f"{name} is not available on this machine")
        self.setToolTip("auto picks CUDA, then Apple MPS, then the CPU")

    def value(self) -> str:
        return self.currentText()


class ModelPicker(QWidget):
    """The bundled default model, or a run folder / ``.safetensors`` file chosen by the user."""

    changed = Signal()
    BUNDLED = "bundled default"
    CUSTOM = "run folder or file"

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.source = QComboBox()
        self.source.addItems([self.BUNDLED, self.CUSTOM])
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("run folder or model.safetensors")
        self.folder_button = QPushButton("Folder…")
        self.file_button = QPushButton("File…")
        for button in (self.folder_button, self.file_button):
            button.setMaximumWidth(70)

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.folder_button)
        row.addWidget(self.file_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.source)
        layout.addLayout(row)

        self.source.currentIndexChanged.connect(self._source_changed)
        self.path_edit.editingFinished.connect(self.changed.emit)
        self.folder_button.clicked.connect(self._browse_folder)
        self.file_button.clicked.connect(self._browse_file)
        self._source_changed()

    def _source_changed(self, *_: Any) -> None:
        custom = self.source.currentText() == self.CUSTOM
        for w in (self.path_edit, self.folder_button, self.file_button):
            w.setEnabled(custom)
        self.changed.emit()

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model run folder")
        if folder:
            self.set_model(folder)

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model file", "", "Model (*.safetensors *.json)")
        if path:
            self.set_model(path)

    def set_model(self, path: str | Path | None) -> None:
        """Select a run folder or file (``None`` or ``"default"`` selects the bundled model)."""
        from ..models import DEFAULT_MODEL_NAMES

        if path is None or str(path).lower() in DEFAULT_MODEL_NAMES:
            self.source.setCurrentText(self.BUNDLED)
        else:
            self.path_edit.setText(str(path))
            self.source.setCurrentText(self.CUSTOM)
        self.changed.emit()

    def model_path(self) -> Path:
        """The chosen model; raises RamsegInputError with a plain message when there is none."""
        from ..models import bundled_model_path

        if self.source.currentText() == self.BUNDLED:
            path = bundled_model_path()
            if not (path / "model.safetensors").exists():
                raise RamsegInputError(
                    "the bundled vessel model is not installed; choose a run folder or a .safetensors file "
                    "under 'run folder or file'", path)
            return path
        text = self.path_edit.text().strip()
        if not text:
            raise RamsegInputError("no model chosen: pick a run folder or a .safetensors file")
        return Path(text).expanduser()


_PREDICTORS: dict[tuple[str, str], tuple[tuple[int, int], Any]] = {}
_PREDICTOR_LOCK = threading.Lock()


def get_predictor(path: str | Path, device: str = "auto") -> Any:
    """A :class:`~napari_ramseg.core.infer.Predictor`, loaded once per (model, device) and reused.

    A model file that changed on disk since it was loaded (same path, newer weights) is reloaded.
    """
    from ..core.checkpoint import resolve_model_path
    from ..core.device import resolve_device
    from ..core.infer import Predictor

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


# --------------------------------------------------------------------------------------------- jobs


@dataclass
class Progress:
    """What a job reports: ``done`` of ``total`` steps (``total <= 0``: busy, unknown length)."""

    done: int = 0
    total: int = 0
    text: str = ""


@dataclass
class JobFailed:
    message: str


class JobCancelled:
    """Returned by a job that stopped because the user pressed Stop."""


class JobControl:
    """Handed to a running job: ``cancelled()`` to poll, ``report()`` to send progress from callbacks."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self.worker: Any = None

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        # Only the flag: the job wrapper checks it between progress steps and core loops poll it, so
        # every ending (done, cancelled, failed) arrives through the worker's ``returned`` signal.
        self._cancel.set()

    def report(self, done: int, total: int, text: str = "") -> None:
        """Progress from inside a core call (e.g. ``Predictor.predict_volume``'s progress callback)."""
        if self.worker is not None:
            self.worker.yielded.emit(Progress(int(done), int(total), text))


Job = Callable[[JobControl], Generator[Progress, None, Any]]


def _guarded(control: JobControl, job: Job) -> Generator[Progress, None, Any]:
    steps = job(control)
    try:
        while True:
            if control.cancelled():
                steps.close()
                return JobCancelled()
            try:
                step = next(steps)
            except StopIteration as stop:
                result = stop.value
                break
            yield step
    except InterruptedError:
        return JobCancelled()
    except (RamsegInputError, ValueError, OSError) as exc:
        return JobFailed(error_message(exc))
    except Exception as exc:  # anything else still ends as a notification, with the trace in the log
        logger.exception("napari-ramseg job failed")
        return JobFailed(error_message(exc))
    finally:
        release_accelerator_memory()
    return JobCancelled() if control.cancelled() else result


class JobRunner(QWidget):
    """A progress bar, a status line and a Stop button that drive one background job at a time."""

    busy_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Cancel the running job")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.progress, 1)
        row.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.stop_button.clicked.connect(self.cancel)
        self.control: JobControl | None = None
        self.worker: Any = None
        self.last_outcome: str = ""  # "done", "cancelled" or "failed"

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def start(self, job: Job, on_result: Callable[[Any], None], description: str = "",
              run_sync: bool | None = None) -> Any:
        """Run ``job`` (a generator function taking a JobControl); ``on_result`` gets its return value."""
        from napari.qt.threading import create_worker

        if self.busy:
            notify_error("a job is already running in this panel; press Stop first")
            return None
        control = JobControl()
        worker = create_worker(_guarded, control, job, _start_thread=False)
        control.worker = worker
        self.control, self.worker = control, worker
        self.last_outcome = ""
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda result: self._on_returned(result, on_result))
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(lambda: self._on_finished(worker))
        self.stop_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(description or "working…")
        self.busy_changed.emit(True)
        if sync_workers() if run_sync is None else run_sync:
            worker.run()
        else:
            worker.start()
        return worker

    def cancel(self) -> None:
        if self.control is not None:
            self.control.cancel()
            self.status.setText("stopping…")

    def _on_progress(self, p: Any) -> None:
        if not isinstance(p, Progress):
            return
        if p.total > 0:
            self.progress.setRange(0, p.total)
            self.progress.setValue(min(p.done, p.total))
        else:
            self.progress.setRange(0, 0)
        if p.text:
            self.status.setText(p.text)

    def _on_returned(self, result: Any, on_result: Callable[[Any], None]) -> None:
        if isinstance(result, JobCancelled):
            self._on_aborted()
            return
        if isinstance(result, JobFailed):
            self.last_outcome = "failed"
            self.status.setText(f"failed: {result.message}")
            notify_error(result.message)
            return
        self.status.setText("done")  # on_result may say more
        try:
            on_result(result)
        except Exception as exc:  # showing results must not crash napari either
            logger.exception("napari-ramseg: showing the result failed")
            self.last_outcome = "failed"
            self.status.setText(f"failed: {error_message(exc)}")
            notify_error(error_message(exc))
            return
        self.last_outcome = "done"

    def _on_aborted(self) -> None:
        self.last_outcome = "cancelled"
        self.status.setText("cancelled")
        notify_info("napari-ramseg: cancelled")

    def _on_finished(self, worker: Any) -> None:
        if worker is not self.worker:
            return
        if not self.last_outcome and self.control is not None and self.control.cancelled():
            self._on_aborted()
        self.worker = None
        self.control = None
        self.stop_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if self.last_outcome == "done" else 0)
        self.busy_changed.emit(False)
