"""README screenshot of the Worklist dock in use.

    xvfb-run -a python -m bench.screenshots.worklist --out bench/results/screenshots

A temporary folder holds a few fundus photographs of two cameras from ``../shared/data/vessels``
(STARE and CHASE_DB1); the dock segments them all with the bundled model (Segment all), opens the top
row of the table, "corrects" it (the expert mask painted in through the layer), saves it into a
temporary corrections project (Save and next), leaves the next one as reviewed (Next) and shows the
third: ``worklist.png``, the table with its priorities, measures, uncertainty, fit and statuses.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_VESSELS = (REPO / ".." / "shared" / "data" / "vessels").resolve()
PICK = {"STARE": ("im0001.png", "im0002.png", "im0003.png"),
        "CHASE_DB1": ("Image_01L.jpg", "Image_02L.jpg", "Image_03L.jpg")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "screenshots")
    args = parser.parse_args(argv)
    if not SHARED_VESSELS.is_dir():
        print(f"no data at {SHARED_VESSELS}; nothing to show")
        return 0
    import napari
    import numpy as np

    from napari_ramseg.plugin.demo import DOCK_WIDTH, PLUGIN, SCREENSHOT_SIZE, take_screenshot, demo_model, shrink_png
    from napari_ramseg.io import read_mask, stem_of
    from bench.screenshots.widgets import wait_until

    work = Path(tempfile.mkdtemp(prefix="ramseg-worklist-shot-"))
    scans = work / "clinic-scans"
    scans.mkdir()
    truths = {}
    for domain, names in PICK.items():
        for name in names:
            shutil.copy(SHARED_VESSELS / domain / "images" / name, scans / f"{domain}_{name}")
            labels = sorted((SHARED_VESSELS / domain / "labels").glob(stem_of(Path(name)) + "*"))
            truths[f"{domain}_{name}"] = (read_mask(labels[0]) > 0).astype(np.uint8)
    try:
        viewer = napari.Viewer(title="napari-ramseg worklist", show=True)
        viewer.window.resize(*SCREENSHOT_SIZE)
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Worklist")
        viewer.window._qt_window.resizeDocks([dock], [int(DOCK_WIDTH * 1.4)], 1)
        widget.model_picker.set_model(demo_model())
        widget.device_combo.setCurrentText("cpu")
        widget.project_edit.setText(str(work / "corrections"))
        widget.open_folder(scans)
        started = time.monotonic()
        widget.segment_all()
        wait_until(lambda: not widget.runner.busy, 900, "segmenting")
        print(f"segmented {len(widget.worklist.cases)} scans in {time.monotonic() - started:.1f} s", flush=True)
        widget.table.cellClicked.emit(0, 1)
        first = widget.current
        labels = viewer.layers[f"worklist: {first} prediction"]
        labels.data = truths[first].astype(labels.data.dtype)  # the clinician's fixes
        if widget.save_and_next() is None:
            raise RuntimeError(widget.status.text())
        widget.next_case()
        wait_until(lambda: True, 1, "drawing")
        path = args.out / "worklist.png"
        args.out.mkdir(parents=True, exist_ok=True)
        take_screenshot(viewer, path, 0.95)
        shrink_png(path)
        print(path, widget.status.text())
        viewer.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
