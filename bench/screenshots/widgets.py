"""README screenshots of the Train and the Correct-and-fine-tune docks *in use*.

    xvfb-run -a python -m bench.screenshots.widgets --out bench/results/screenshots

writes into ``--out``:

- ``train.png``: the napari window (same size as ``napari_ramseg.plugin.demo``'s screenshots) with the Train dock
  after a short real training run (vessels HRF + STARE from ``../shared/data`` at 64 px, a few dozen
  iterations, ~10 source validations), so the live plot shows the loss and source-validation Dice curves.
  Without ``../shared/data`` it trains on a small synthetic two-domain dataset instead.
- ``correct_finetune.png``: the HRF sample segmented with the bundled model, three corrections saved to a
  temporary project (the sample, and its left-right and up-down mirror images, each "corrected" to the
  expert vessel mask; the 3rd is held out by the fixed split), then a short fine-tune round, so the dock
  shows the new model version and the held-out Dice before and after.

- ``docks_stacked.png``: two docks one above the other (not tabbed) in a window 1000 px high: the
  Restoration preview (its model summary is long) over the Amplitude mixup preview reading a folder (its
  folder row and λ help). Each scrolls; nothing is cut.

Everything written besides the PNGs (run folder, corrections project) goes to a temporary folder that is
removed at the end (``--keep`` keeps it). Tiny on purpose: about a minute or two of CPU.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_VESSELS = (REPO / ".." / "shared" / "data" / "vessels").resolve()


def wait_until(condition, timeout: float, what: str) -> None:
    """Process Qt events until ``condition()`` holds; raise after ``timeout`` seconds."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not finish within {timeout:.0f} s")
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(5):
        QApplication.processEvents()


def synthetic_domains(root: Path) -> Path:
    """Two small synthetic domains (as tests/helpers.py::make_synthetic_domains)."""
    from tests.helpers import make_synthetic_domains

    return make_synthetic_domains(root, domains=("siteA", "siteB"), cases=6, size=64)


def train_shot(viewer, widgets, out: Path, work: Path, iterations: int, width: int) -> Path:
    from napari_ramseg.plugin.demo import SAMPLE_IMAGE, SAMPLE_MASK, take_screenshot, raise_dock

    train = widgets.get("Train")
    if train is None:
        raise RuntimeError("the Train widget could not be docked")
    data = SHARED_VESSELS if SHARED_VESSELS.is_dir() else synthetic_domains(work / "synthetic")
    train.data_edit.setText(str(data))
    domains = train.refresh_domains()
    print(f"train: data {data} domains {domains}", flush=True)
    train.iterations_spin.setValue(iterations)
    train.size_spin.setValue(64)
    train.batch_spin.setValue(4)
    train.width_spin.setValue(width)
    train.device_combo.setCurrentText("cpu")
    train.out_edit.setText(str(work / "runs" / "vessels-hrf-stare"))
    raise_dock(train)
    started = time.monotonic()
    process = train.start()
    if process is None:
        raise RuntimeError(f"training did not start: {train.status.text()}")
    wait_until(lambda: process.finished and not train.timer.isActive(), 900, "training")
    if process.error is not None:
        raise RuntimeError(f"training failed: {process.error}\n{process.traceback}")
    print(f"train: {time.monotonic() - started:.1f} s, loss points {len(train.plot.series['loss'])}, "
          f"Dice points {len(train.plot.series['val Dice'])}", flush=True)
    viewer.layers[SAMPLE_MASK].visible = False
    viewer.layers.selection.active = viewer.layers[SAMPLE_IMAGE]
    raise_dock(train)
    path = out / "train.png"
    take_screenshot(viewer, path, 0.95)
    return path


def finetune_shot(viewer, widgets, out: Path, work: Path, iterations: int, model: Path) -> Path:
    import numpy as np

    from napari_ramseg.plugin.demo import SAMPLE_IMAGE, SAMPLE_MASK, take_screenshot, raise_dock

    segment, finetune = widgets["Segment"], widgets.get("Correct and fine-tune")
    if finetune is None:
        raise RuntimeError("the Correct and fine-tune widget could not be docked")
    image = viewer.layers[SAMPLE_IMAGE]
    expert = np.asarray(viewer.layers[SAMPLE_MASK].data)
    viewer.layers[SAMPLE_MASK].visible = False
    segment.set_model(model)
    segment.probabilities_box.setChecked(False)
    finetune.project_edit.setText(str(work / "corrections"))
    finetune.refresh_cases()
    finetune.device_combo.setCurrentText("cpu")
    finetune.iterations_spin.setValue(iterations)
    raise_dock(finetune)

    # the sample first, then two mirror images of it: the 3rd saved image is held out for validation
    variants = [(image.name, None, expert),
                (f"{SAMPLE_IMAGE} mirrored", np.ascontiguousarray(image.data[:, ::-1]), expert[:, ::-1]),
                (f"{SAMPLE_IMAGE} upside down", np.ascontiguousarray(image.data[::-1]), expert[::-1])]
    extra_layers = []
    started = time.monotonic()
    for name, data, corrected in variants:
        if data is not None:
            extra_layers.append(viewer.add_image(data, name=name, rgb=True))
        segment.image_combo.set_layer(viewer.layers[name])
        segment.segment(run_sync=True)
        labels = viewer.layers[f"{name} segmentation"]
        finetune.image_combo.setCurrentText(name)
        finetune.labels_combo.setCurrentText(labels.name)
        finetune.start_correcting()
        labels.data = np.ascontiguousarray(corrected).astype(labels.data.dtype)  # the clinician's fixes
        if finetune.save_correction() is None:
            raise RuntimeError(f"saving the correction failed: {finetune.status.text()}")
    print(f"finetune: 3 segmentations + corrections in {time.monotonic() - started:.1f} s", flush=True)

    # back to the sample, as the user left it after correcting it
    for layer in extra_layers:
        viewer.layers.remove(viewer.layers[f"{layer.name} segmentation"])
        viewer.layers.remove(layer)
    finetune.image_combo.setCurrentText(SAMPLE_IMAGE)
    finetune.labels_combo.setCurrentText(f"{SAMPLE_IMAGE} segmentation")

    started = time.monotonic()
    worker = finetune.start_finetune()
    if worker is None:
        raise RuntimeError(f"fine-tuning did not start: {finetune.status.text()}")
    wait_until(lambda: finetune.worker is None, 900, "fine-tuning")
    result = finetune.last_result
    if result is None or result.model_dir is None:
        raise RuntimeError(f"fine-tuning failed: {finetune.status.text()}")
    print(f"finetune: {result.version} in {time.monotonic() - started:.1f} s, held-out Dice "
          f"{result.before_dice} -> {result.after_dice}", flush=True)
    viewer.layers.selection.active = viewer.layers[f"{SAMPLE_IMAGE} segmentation"]
    raise_dock(finetune)
    path = out / "correct_finetune.png"
    take_screenshot(viewer, path, 0.95)
    return path


def docks_shot(out: Path) -> Path:
    """docks_stacked.png (module docstring): a viewer of its own, the two docks stacked."""
    import napari

    from napari_ramseg.plugin.demo import PLUGIN, SAMPLE_MASK, process_events, take_screenshot, demo_model, raise_dock

    viewer = napari.Viewer(title="napari-ramseg: two docks stacked", show=True)
    try:
        viewer.window.resize(1400, 1000)
        viewer.open_sample(PLUGIN, "fundus")
        viewer.layers[SAMPLE_MASK].visible = False
        _, rest = viewer.window.add_plugin_dock_widget(PLUGIN, "Restoration preview", tabify=False)
        _, mix = viewer.window.add_plugin_dock_widget(PLUGIN, "Amplitude mixup preview", tabify=False)
        model = demo_model()
        if model is not None:
            rest.set_model(model)
        mix.source_combo.setCurrentText("folder of images")
        stare = SHARED_VESSELS / "STARE" / "images"
        mix.folder_edit.setText(str(stare) if stare.is_dir() else "")
        raise_dock(rest)  # the demo's dock width
        process_events(20)
        print(f"docks: restoration {rest.parent().height()} px, mixup {mix.parent().height()} px high, "
              f"{rest.parent().width()} px wide", flush=True)
        path = out / "docks_stacked.png"
        take_screenshot(viewer, path, 0.95)
    finally:
        viewer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "screenshots")
    parser.add_argument("--iterations", type=int, default=30, help="training iterations (default 30)")
    parser.add_argument("--width", type=int, default=8, help="base width of the trained U-Net (default 8)")
    parser.add_argument("--finetune-iterations", type=int, default=4, help="fine-tune iterations (default 4)")
    parser.add_argument("--only", choices=("train", "finetune", "docks"), help="write just one of the screenshots")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run and project folders")
    args = parser.parse_args(argv)

    from napari_ramseg.plugin.demo import demo_model, open_demo_viewer, shrink_png

    model = demo_model()
    if model is None and args.only in (None, "finetune"):
        parser.error("the bundled model (or RAMSEG_DEMO_MODEL) is needed for correct_finetune.png")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ramseg-screenshots-"))
    begun = time.monotonic()
    written = []
    try:
        if args.only in (None, "docks"):
            written.append(docks_shot(args.out))
        viewer, widgets = (open_demo_viewer(show=True) if args.only in (None, "train", "finetune")
                           else (None, {}))
        try:
            if args.only in (None, "train"):
                written.append(train_shot(viewer, widgets, args.out, work, args.iterations, args.width))
            if args.only in (None, "finetune"):
                written.append(finetune_shot(viewer, widgets, args.out, work, args.finetune_iterations, model))
        finally:
            if viewer is not None:
                viewer.close()
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for path in written:
        shrink_png(path)
        print(path)
    print(f"total {time.monotonic() - begun:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
