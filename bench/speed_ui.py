"""UI responsiveness for bench/speed.py: the longest stall of napari's event loop while SegmentWidget
segments, measured under Xvfb in a fresh interpreter (a QTimer ticks every 10 ms; the gaps are the stalls)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from speed_inputs import fundus_512, synthetic_volume
from speed_timing import child_command

UI_CHILD_FLAG = "--_ui-child"


def ui_child(model_dir: str, kinds: str) -> None:
    """Runs under Xvfb: the longest gap between 10 ms QTimer ticks while SegmentWidget segments."""
    os.environ.pop("RAMSEG_SYNC_WORKERS", None)
    import napari
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_ramseg.widgets.segment import SegmentWidget

    viewer = napari.Viewer(show=True)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="segment")
    widget.set_model(model_dir)
    widget.probabilities_box.setChecked(True)
    widget.uncertainty_box.setChecked(True)
    app = QApplication.instance()
    results = []

    def settle(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)

    image2d, _ = fundus_512()
    cases = []
    for kind in kinds.split(","):
        if kind == "2d":
            cases += [("2d_512_rgb_cold", image2d, True), ("2d_512_rgb_warm", image2d, True)]
        elif kind == "volume":
            cases += [("volume_24x384x384", synthetic_volume(), False)]
    for name, data, rgb in cases:
        layer_name = name.split("_cold")[0].split("_warm")[0]
        if layer_name not in viewer.layers:
            viewer.add_image(data, rgb=rgb, name=layer_name)
        widget.image_combo.set_layer(viewer.layers[layer_name])
        settle(0.5)
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        loop = QEventLoop()
        timer.start()
        settle(0.2)
        pandas_before = "pandas" in sys.modules
        t0 = time.perf_counter()
        worker = widget.segment(run_sync=False)
        if worker is None:
            results.append({"case": name, "error": "segment() refused the input"})
            continue
        done: dict[str, float] = {}
        worker.returned.connect(lambda *_: done.setdefault("returned", time.perf_counter()))
        worker.finished.connect(lambda: (done.setdefault("t", time.perf_counter()), QTimer.singleShot(400, loop.quit)))
        QTimer.singleShot(600_000, loop.quit)
        loop.exec_()
        timer.stop()
        kept = [t for t in ticks if t >= t0 - 0.05]
        gaps = np.diff(kept) * 1000
        worst = int(np.argmax(gaps)) if len(gaps) else 0
        # When the worst stall happened relative to the job: during the computation (worker thread)
        # or after it returned (the result is shown: layers added and drawn on the main thread).
        where = None
        if len(gaps) and "returned" in done:
            where = "after the result arrived (main thread shows layers)" if kept[worst + 1] > done["returned"] else \
                "while the worker computed"
        results.append({"case": name, "seconds": round(done.get("t", time.perf_counter()) - t0, 2),
                        "worst_gap_ends_at_s": round(kept[worst + 1] - t0, 3) if len(gaps) else None,
                        "returned_at_s": round(done["returned"] - t0, 3) if "returned" in done else None,
                        "worst_gap_when": where,
                        "max_gap_while_computing_ms": round(float(max((g for g, t in zip(gaps, kept[1:])
                                                                         if t <= done.get("returned", 1e18)), default=0)), 1),
                        "ticks": len(gaps), "max_gap_ms": round(float(gaps.max()), 1) if len(gaps) else None,
                        "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1) if len(gaps) else None,
                        "median_gap_ms": round(float(np.median(gaps)), 1) if len(gaps) else None,
                        "outcome": widget.runner.last_outcome,
                        "pandas_first_imported_by_this_job": (not pandas_before) and "pandas" in sys.modules,
                        "segmentation_layer": f"{layer_name} segmentation" in viewer.layers})
    print(json.dumps({"widget": "napari_ramseg.widgets.segment.SegmentWidget.segment()", "timer_interval_ms": 10,
                      "cases": results}))
    viewer.close()


def bench_ui(model_dir: Path, kinds: str) -> dict[str, Any]:
    cmd = child_command(UI_CHILD_FLAG, model_dir, kinds)
    if not os.environ.get("DISPLAY"):
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-3000:]}
    return json.loads(lines[-1])
