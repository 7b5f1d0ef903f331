"""Amplitude mixup preview: what random amplitude mixup (RAM) does to an image, live.

Layout on the canvas, to the right of the chosen image, in a place of its own (``_placement``: below
any other preview it would meet; layers over it are hidden and the view is fitted to it when made)::

    [image]   [original | mix with partner 1 | mix with partner 2 ...]      <- "mixup: <image>"
              [|F| original | |F| partner 1 | |F| partner 2 ...]           <- "spectra: <image>"
                 with the mixing window drawn on every spectrum             <- "mixing window: <image>"

Everything is computed at a preview resolution (long side ``PREVIEW_SIZE``) on the network's
normalised input ([-1, 1], model channels), with the same ``core.method.ram.amplitude_mixup`` that training
uses. Normalised, resized images and spectra are cached, so a slider move only re-runs the mixup
(a few milliseconds) and is applied on the UI thread after a short debounce. Reading a folder of
partner images is the one slow step and runs in a background job.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QSlider, QSpinBox, QVBoxLayout,
                            QWidget)

from ...core.config import MethodConfig
from ...core.method.ram import log_amplitude_spectrum
from ...core.data.geometry import resize_image
from ...errors import RamsegInputError
from ._base import DockWidget, note_label
from ._common import JobControl, LayerChecklist, Progress, displayed_plane, notify_error
from ._mixup_canvas import MixupCanvas
from ._placement import hidden_note
from ._mixup_tiles import (  # noqa: F401 - PREVIEW_SIZE, preview_shape, mosaic: part of this module's API
    PREVIEW_SIZE,
    PreviewImage,
    _fingerprint,
    mix_tiles,
    mosaic,
    preview_shape,
    single_threaded,
    to_preview,
)

DEBOUNCE_MS = 50
MAX_SAMPLES = 8  # partners shown at most (the first images of a folder)
LAM_HELP = ("λ is the image's own share of the low-frequency amplitude inside the window L: "
            "λ = 1 gives the original back, λ = 0 takes the partner's amplitude (its colour and contrast, "
            "its \"style\") and keeps the image's phase (its anatomy). Training draws λ at random.")
SOURCE_LAYERS = "other image layers"
SOURCE_FOLDER = "folder of images"


class MixupPreviewWidget(DockWidget):
    """Image, partners, window ratio L, lambda and sample count -> mixed images and spectra, live."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        defaults = MethodConfig()
        form = QFormLayout()
        self.image_combo = self.add_layer_choice(form, "image")
        self.source_combo = QComboBox()
        self.source_combo.addItems([SOURCE_LAYERS, SOURCE_FOLDER])
        self.partner_list = LayerChecklist(napari_viewer, exclude=self.image_combo.current_layer)
        self.load_button = QPushButton("Load")
        self.folder_edit = self.add_path(None, "", "Folder of partner images", button_text="Browse…",
                                         placeholder="folder with images of another domain",
                                         extra=[self.load_button], then=lambda: self.load_folder())
        self.folder_button = self.folder_edit.row.browse_button
        self.ratio_slider = self._slider(1, 50, round(defaults.window_ratio * 100))
        self.lam_slider = self._slider(0, 100, 50)
        self.ratio_label, self.lam_label = QLabel(), QLabel()
        for label in (self.ratio_label, self.lam_label):
            label.setMinimumWidth(36)
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(1, MAX_SAMPLES)
        self.samples_spin.setValue(3)
        self.samples_spin.setToolTip(
            "How many partners (checked layers, or the first images of the folder) to mix with; "
            "at most the number of partners there are")
        self.lam_help = note_label(LAM_HELP)
        self.legend = QLabel("")  # the partners' full names, under the numbers the captions use
        self.legend.setWordWrap(True)
        self.preview_button = QPushButton("Preview")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.runner = self.add_job_runner()

        self.folder_box = QWidget()
        folder_layout = QVBoxLayout(self.folder_box)
        folder_layout.setContentsMargins(0, 0, 0, 0)
        folder_layout.addWidget(self.folder_edit.row)
        folder_layout.addWidget(self.runner)  # reading the folder is the one background job here
        form.addRow("partners", self.source_combo)
        form.addRow("", self.partner_list)
        form.addRow(self.folder_box)  # across both columns: a field column squeezes its word-wrapped status
        form.addRow("window L", self._with_label(self.ratio_slider, self.ratio_label))
        form.addRow("λ (own share)", self._with_label(self.lam_slider, self.lam_label))
        form.addRow("", self.lam_help)
        form.addRow("samples", self.samples_spin)
        self.lay_out(form, self.preview_button, self.legend, self.status)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._live_update)
        self._cache: dict[Any, PreviewImage] = {}
        self._folder_partners: list[PreviewImage] = []
        self._folder_loaded: str | None = None
        self.canvas = MixupCanvas(napari_viewer)
        self.last_update_ms: float | None = None
        self.last_tiles: np.ndarray | None = None  # (1 + k, h, w, 3) in [0, 1], for tests and scripting

        self.source_combo.currentIndexChanged.connect(self._source_changed)
        self.load_button.clicked.connect(lambda: self.load_folder())
        self.preview_button.clicked.connect(lambda: self.update_preview(notify=True))
        self.image_combo.currentIndexChanged.connect(self._image_changed)
        for slider in (self.ratio_slider, self.lam_slider):
            slider.valueChanged.connect(self._values_changed)
        self.samples_spin.valueChanged.connect(self.schedule_update)
        self.partner_list.itemChanged.connect(self._partners_changed)
        self._source_changed()
        self._values_changed()

    # -- small UI helpers ---------------------------------------------------------------------
    @staticmethod
    def _slider(lo: int, hi: int, value: int) -> QSlider:
        slider = QSlider(Qt.Horizontal)
        slider.setRange(lo, hi)
        slider.setValue(value)
        return slider

    @staticmethod
    def _with_label(slider: QSlider, label: QLabel) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(slider, 1)
        row.addWidget(label)
        return box

    def _source_changed(self, *_: Any) -> None:
        folder = self.source_combo.currentText() == SOURCE_FOLDER
        self.partner_list.setVisible(not folder)
        self.folder_box.setVisible(folder)
        for child in self.folder_box.findChildren(QWidget):
            child.updateGeometry()  # styled on first show: the layouts' cached sizes are stale (2 px short)
        self._partners_changed()

    def _image_changed(self, *_: Any) -> None:
        self.partner_list.refresh()
        self._partners_changed()

    def _partners_changed(self, *_: Any) -> None:
        self._update_samples_limit()
        self.schedule_update()

    def _available_partners(self) -> int:
        if self.source_combo.currentText() == SOURCE_FOLDER:
            return len(self._folder_partners) if self._folder_loaded else MAX_SAMPLES
        image = self.image_combo.currentText()
        return sum(1 for name in self.partner_list.checked_names() if name != image)

    def _update_samples_limit(self) -> None:
        """'samples' never exceeds the partners there are; at its maximum it follows new partners."""
        spin = self.samples_spin
        n = min(MAX_SAMPLES, max(1, self._available_partners()))
        old_max, value = spin.maximum(), spin.value()
        spin.setSuffix(f" of {n}")
        if n == old_max:
            return
        spin.blockSignals(True)
        spin.setMaximum(n)  # Qt lowers the value with it
        if n > old_max and value == old_max:
            spin.setValue(n)
        spin.blockSignals(False)

    def _values_changed(self, *_: Any) -> None:
        self.ratio_label.setText(f"{self.window_ratio:.2f}")
        self.lam_label.setText(f"{self.lam:.2f}")
        self.schedule_update()

    # -- parameters ---------------------------------------------------------------------------
    @property
    def window_ratio(self) -> float:
        return self.ratio_slider.value() / 100.0

    @property
    def lam(self) -> float:
        return self.lam_slider.value() / 100.0

    def set_params(self, window_ratio: float | None = None, lam: float | None = None,
                   samples: int | None = None) -> None:
        """Set the sliders (values are snapped to the slider steps of 0.01)."""
        if window_ratio is not None:
            self.ratio_slider.setValue(round(window_ratio * 100))
        if lam is not None:
            self.lam_slider.setValue(round(lam * 100))
        if samples is not None:
            self.samples_spin.setValue(samples)

    def set_partners(self, layers_or_folder: Any) -> None:
        """Partner layers (names or layers), or a folder path (read it with ``load_folder`` / Load)."""
        if isinstance(layers_or_folder, (str, Path)) and Path(layers_or_folder).is_dir():
            self.source_combo.setCurrentText(SOURCE_FOLDER)
            self.folder_edit.setText(str(layers_or_folder))
            return
        self.source_combo.setCurrentText(SOURCE_LAYERS)
        self.partner_list.set_checked([getattr(x, "name", str(x)) for x in layers_or_folder])

    # -- data ---------------------------------------------------------------------------------
    def _preview_image(self, layer: Any, shape: tuple[int, int] | None = None) -> PreviewImage:
        plane, z = displayed_plane(layer, self.viewer)
        # keyed by content, not id(): plugin widgets see layers through proxies that change identity
        key = (layer.name, z, shape, plane.shape, str(plane.dtype), _fingerprint(plane))
        cached = self._cache.get(key)
        if cached is None:
            tensor = to_preview(plane, shape)
            cached = PreviewImage(layer.name, tensor, log_amplitude_spectrum(tensor.numpy()))
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def load_folder(self, run_sync: bool | None = None) -> Any:
        """Read the first ``MAX_SAMPLES`` images of the partner folder in the background."""
        folder = Path(self.folder_edit.text().strip()).expanduser()
        count = MAX_SAMPLES  # 'samples' then picks among them without reading the folder again

        def job(control: JobControl):
            from ...io import is_supported, read_image

            if not folder.is_dir():
                raise RamsegInputError("not a folder", folder)
            files = sorted(p for p in folder.iterdir() if p.is_file() and is_supported(p))[:count]
            if not files:
                raise RamsegInputError("no PNG, JPEG, TIFF or NIfTI images in this folder", folder)
            out = []
            for i, path in enumerate(files):
                if control.cancelled():
                    raise InterruptedError
                yield Progress(i, len(files), f"reading {path.name}")
                image = read_image(path)
                array = image.array[image.array.shape[0] // 2] if image.is_volume else image.array
                out.append(PreviewImage(path.name, to_preview(array)))
            return out

        def done(partners: list[PreviewImage]) -> None:
            self._folder_partners = partners
            self._folder_loaded = str(folder)
            self._cache.clear()
            self.runner.status.setText(f"{len(partners)} partner images loaded")
            self._update_samples_limit()
            self.update_preview()

        return self.runner.start(job, on_result=done, description=f"reading {folder}", run_sync=run_sync)

    def _resized(self, image: PreviewImage, shape: tuple[int, int]) -> PreviewImage:
        """A folder image brought to the original's preview size, with its spectrum at that size."""
        key = ("folder", self._folder_loaded, image.name, shape)
        cached = self._cache.get(key)
        if cached is None:
            tensor = resize_image(image.tensor, shape)
            cached = PreviewImage(image.name, tensor, log_amplitude_spectrum(tensor.numpy()))
            self._cache[key] = cached
        return cached

    def _partners(self, shape: tuple[int, int]) -> list[PreviewImage]:
        count = self.samples_spin.value()
        if self.source_combo.currentText() == SOURCE_FOLDER:
            return [self._resized(p, shape) for p in self._folder_partners[:count]]
        image = self.image_combo.currentText()
        layers = [layer for layer in self.partner_list.checked_layers() if layer.name != image]
        return [self._preview_image(layer, shape) for layer in layers[:count]]

    # -- preview ------------------------------------------------------------------------------
    def schedule_update(self, *_: Any) -> None:
        """Recompute after ``DEBOUNCE_MS`` of quiet (slider drags coalesce into one update)."""
        self._timer.start()

    def _live_update(self) -> None:
        self.update_preview(notify=False)

    def update_preview(self, notify: bool = False) -> bool:
        """Recompute the mosaic, spectra and window now; returns False (and says why) if it cannot."""
        start = time.perf_counter()
        self._update_samples_limit()
        try:
            layer = self.image_combo.current_layer()
            if layer is None:
                raise RamsegInputError("no image layer: open an image first")
            original = self._preview_image(layer)
            partners = self._partners(tuple(original.tensor.shape[-2:]))
            if not partners:
                raise RamsegInputError("choose at least one partner: check another image layer, or load a folder")
            with single_threaded():
                tiles = mix_tiles(original.tensor, [p.tensor for p in partners], self.lam, self.window_ratio)
        except RamsegInputError as exc:
            self.status.setText(str(exc))
            if notify:
                notify_error(str(exc))
            return False
        display = ((tiles.permute(0, 2, 3, 1).numpy() + 1.0) / 2.0).clip(0.0, 1.0).astype(np.float32)
        self.last_tiles = display
        hidden = self._show(layer, original, partners, display, focus=notify)
        self.last_update_ms = 1000 * (time.perf_counter() - start)
        lam = self.lam
        self.status.setText(f"L = {self.window_ratio:.2f}, λ = {lam:.2f} ({100 * lam:.0f} % the image's own "
                            f"amplitude, {100 * (1 - lam):.0f} % the partner's), {len(partners)} partner(s); "
                            f"updated in {self.last_update_ms:.0f} ms." + hidden_note(hidden))
        return True

    def _show(self, layer: Any, original: PreviewImage, partners: list[PreviewImage], display: np.ndarray,
              focus: bool = False) -> list[str]:
        hidden = self.canvas.show(layer, original, partners, display, self.window_ratio, focus=focus)
        self.legend.setText("partners: " + ", ".join(f"{i} · {p.name}" for i, p in enumerate(partners, 1)))
        return hidden
