"""Amplitude mixup preview: what random amplitude mixup (RAM) does to an image, live.

Layout on the canvas, to the right of the chosen image (nothing overlaps it)::

    [image]   [original | mix with partner 1 | mix with partner 2 ...]      <- "mixup: <image>"
              [|F| original | |F| partner 1 | |F| partner 2 ...]           <- "spectra: <image>"
                 with the mixing window drawn on every spectrum             <- "mixing window: <image>"

Everything is computed at a preview resolution (long side ``PREVIEW_SIZE``) on the network's
normalised input ([-1, 1], model channels), with the same ``core.ram.amplitude_mixup`` that training
uses. Normalised, resized images and spectra are cached, so a slider move only re-runs the mixup
(a few milliseconds) and is applied on the UI thread after a short debounce. Reading a folder of
partner images is the one slow step and runs in a background job.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.config import MethodConfig
from ..core.preprocess import to_model_channels
from ..core.ram import amplitude_mixup, log_amplitude_spectrum, window_bounds
from ..core.sampling import resize_image
from ..errors import RamsegInputError
from ._common import (
    PREVIEW_FLAG,
    JobControl,
    JobRunner,
    LayerChecklist,
    LayerCombo,
    Progress,
    add_captions,
    displayed_plane,
    notify_error,
    upsert_layer,
    world_box,
)

PREVIEW_SIZE = 256  # long side of the preview, in pixels: the scale the model is trained at
DEBOUNCE_MS = 50
GAP = 0.04  # space between tiles, as a fraction of the tile size
ROW_GAP = 0.15  # space between the mosaic and the spectra row, room for the captions
SOURCE_LAYERS = "other image layers"
SOURCE_FOLDER = "folder of images"


@dataclass
class PreviewImage:
    """An image at preview resolution: normalised model channels and its log-amplitude spectrum."""

    name: str
    tensor: torch.Tensor  # (3, h, w) float32 in [-1, 1]
    spectrum: np.ndarray | None = None  # (h, w)


def preview_shape(height: int, width: int, size: int = PREVIEW_SIZE) -> tuple[int, int]:
    scale = min(1.0, size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_preview(image: np.ndarray, shape: tuple[int, int] | None = None, size: int = PREVIEW_SIZE) -> torch.Tensor:
    """A 2D grey/colour image -> (3, h, w) in [-1, 1] at the preview scale (or at ``shape``)."""
    image = np.asarray(image)
    target = shape or preview_shape(image.shape[0], image.shape[1], size)
    # cheap stride-subsampling first so that huge photographs do not stall the UI, then antialiased resize
    step = max(1, min(image.shape[0] // (2 * target[0]), image.shape[1] // (2 * target[1])))
    if step > 1:
        image = image[::step, ::step]
    try:
        channels = to_model_channels(image, 3)
    except ValueError as exc:
        raise RamsegInputError(str(exc)) from None
    return resize_image(torch.from_numpy(channels), target)


@contextlib.contextmanager
def single_threaded():
    """One intra-op thread for the preview's small FFTs: several threads only add start-up and
    contention cost at 256 px (3-7x slower on a busy 2-core machine). Restored afterwards."""
    before = torch.get_num_threads()
    if before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before > 1:
            torch.set_num_threads(before)


def _fingerprint(plane: np.ndarray) -> int:
    """A cheap hash of about 4096 evenly spread pixels: tells a changed image from a cached one."""
    step = max(1, int(np.sqrt(plane.shape[0] * plane.shape[1] / 4096)))
    return hash(np.ascontiguousarray(plane[::step, ::step]).tobytes())


def mix_tiles(original: torch.Tensor, partners: list[torch.Tensor], lam: float, window_ratio: float) -> torch.Tensor:
    """(1 + k, 3, h, w): the original, then its mixup with each partner (resized to its size)."""
    shape = tuple(original.shape[-2:])
    if not partners:
        return original[None]
    stack = torch.stack([resize_image(p, shape) for p in partners])
    mixed = amplitude_mixup(original[None].expand_as(stack), stack, lam, window_ratio)
    return torch.cat([original[None], mixed])


def mosaic(tiles: np.ndarray, gap: int, fill: float = 0.0) -> np.ndarray:
    """Tiles (n, h, w[, c]) side by side with ``gap`` pixels between them."""
    n, h, w = tiles.shape[:3]
    out = np.full((h, n * w + (n - 1) * gap, *tiles.shape[3:]), fill, dtype=tiles.dtype)
    for i in range(n):
        out[:, i * (w + gap): i * (w + gap) + w] = tiles[i]
    return out


class MixupPreviewWidget(QWidget):
    """Image, partners, window ratio L, lambda and sample count -> mixed images and spectra, live."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        defaults = MethodConfig()
        self.image_combo = LayerCombo(napari_viewer)
        self.source_combo = QComboBox()
        self.source_combo.addItems([SOURCE_LAYERS, SOURCE_FOLDER])
        self.partner_list = LayerChecklist(napari_viewer, exclude=self.image_combo.current_layer)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder with images of another domain")
        self.folder_button = QPushButton("Browse…")
        self.load_button = QPushButton("Load")
        self.ratio_slider = self._slider(1, 50, round(defaults.window_ratio * 100))
        self.lam_slider = self._slider(0, 100, 50)
        self.ratio_label, self.lam_label = QLabel(), QLabel()
        for label in (self.ratio_label, self.lam_label):
            label.setMinimumWidth(36)
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(1, 8)
        self.samples_spin.setValue(3)
        self.samples_spin.setToolTip(
            "How many partners (checked layers, or the first images of the folder) to mix with")
        self.preview_button = QPushButton("Preview")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.runner = JobRunner()

        folder_row = QHBoxLayout()
        folder_row.setContentsMargins(0, 0, 0, 0)
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self.folder_button)
        folder_row.addWidget(self.load_button)
        self.folder_box = QWidget()
        folder_layout = QVBoxLayout(self.folder_box)
        folder_layout.setContentsMargins(0, 0, 0, 0)
        folder_layout.addLayout(folder_row)
        folder_layout.addWidget(self.runner)  # reading the folder is the one background job here
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("partners", self.source_combo)
        form.addRow("", self.partner_list)
        form.addRow("", self.folder_box)
        form.addRow("window L", self._with_label(self.ratio_slider, self.ratio_label))
        form.addRow("λ (lam)", self._with_label(self.lam_slider, self.lam_label))
        form.addRow("samples", self.samples_spin)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.preview_button)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._live_update)
        self._cache: dict[Any, PreviewImage] = {}
        self._folder_partners: list[PreviewImage] = []
        self._folder_loaded: str | None = None
        self._spectra_key: tuple | None = None
        self.last_update_ms: float | None = None
        self.last_tiles: np.ndarray | None = None  # (1 + k, h, w, 3) in [0, 1], for tests and scripting

        self.source_combo.currentIndexChanged.connect(self._source_changed)
        self.folder_button.clicked.connect(self._browse)
        self.load_button.clicked.connect(lambda: self.load_folder())
        self.preview_button.clicked.connect(lambda: self.update_preview(notify=True))
        self.image_combo.currentIndexChanged.connect(self._image_changed)
        for slider in (self.ratio_slider, self.lam_slider):
            slider.valueChanged.connect(self._values_changed)
        self.samples_spin.valueChanged.connect(self.schedule_update)
        self.partner_list.itemChanged.connect(self.schedule_update)
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
        self.schedule_update()

    def _image_changed(self, *_: Any) -> None:
        self.partner_list.refresh()
        self.schedule_update()

    def _values_changed(self, *_: Any) -> None:
        self.ratio_label.setText(f"{self.window_ratio:.2f}")
        self.lam_label.setText(f"{self.lam:.2f}")
        self.schedule_update()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of partner images")
        if folder:
            self.folder_edit.setText(folder)
            self.load_folder()

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
        """Read the first ``samples`` images of the partner folder in the background."""
        folder = Path(self.folder_edit.text().strip()).expanduser()
        count = self.samples_spin.value()

        def job(control: JobControl):
            from ..io import is_supported, read_image

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
        self._show(layer, original, partners, display)
        self.last_update_ms = 1000 * (time.perf_counter() - start)
        self.status.setText(f"L = {self.window_ratio:.2f}, λ = {self.lam:.2f}, {len(partners)} partner(s); "
                            f"updated in {self.last_update_ms:.0f} ms")
        return True

    def _show(self, layer: Any, original: PreviewImage, partners: list[PreviewImage], display: np.ndarray) -> None:
        """Put the results on the canvas, touching only what changed (each napari update costs a redraw)."""
        viewer = self.viewer
        active = viewer.layers.selection.active
        h, w = display.shape[1:3]
        gap = max(2, round(GAP * max(h, w)))
        origin, size = world_box(layer)
        scale = size / np.array([h, w])  # one preview pixel in world units: tiles match the image's size
        left = origin[1] + size[1] + gap * scale[1]
        top_row = np.array([origin[0] + 0.5 * scale[0], left + 0.5 * scale[1]])
        row_step = h + max(gap, round(ROW_GAP * h))
        bottom_row = top_row + np.array([row_step * scale[0], 0.0])
        geometry = {"scale": tuple(scale), "translate": tuple(top_row)}
        spectra_geometry = {"scale": tuple(scale), "translate": tuple(bottom_row)}
        meta = {PREVIEW_FLAG: True}
        name = layer.name
        n = 1 + len(partners)

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

        r0, r1, c0, c1 = window_bounds(h, w, self.window_ratio)
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
        corner = np.array([origin[0], left])
        below = corner + np.array([row_step * scale[0], 0.0])
        positions = [corner + [0, i * step] for i in range(n)] + [below + [0, i * step] for i in range(n)]
        texts = ["original"] + [f"λ={self.lam:.2f} · {_short(p.name)}" for p in partners]
        texts += ["|F| original"] + [f"|F| {_short(p.name)}" for p in partners]
        add_captions(viewer, f"mixup captions: {name}", positions, texts, size=9)
        if active is not None and active in viewer.layers:
            viewer.layers.selection.active = active


def _short(name: str, limit: int = 14) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
