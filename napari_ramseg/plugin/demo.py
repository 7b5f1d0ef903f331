"""``ramseg demo``: napari with the HRF sample, the bundled model and every widget docked.

``RAMSEG_DEMO_MODEL`` points the demo at another model (a run folder or ``.safetensors`` file),
e.g. a tiny test model while the bundled one is not installed.
``python -m napari_ramseg.plugin.demo --screenshots DIR`` writes the README screenshots.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

PLUGIN = "napari-ramseg"
WIDGETS = ("Segment", "Amplitude mixup preview", "Restoration preview", "Train", "Correct and fine-tune")
OPTIONAL_WIDGETS = ("Train", "Correct and fine-tune")  # written elsewhere; the demo works without them
MODEL_ENV = "RAMSEG_DEMO_MODEL"
SAMPLE_IMAGE = "HRF fundus 01_h"
SAMPLE_MASK = "vessels (expert)"
SCREENSHOT_SIZE = (1400, 860)  # window size for screenshots: readable controls, room for the canvas


def demo_model() -> Path | None:
    """The model the demo uses: ``RAMSEG_DEMO_MODEL`` or the bundled one; None if neither exists."""
    from ..core.models.run_folder import RunFolder
    from ..models import bundled_model_path

    override = os.environ.get(MODEL_ENV, "").strip()
    path = Path(override).expanduser() if override else bundled_model_path()
    if path.is_dir() and not RunFolder(path).model_weights.exists():
        return None
    return path if path.exists() else None


HEADLESS_QPA = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb", "wayland")  # need no X display


def no_display_note(screenshot: Path | None = None) -> str:
    """One line saying how to run the demo where there is no display (an SSH session, a container);
    "" where napari can open its window. Qt itself would abort the process (exit 134)."""
    if not sys.platform.startswith("linux"):
        return ""
    platform = os.environ.get("QT_QPA_PLATFORM", "").split(":")[0].strip()
    if platform in HEADLESS_QPA or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return ""
    command = "ramseg demo" + (f" --screenshot {screenshot}" if screenshot else "")
    return f"no display to open napari on (DISPLAY is not set); run it as: xvfb-run -a {command}"


def prefer_qt6() -> str | None:
    """Open napari on PyQt6 when it is installed and nothing chose a Qt binding yet (``QT_API``): with both
    bindings installed qtpy would take PyQt5, and napari then warns at every start that its PyQt5 support is
    deprecated (and that system theme detection needs Qt 6). With PyQt5 alone the warning is napari's
    honest notice and stays. Returns the binding chosen, if any; call before Qt is imported."""
    import importlib.util

    if os.environ.get("QT_API") or "qtpy" in sys.modules or importlib.util.find_spec("PyQt6") is None:
        return None
    os.environ["QT_API"] = "pyqt6"
    return "pyqt6"


def process_events(rounds: int = 5) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(rounds):
        QApplication.processEvents()


def open_demo_viewer(show: bool = True) -> tuple[Any, dict[str, Any]]:
    """A viewer with the sample loaded and the widgets docked (tabbed); returns (viewer, widgets by name).

    Each widget's dock is reachable as ``widget.parent()``; ``raise_dock(widget)`` brings its tab forward.
    """
    import napari

    viewer = napari.Viewer(title="napari-ramseg demo", show=show)
    viewer.window.resize(*SCREENSHOT_SIZE)
    viewer.open_sample(PLUGIN, "fundus")
    widgets: dict[str, Any] = {}
    for name in WIDGETS:
        try:
            _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=bool(widgets))
        except Exception as exc:  # a widget that fails to import must not take the demo down
            if name not in OPTIONAL_WIDGETS:
                raise
            warnings.warn(f"napari-ramseg demo: skipping the '{name}' widget ({type(exc).__name__}: {exc})",
                          stacklevel=2)
            continue
        widgets[name] = widget
    _readable_tabs(next(iter(widgets.values()), None))
    raise_dock(widgets.get("Segment"))
    return viewer, widgets


def _readable_tabs(widget: Any) -> None:
    """Full dock names on the tabs, with scroll arrows, instead of five tabs elided to "S…", "T…"."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QTabBar

    window = widget.parent().parent() if widget is not None and widget.parent() is not None else None
    if window is None:
        return
    for bar in window.findChildren(QTabBar):
        bar.setElideMode(Qt.ElideNone)
        bar.setUsesScrollButtons(True)


DOCK_WIDTH = 440


def raise_dock(widget: Any) -> None:
    """Bring a docked widget's tab to the front, wide enough to read its controls."""
    from qtpy.QtCore import Qt

    dock = widget.parent() if widget is not None else None
    if dock is None:
        return
    dock.show()
    dock.raise_()
    window = dock.parent()
    if hasattr(window, "resizeDocks"):
        window.resizeDocks([dock], [DOCK_WIDTH], Qt.Horizontal)


def _dismiss_notifications() -> None:
    """Close notification toasts (e.g. napari's Qt-backend notice) so they do not cover the canvas."""
    from qtpy.QtWidgets import QApplication, QWidget

    for top in QApplication.topLevelWidgets():
        for widget in [top, *top.findChildren(QWidget)]:
            if type(widget).__name__ == "NapariQtNotification":
                widget.close()


def shrink_png(path: Path, limit: int = 400_000) -> None:
    """Keep a screenshot under ``limit`` bytes: optimise, then 256 colours, then scale down."""
    from PIL import Image

    path = Path(path)
    if path.stat().st_size <= limit:
        return
    with Image.open(path) as im:
        image = im.convert("RGB")
    image.save(path, optimize=True)
    scale = 1.0
    while path.stat().st_size > limit and scale > 0.3:
        size = (round(image.width * scale), round(image.height * scale))
        small = image if scale == 1.0 else image.resize(size, Image.LANCZOS)
        paletted = small.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
        paletted.save(path, optimize=True)
        scale *= 0.85


def take_screenshot(viewer: Any, path: Path, zoom: float = 1.0, reset: bool = True) -> None:
    """The window as the user sees it; ``reset``: the whole scene first (else the view a dock chose)."""
    if reset:
        viewer.reset_view()
    if zoom != 1.0:
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        camera.zoom = camera.zoom * zoom
    process_events()
    _dismiss_notifications()
    process_events()
    viewer.screenshot(str(path), canvas_only=False)


def world_box(layer: Any) -> tuple[Any, Any]:
    """(origin, size) of a layer's Y, X extent in world units, pixel edges included: where a screenshot puts
    a layer's copy and its caption (the docks' own measure)."""
    from .widgets._common import world_box as box

    return box(layer)


def add_captions(viewer: Any, name: str, positions: Any, texts: list[str], size: int = 10) -> Any:
    """Text captions at ``positions`` (world coordinates, upper-left anchored) in one Points layer ``name``,
    as the docks caption their previews."""
    from .widgets._common import add_captions as captions

    return captions(viewer, name, positions, texts, size=size)


def run_demo(screenshot: Path | None = None) -> int:
    """Open the demo; with ``screenshot`` write the window to that PNG and exit instead of running."""
    import napari

    viewer, widgets = open_demo_viewer(show=True)
    segment = widgets["Segment"]
    model = demo_model()
    if model is None:
        from napari.utils.notifications import show_warning

        show_warning("napari-ramseg demo: the bundled model is not installed yet; train one or set "
                     f"{MODEL_ENV} to a run folder, then press Segment")
    else:
        segment.set_model(model)
        for name in ("Restoration preview",):
            if name in widgets:
                widgets[name].set_model(model)
        segment.image_combo.set_layer(viewer.layers[SAMPLE_IMAGE])
        segment.segment(run_sync=True)
        if SAMPLE_MASK in viewer.layers:
            viewer.layers[SAMPLE_MASK].visible = False  # the prediction is what the demo shows
    viewer.layers.selection.active = viewer.layers[SAMPLE_IMAGE]
    viewer.reset_view()
    if screenshot is None:
        napari.run()
        return 0
    screenshot = Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    take_screenshot(viewer, screenshot)
    viewer.close()
    return 0


SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # a development checkout's data, if any
PROSTATE_VOLUME = SHARED_DATA / "prostate_volume" / "Case00.nii.gz"  # PROMISE12 case 0 (T2 MRI)
PARTNER_FILES = (SHARED_DATA / "vessels" / "STARE" / "images" / "im0001.png",
                 SHARED_DATA / "vessels" / "CHASE_DB1" / "images" / "Image_01L.jpg")


def screenshot_partners() -> list[tuple[str, Any]]:
    """Three partner photographs from other cameras for mixup_preview.png: scikit-image's retina
    (CC0) and, in a development checkout, a STARE and a CHASE_DB1 image; else two recoloured retinas."""
    import numpy as np
    from skimage import data as skdata

    from ..io import read_image

    retina = np.asarray(skdata.retina())
    partners = [("retina (skimage)", retina)]
    for path in PARTNER_FILES:
        if path.is_file():
            partners.append((f"{path.parent.parent.name} {path.stem}", read_image(path).array))
    if len(partners) < 3:
        partners += [("retina, green-blue", retina[..., [1, 2, 0]]),
                     ("retina, grey", retina.mean(axis=-1).astype(np.uint8))][: 3 - len(partners)]
    return partners


def _segment_shot(viewer: Any, widgets: dict[str, Any], model: Path, shot: Any) -> None:
    """segment.png: labels over the image; the vessel probability and the uncertainty beside it."""
    from ..palette import LABEL_COLORS

    image = viewer.layers[SAMPLE_IMAGE]
    seg = widgets["Segment"]
    seg.set_model(model)
    seg.probabilities_box.setChecked(True)
    seg.uncertainty_box.setChecked(True)
    seg.image_combo.set_layer(image)
    seg.segment(run_sync=True)
    origin, size = world_box(image)
    corners, texts = [origin], [f"predicted vessels ({'cyan' if LABEL_COLORS[0] == '#00e5ff' else 'colour'})"]
    maps = [layer for layer in viewer.layers if layer.name.startswith(f"{SAMPLE_IMAGE} probability: ")]
    maps += [viewer.layers[f"{SAMPLE_IMAGE} uncertainty"]]
    for k, layer in enumerate(maps):  # a 2 x 2 grid: each map on its own, as the dock made it
        corner = origin + size * ([0.0, 1.04] if k == 0 else [1.12, 0.0])
        layer.translate = tuple(corner - origin)
        corners.append(corner)
        texts.append(layer.name.replace(f"{SAMPLE_IMAGE} ", "") +
                     (" (certain: transparent)" if layer.name.endswith("uncertainty") else ""))
    add_captions(viewer, "captions", corners, texts)
    viewer.layers.selection.active = viewer.layers[f"{SAMPLE_IMAGE} segmentation"]  # ready to correct
    shot(viewer, "Segment", "segment")
    for layer in list(viewer.layers):
        if layer.name.startswith(f"{SAMPLE_IMAGE} ") or layer.name == "captions":
            viewer.layers.remove(layer)


def _previews_shot(viewer: Any, widgets: dict[str, Any], partners: list[tuple[str, Any]], model: Path | None,
                   shot: Any) -> None:
    """mixup_preview.png, restoration_preview.png and previews.png: the sample mixed with three
    photographs from other cameras, open as layers as a user has them; then the restoration preview of
    the same image, each in its own place; then both in one view."""
    import numpy as np

    from . import layer_meta
    from .widgets._placement import show_in_view
    from .widgets.restoration_preview import GROUP

    image = viewer.layers[SAMPLE_IMAGE]
    for name, array in partners:
        viewer.add_image(np.asarray(array), name=name)
    mix = widgets["Amplitude mixup preview"]
    raise_dock(mix)  # the dock at its width before the preview fits the view to the canvas left
    process_events()
    mix.image_combo.set_layer(image)
    mix.set_partners([name for name, _ in partners])
    mix.set_params(window_ratio=0.1, lam=0.5, samples=len(partners))
    mix.update_preview(notify=True)  # the Preview button: the view goes to the tiles
    mix.set_params(lam=0.3)
    mix.update_preview()  # a live update shows its (cached) cost in the status line
    viewer.layers.selection.active = image
    shot(viewer, "Amplitude mixup preview", "mixup_preview", zoom=1.0, reset=False)
    if model is not None:
        rest = widgets["Restoration preview"]
        raise_dock(rest)
        process_events()
        rest.set_model(model)
        rest.image_combo.set_layer(image)
        rest.restore(run_sync=True)
        viewer.layers.selection.active = image
        shot(viewer, "Restoration preview", "restoration_preview", zoom=1.0, reset=False)
        raise_dock(mix)
        process_events()
        show_in_view(viewer, f"mixup: {SAMPLE_IMAGE}", GROUP)
        shot(viewer, "Amplitude mixup preview", "previews", zoom=1.0, reset=False)
    for layer in list(viewer.layers):
        if layer.metadata.get(layer_meta.PREVIEW) or layer.name in dict(partners):
            viewer.layers.remove(layer)


def _volume_shot(viewer: Any, widgets: dict[str, Any], volume: Path, shot: Any) -> None:
    """prostate_volume.png: a PROMISE12 T2 MRI as napari-ramseg's reader opens it (middle slice).
    Run last: it clears the viewer."""
    viewer.layers.clear()  # the last shot: a viewer that holds just the scan, as a user opening it sees it
    segment = widgets["Segment"]
    segment.runner.status.setText("")  # nothing segmented yet in this viewer
    segment.runner.progress.setValue(0)
    [layer] = viewer.open(str(volume), plugin=PLUGIN)
    viewer.dims.set_current_step(0, layer.data.shape[0] // 2)
    segment.image_combo.set_layer(layer)
    viewer.layers.selection.active = layer
    shot(viewer, "Segment", "prostate_volume")


def capture_screenshots(folder: Path, model: Path | None = None, partners: Any = None,
                        volume: Path | None = None) -> list[Path]:
    """README screenshots in ``folder``: demo, segment, mixup_preview, restoration_preview, previews (both
    previews of one image, each in its own place), and prostate_volume when a PROMISE12 volume is at hand
    (``volume``, default ``PROSTATE_VOLUME``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model or demo_model()
    volume = Path(volume) if volume is not None else (PROSTATE_VOLUME if PROSTATE_VOLUME.is_file() else None)
    written = []
    if model is not None:
        os.environ.setdefault(MODEL_ENV, str(model))
    run_demo(folder / "demo.png")
    written.append(folder / "demo.png")

    def shot(viewer: Any, dock_name: str, name: str, zoom: float = 0.95, reset: bool = True) -> None:
        raise_dock(widgets.get(dock_name))
        path = folder / f"{name}.png"
        take_screenshot(viewer, path, zoom, reset)
        written.append(path)

    viewer, widgets = open_demo_viewer(show=True)
    viewer.layers[SAMPLE_MASK].visible = False
    if model is not None:
        _segment_shot(viewer, widgets, model, shot)
    _previews_shot(viewer, widgets, screenshot_partners() if partners is None else partners, model, shot)
    if volume is not None:
        _volume_shot(viewer, widgets, volume, shot)
    viewer.close()
    for path in written:
        shrink_png(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_ramseg.plugin.demo")
    parser.add_argument("--screenshot", type=Path, help="write the demo window here and exit")
    parser.add_argument("--screenshots", type=Path, help="write all README screenshots into this folder and exit")
    parser.add_argument("--model", type=Path, help=f"model to use (default: {MODEL_ENV} or the bundled one)")
    args = parser.parse_args(argv)
    note = no_display_note()
    if note:
        parser.exit(2, f"{parser.prog}: error: {note.replace('ramseg demo', 'python -m napari_ramseg.plugin.demo')}\n")
    prefer_qt6()
    if args.model is not None:
        os.environ[MODEL_ENV] = str(args.model)
    if args.screenshots is not None:
        for path in capture_screenshots(args.screenshots):
            print(path)
        return 0
    return run_demo(args.screenshot)


if __name__ == "__main__":
    raise SystemExit(main())
