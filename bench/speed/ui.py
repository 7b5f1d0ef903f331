"""UI responsiveness for bench/speed/benchmark.py: the longest stall of napari's event loop while SegmentWidget
segments and shows its result, measured under Xvfb in a fresh interpreter (a QTimer ticks every 10 ms;
the gaps are the stalls)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.speed.inputs import SIZES, fundus_512, synthetic_volume
from bench.speed.timing import REPO, child_command

UI_CHILD_FLAG = "--_ui-child"


def ui_child(model_dir: str, kinds: str, size: str = "full") -> None:
    """Runs under Xvfb: the longest gap between 10 ms QTimer ticks while SegmentWidget segments, from the
    click until the dock is idle again (the result computed on the worker thread, then shown layer by
    layer on the main thread), plus 0.4 s of painting. A case whose job did not end "done" with its
    segmentation layer in the viewer is a failed case: ``failed`` says why (bench/speed/benchmark.py leaves its
    gaps out of every figure)."""
    os.environ.pop("RAMSEG_SYNC_WORKERS", None)
    import napari
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_ramseg.plugin.widgets.segment import SegmentWidget

    sizes = SIZES[size]
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

    side = sizes.image
    image2d, _ = fundus_512(side)
    cases = []
    for kind in kinds.split(","):
        if kind == "2d":
            cases += [(f"2d_{side}_rgb_cold", image2d, True), (f"2d_{side}_rgb_warm", image2d, True)]
        elif kind == "volume":
            depth, vside = sizes.volume
            cases += [(f"volume_{depth}x{vside}x{vside}", synthetic_volume(depth, vside), False)]
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
            timer.stop()
            results.append({"case": name, "failed": "segment() refused the input: "
                            + (widget.runner.status.text() or "no reason shown")})
            continue
        done: dict[str, float] = {}
        worker.returned.connect(lambda *_: done.setdefault("returned", time.perf_counter()))

        def idle(busy: bool, done=done, loop=loop) -> None:
            # the dock is idle once the worker finished and every step showing the result ran
            if not busy and "idle" not in done:
                done["idle"] = time.perf_counter()
                QTimer.singleShot(400, loop.quit)

        widget.runner.busy_changed.connect(idle)
        QTimer.singleShot(600_000, loop.quit)
        loop.exec_()
        timer.stop()
        widget.runner.busy_changed.disconnect(idle)
        outcome = widget.runner.last_outcome
        has_layer = f"{layer_name} segmentation" in viewer.layers
        failed = None
        if "idle" not in done:
            failed = "the dock was still busy after 600 s"
        elif outcome != "done":
            failed = f"the job ended {outcome or 'without an outcome'}: {widget.runner.status.text()}"
        elif not has_layer:
            failed = f"no '{layer_name} segmentation' layer after the job"
        kept = [t for t in ticks if t >= t0 - 0.05]
        gaps = np.diff(kept) * 1000
        case: dict[str, Any] = {"case": name, "outcome": outcome, "segmentation_layer": has_layer,
                                "seconds": round(done.get("idle", time.perf_counter()) - t0, 2)}
        if failed:  # no figure from a failed case
            results.append({**case, "failed": failed})
            continue
        worst = int(np.argmax(gaps)) if len(gaps) else 0
        # When the worst stall happened relative to the job: during the computation (worker thread)
        # or after it returned (the result is shown: layers added and drawn on the main thread).
        where = None
        if len(gaps) and "returned" in done:
            where = "after the result arrived (main thread shows layers)" if kept[worst + 1] > done["returned"] else \
                "while the worker computed"
        results.append({**case,
                        "worst_gap_ends_at_s": round(kept[worst + 1] - t0, 3) if len(gaps) else None,
                        "returned_at_s": round(done["returned"] - t0, 3) if "returned" in done else None,
                        "idle_at_s": round(done["idle"] - t0, 3),
                        "worst_gap_when": where,
                        "max_gap_while_computing_ms": round(float(max((g for g, t in zip(gaps, kept[1:])
                                                                         if t <= done.get("returned", 1e18)), default=0)), 1),
                        "ticks": len(gaps), "max_gap_ms": round(float(gaps.max()), 1) if len(gaps) else None,
                        "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1) if len(gaps) else None,
                        "median_gap_ms": round(float(np.median(gaps)), 1) if len(gaps) else None,
                        "pandas_first_imported_by_this_job": (not pandas_before) and "pandas" in sys.modules})
    print(json.dumps({"widget": "napari_ramseg.plugin.widgets.segment.SegmentWidget.segment()", "timer_interval_ms": 10,
                      "cases": results}))
    viewer.close()


def bench_ui(model_dir: Path, kinds: str, size: str = "full") -> dict[str, Any]:
    """The UI cases in a fresh interpreter (under ``xvfb-run -a`` without a display); ``{"error": ...}``
    when the child gave no result."""
    cmd = child_command(UI_CHILD_FLAG, model_dir, kinds, size)
    if not os.environ.get("DISPLAY"):
        if shutil.which("xvfb-run") is None:
            return {"error": "no display and no xvfb-run: install Xvfb (apt-get install xvfb) or run under a display"}
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"] + cmd
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": "no result within 900 s"}
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit status {proc.returncode}: " + (proc.stderr or proc.stdout)[-3000:]}
    return json.loads(lines[-1])
