"""Segment dock: run a model on an image layer and add the labels, probabilities and uncertainty."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QPushButton, QWidget

from .. import layer_meta
from ...errors import RamsegInputError
from ._base import WARNING_COLOUR, DockWidget, note_label
from ._common import JobControl, Progress, get_predictor, layer_array, notify_error
from ._measures import measures_text
from ._segment_layers import show_result
from ._server import remote_model_name


@dataclass
class SegmentRequest:
    """What the widget hands to the background job (plain data, no Qt)."""

    image: np.ndarray
    kind: str  # "2d" or "volume"
    model: Path
    device: str
    postprocess: bool
    spacing: tuple[float, ...] | None = None  # a volume's (z, y, x) voxel spacing, when the layer knows it
    adapt: str | None = None  # also segment after adapting to this scan (core/inference/adapt/), with this method
    model_name: str = ""  # the model's name on a server (device "server": a bundled name or its folder's)


@dataclass
class AdaptedOutcome:
    """The segmentation after adapting to the scan, beside the plain one, and what the adaptation did."""

    labels: np.ndarray
    method: str
    fit_before: float | None
    fit_after: float | None
    seconds: float  # adapting and segmenting
    plain_seconds: float  # segmenting without adaptation, for comparison

    def line(self) -> str:
        def score(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}"

        return (f"adapted ({self.method}): fit {score(self.fit_before)} → {score(self.fit_after)}; "
                f"{self.seconds:.1f} s (plain {self.plain_seconds:.1f} s)")


@dataclass
class SegmentResult:
    labels: np.ndarray
    probabilities: np.ndarray
    entropy: np.ndarray
    channel_names: list[str]
    class_names: list[str]  # foreground names for mask values 1..K
    model: str
    device: str
    fit_warning: str = ""  # what differs from the model's source domains ('' when the image fits)
    measures: dict[str, Any] | None = None  # core/evaluation/measures.measure_case (+ where the optic disc was found)
    adapted: AdaptedOutcome | None = None
    measures_reliable: bool = True  # False when the image does not fit the model's sources


# What napari imports the first time a Labels layer is made (its features table, colour and label
# utilities): ~0.6 s. Imported by the job on its worker thread, it no longer stalls the event loop
# when the result is shown (bench/speed/benchmark.py, ui_max_stall_ms).
LAYER_IMPORTS = ("pandas", "scipy.linalg", "scipy.ndimage", "skimage.color", "skimage.exposure", "skimage.util")


def warm_layer_imports() -> None:
    for name in LAYER_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:  # napari works without some of them; then there is nothing to warm
            pass
    try:  # vispy's line dash patterns: pure numpy, computed once per process (lru_cache) when napari
        # builds the first line visual (a Labels layer's polygon overlay): ~50-140 ms off the UI thread
        from vispy.visuals.line.dash_atlas import DashAtlas

        DashAtlas()
    except Exception:  # noqa: BLE001 - only a warm-up
        pass


def input_kind(layer: Any) -> str:
    """'2d' for grey or colour images, 'volume' for grey 3D stacks; anything else is refused."""
    ndim = layer_array(layer).ndim
    if layer.rgb:
        if ndim == 3:
            return "2d"
        raise RamsegInputError(f"layer '{layer.name}': colour volumes are not supported; "
                               "give a 2D colour image or a grey volume")
    if ndim == 2:
        return "2d"
    if ndim == 3:
        return "volume"
    raise RamsegInputError(f"layer '{layer.name}' has {ndim}D data (shape {layer_array(layer).shape}); "
                           "expected a 2D image or a 3D volume")


def layer_spacing(layer: Any) -> tuple[float, ...] | None:
    """A volume layer's voxel spacing: its scale, when a reader set one (NIfTI does, and writes it
    to ``metadata["spacing"]`` too) or the user did; a 2D layer's pixel spacing when its reader recorded
    one (as ``ramseg predict`` reads it from the file); None otherwise."""
    scale = tuple(float(s) for s in layer.scale)
    metadata = layer.metadata or {}
    if len(scale) != 3 or getattr(layer, "rgb", False):
        return layer_meta.spacing_of(metadata, 2)
    if layer_meta.spacing_of(metadata, 3) is not None or layer_meta.NIFTI_HEADER in metadata \
            or any(s != 1.0 for s in scale):
        return scale
    return None


def request_image(request: SegmentRequest) -> Any:
    """The layer's array as the pipeline takes a case: an ``io.ImageData`` of the layer's kind."""
    from ...io import ImageData

    image = np.asarray(request.image)
    axes = "ZYX" if request.kind == "volume" else ("YXC" if image.ndim == 3 else "YX")
    return ImageData(image, spacing=request.spacing, axes=axes)


def segment_job(request: SegmentRequest):
    """The job: load (or reuse) the model, then segment the case (``core/review/pipeline.segment_case``, as
    ``ramseg predict`` and the Worklist do); a refused case ends the job with the reason. Device
    "server": the same case through the remembered server (``server_segment_job``)."""
    from ...core.review.pipeline import CaseOptions, segment_case
    from ._server import SERVER

    if request.device == SERVER:
        return server_segment_job(request)

    def job(control: JobControl):
        yield Progress(0, 0, "loading model…")
        predictor = get_predictor(request.model, request.device)
        image = request_image(request)
        started = time.perf_counter()
        if image.is_volume:
            depth = request.image.shape[0]
            yield Progress(0, depth, f"segmenting {depth} slices (2.5D)…")
        else:
            yield Progress(0, 0, f"segmenting on {predictor.device.type}…")
        options = CaseOptions(postprocess=request.postprocess, cancelled=control.cancelled,
                              progress=lambda done, total: control.report(done, total, f"slice {done}/{total}"))
        result = segment_case(predictor, image, options)
        if result.refused:
            raise RamsegInputError(result.refusal)
        plain_seconds = time.perf_counter() - started
        adapted = None
        if request.adapt:
            yield Progress(0, 0, f"adapting to this scan ({request.adapt})…")
            adapted = adapt_job_step(predictor, request, control, plain_seconds)
        warm_layer_imports()
        prediction = result.prediction
        return SegmentResult(fit_warning=result.fit.differs,
            labels=prediction.labels, probabilities=prediction.probabilities, entropy=prediction.entropy,
            channel_names=list(prediction.channel_names), class_names=list(predictor.labels.names),
            model=str(request.model), device=str(predictor.device), adapted=adapted,
            measures={**result.measures, **result.extras}, measures_reliable=result.reliable)

    return job


def server_segment_job(request: SegmentRequest):
    """The case segmented by the server's per-case pipeline: the same ``CaseResult`` (with its maps, for
    the probability and uncertainty layers), then again adapted to the scan when asked."""
    from ._server import server_client, wait_for

    def job(control: JobControl):
        yield Progress(0, 0, "connecting to the server…")
        client = server_client()
        image = request_image(request)

        def segment(adapt: str | None = None) -> Any:
            remote = client.segment(image, model=request.model_name, adapt=adapt, postprocess=request.postprocess,
                                    maps=adapt is None)
            result = remote.case_result()
            if result.refused:
                raise RamsegInputError(result.refusal)
            return remote, result

        started = time.perf_counter()
        remote, result = yield from wait_for(segment, control, f"segmenting on {client.url}…")
        plain_seconds = time.perf_counter() - started
        adapted = None
        if request.adapt:
            started = time.perf_counter()
            adapting = f"adapting to this scan ({request.adapt}) on the server…"
            adapted_remote, adapted_result = yield from wait_for(lambda: segment(request.adapt), control, adapting)
            report = adapted_remote.raw.get("adaptation") or {}
            score = lambda fit: None if not fit else fit.get("score")  # noqa: E731
            adapted = AdaptedOutcome(adapted_result.prediction.labels, request.adapt, score(report.get("fit_before")),
                                     score(report.get("fit_after")), time.perf_counter() - started, plain_seconds)
        warm_layer_imports()
        prediction = result.prediction
        return SegmentResult(fit_warning=result.fit.differs if result.fit else "",
            labels=prediction.labels, probabilities=prediction.probabilities, entropy=prediction.entropy,
            channel_names=list(prediction.channel_names), class_names=list(remote.raw["labels"]["names"]),
            model=str(request.model), device=f"server {client.url} ({remote.model})",
            adapted=adapted, measures={**result.measures, **result.extras}, measures_reliable=result.reliable)

    return job


_ADAPTERS: dict[tuple[int, str], Any] = {}  # one per (loaded model, method): the prompt's memory spans scans


def adapt_job_step(predictor: Any, request: SegmentRequest, control: JobControl,
                   plain_seconds: float) -> AdaptedOutcome:
    """Adapt to the scan once (a volume too; an optic disc model to each ROI its two stages segment)
    and segment it again through the same pipeline; the plain result stays as it was."""
    from ...core.inference.adapt import AdaptedPredictor
    from ...core.review.pipeline import CaseOptions, segment_case

    key = (id(predictor), str(request.adapt))
    if key not in _ADAPTERS or _ADAPTERS[key].base is not predictor:
        _ADAPTERS[key] = AdaptedPredictor(predictor, request.adapt)
    adapter = _ADAPTERS[key]
    options = CaseOptions(postprocess=request.postprocess, cancelled=control.cancelled,
                          progress=lambda d, t: control.report(d, t, f"adapted slice {d}/{t}"))
    result = segment_case(predictor, request_image(request), options, segmenter=adapter)
    if result.refused:
        raise RamsegInputError(result.refusal)
    report = adapter.last
    return AdaptedOutcome(result.prediction.labels, report.method,
                          None if report.fit_before is None else report.fit_before.score,
                          None if report.fit_after is None else report.fit_after.score, report.seconds, plain_seconds)


class SegmentWidget(DockWidget):
    """Image layer + model + device -> a Labels layer, and optionally probability / uncertainty layers."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        form = QFormLayout()
        self.image_combo, self.model_picker, self.device_combo = self.add_image_model_device(form, server=True)
        self.probabilities_box = QCheckBox("probabilities")
        self.uncertainty_box = QCheckBox("uncertainty (entropy)")
        self.postprocess_box = QCheckBox("post-process (largest component, fill holes)")
        self.postprocess_box.setToolTip("Keep the largest connected component per structure and fill holes. "
                                        "Leave off for thin branching structures such as vessels.")
        self.adapt_box, self.adapt_combo, adapt_row = adapt_controls()
        self.segment_button = QPushButton("Segment")
        self.runner = self.add_job_runner()
        self.fit_label = note_label("", WARNING_COLOUR)  # when the image does not look like the source domains
        self.fit_label.setVisible(False)
        self.adapt_label = note_label("")  # the fit before and after adapting, and the cost
        self.adapt_label.setVisible(False)
        self.measures_label = note_label("")  # the case's measures (vCDR for the optic disc)
        self.measures_label.setVisible(False)
        self.lay_out(form, self.probabilities_box, self.uncertainty_box, self.postprocess_box, adapt_row,
                     self.segment_button, self.runner, self.fit_label, self.adapt_label, self.measures_label)

        self.segment_button.clicked.connect(lambda: self.segment())
        self.runner.busy_changed.connect(lambda busy: self.segment_button.setEnabled(not busy))

    # -- public API ---------------------------------------------------------------------------
    def set_model(self, path: str | Path | None) -> None:
        """Use this run folder or model file (None: the bundled default) for the next segmentation."""
        self.model_picker.set_model(path)

    def cancel(self) -> None:
        self.runner.cancel()

    def segment(self, run_sync: bool | None = None) -> Any:
        """Start segmenting the chosen layer; returns the worker (None when the input was refused)."""
        layer = self.image_combo.current_layer()
        try:
            if layer is None:
                raise RamsegInputError("no image layer to segment: open an image first")
            request = SegmentRequest(
                image=layer_array(layer), kind=input_kind(layer), model=self.model_picker.model_path(),
                device=self.device_combo.value(), postprocess=self.postprocess_box.isChecked(),
                spacing=layer_spacing(layer),
                adapt=self.adapt_combo.currentText() if self.adapt_box.isChecked() else None,
                model_name=remote_model_name(self.model_picker.model_path(), self.model_picker.bundled_name()))
        except RamsegInputError as exc:
            notify_error(str(exc))
            return None
        want_probs, want_entropy = self.probabilities_box.isChecked(), self.uncertainty_box.isChecked()
        for stale in (self.fit_label, self.measures_label, self.adapt_label):  # the last image's, not this one's
            stale.setVisible(False)
        return self.runner.start(
            segment_job(request),
            on_result=lambda result: self._show(layer, result, want_probs, want_entropy),
            description=f"segmenting '{layer.name}'…", run_sync=run_sync)

    # -- results ------------------------------------------------------------------------------
    def show_fit(self, name: str, warning: str) -> None:
        """The dock's fit line and a napari warning when the image does not fit the model; cleared when it does."""
        self.fit_label.setText(f"⚠ '{name}': {warning}" if warning else "")
        self.fit_label.setVisible(bool(warning))
        if warning:
            from napari.utils.notifications import show_warning

            show_warning(f"'{name}' does not look like the model's training data: {warning}. "
                         "The segmentation was made anyway; check it with care.")

    def _show(self, layer: Any, result: SegmentResult, want_probs: bool, want_entropy: bool) -> Iterator[None]:
        self.show_fit(layer.name, result.fit_warning)
        # one layer per event-loop tick (JobRunner runs the steps), edited labels kept: _segment_layers
        yield from show_result(self.viewer, layer, result, want_probs, want_entropy, self.runner.status.setText)
        text = measures_text(result.measures or {}, result.class_names, result.measures_reliable)
        self.measures_label.setText(text)
        self.measures_label.setVisible(bool(text))
        self.adapt_label.setVisible(result.adapted is not None)
        if result.adapted is not None:
            self.adapt_label.setText(f"'{layer.name}' {result.adapted.line()}")
            yield from show_adapted(self.viewer, layer, result)


def adapt_controls() -> tuple[QCheckBox, QComboBox, QWidget]:
    """"adapt to this scan" and the method (``core/config.ADAPT_METHODS``, the default first chosen)."""
    from ...core.config import ADAPT, ADAPT_METHODS

    box = QCheckBox("adapt to this scan")
    box.setToolTip("Also segment the image after adapting to it (test-time adaptation): both masks are added, "
                   "with the fit score before and after and the cost. Off unless ticked.")
    combo = QComboBox()
    combo.addItems(list(ADAPT_METHODS))
    combo.setCurrentText(ADAPT.method)
    combo.setToolTip("align: training-free, the scan's low-frequency amplitude towards the model's sources; "
                     "prompt: a learned low-frequency prompt; adabn, tent: BatchNorm baselines")
    row = QWidget()
    line = QHBoxLayout(row)
    line.setContentsMargins(0, 0, 0, 0)
    line.addWidget(box)
    line.addWidget(combo)
    return box, combo, row


def show_adapted(viewer: Any, layer: Any, result: SegmentResult) -> Iterator[None]:
    """The adapted mask as its own Labels layer above the plain one, selected, so both can be compared."""
    from ...palette import label_color
    from ._common import upsert_layer

    names = ["background", *result.class_names]
    colors = {0: "transparent", None: "transparent", **{i: label_color(i) for i in range(1, len(names))}}
    adapted = upsert_layer(
        viewer, f"{layer.name} segmentation (adapted: {result.adapted.method})", result.adapted.labels, "labels",
        opacity=0.7, colormap=colors, scale=tuple(layer.scale), translate=tuple(layer.translate),
        metadata={**layer_meta.geometry_of(layer.metadata),
                  layer_meta.CLASS_NAMES: {str(i): n for i, n in enumerate(names) if i},
                  layer_meta.MODEL: result.model, layer_meta.DEVICE: result.device})
    viewer.layers.selection.active = adapted
    yield
