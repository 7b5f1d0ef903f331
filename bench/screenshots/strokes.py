"""Screenshots of the Correct dock's strokes (issue 30): a vessel photograph before and after 3 strokes, and a cup.

    OMP_NUM_THREADS=1 nice -n 10 xvfb-run -a python -m bench.screenshots.strokes

The photograph and the cup are cases of bench/strokes/benchmark.py (run bench/strokes/cases.py first), from an
unseen camera (vessels: STARE+CHASE_DB1 -> HRF 01_dr; the cup: a REFUGE-val ROI with the bundled
optic-disc model). The Segment dock segments each, then the strokes the simulated clinician of
bench/strokes/benchmark.py would draw (along the largest error region, from the expert's mask) are painted in
the dock's strokes layer with their meaning chosen in the dock (the cup's strokes go to the cup's errors).
The vessel strokes are found one Refine after another, as the bench does; then the dock is undone to the
model's mask and the 3 strokes are drawn again and refined once, as a user would. Writes
``strokes_vessels_before.png`` (the model's mask with the 3 strokes drawn, before Refine, zoomed onto the
first), ``strokes_vessels_after.png`` (the same view after Refine) and ``strokes_cup.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.strokes import benchmark as bench
from bench.strokes import cases

VESSEL_CASE = ("STARE+CHASE_DB1-HRF", "01_dr")
CUP_CASE = ("bundled-REFUGE-val", "test_V0002_r0")


def _show(viewer, widgets, direction_name: str, case_name: str, model: Path):
    """The case's image segmented by the Segment dock, chosen in the Correct dock."""
    case = cases.load_case(cases.CACHE / direction_name / f"{case_name}.npz")
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    image = viewer.add_image(case["image"], name=case_name, rgb=True)
    seg = widgets["Segment"]
    seg.set_model(str(model))
    seg.probabilities_box.setChecked(False)
    seg.uncertainty_box.setChecked(False)
    seg.image_combo.set_layer(image)
    seg.segment(run_sync=True)
    labels = viewer.layers[f"{case_name} segmentation"]
    correct = widgets["Correct and fine-tune"]
    correct.refresh_layers()
    correct.image_combo.setCurrentText(image.name)
    correct.labels_combo.setCurrentText(labels.name)
    correct.device_combo.setCurrentText("cpu")
    return case, labels, correct


def _strokes(case, labels, correct, count: int, value: int = 1):
    """``count`` strokes of the simulated clinician on the structure ``value``, each painted with its
    meaning chosen in the dock and refined; returns the strokes' pixels, in order."""
    import numpy as np

    layer = correct.strokes.draw()
    drawn = []
    for _ in range(count):
        found = bench.next_stroke(np.asarray(labels.data), case["gt"], case["fov"], value)
        if found is None:
            break
        stroke, stroke_value = found
        correct.strokes.set_meaning(stroke_value)
        layer.data_setitem(np.nonzero(stroke), stroke_value)
        drawn.append(stroke)
        correct.strokes.refine(run_sync=True)
        print(correct.status.text(), flush=True)
    return drawn


def _look_at(viewer, stroke, margin: int = 30) -> None:
    """Centre the canvas on a stroke, zoomed so that it and ``margin`` px around it fill the canvas."""
    import numpy as np

    rows, cols = np.nonzero(stroke)
    if not rows.size:
        return
    top, bottom = max(rows.min() - margin, 0), rows.max() + margin
    left, right = max(cols.min() - margin, 0), cols.max() + margin
    viewer.reset_view()  # the whole image fills the canvas; zoom in by how much smaller the box is
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    height, width = np.shape(stroke)[:2]
    camera.zoom = camera.zoom * min(height / (bottom - top), width / (right - left))
    camera.center = ((top + bottom) / 2, (left + right) / 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=cases.REPO / "bench" / "results" / "screenshots")
    args = ap.parse_args(argv)
    import numpy as np

    from napari_ramseg.plugin.demo import open_demo_viewer, raise_dock, shrink_png, take_screenshot

    viewer, widgets = open_demo_viewer(show=True)
    args.out.mkdir(parents=True, exist_ok=True)
    vessel_model = next(d.model for d in cases.directions(("vessels",)) if d.name == VESSEL_CASE[0])
    case, labels, correct = _show(viewer, widgets, *VESSEL_CASE, vessel_model)
    raise_dock(correct)
    drawn = _strokes(case, labels, correct, 3)  # where the simulated clinician puts its 3 strokes
    strokes = np.array(correct.strokes.strokes_layer(labels).data)
    while correct.strokes.undo():  # back to the model's mask, no strokes
        pass
    # as a user would: the 3 strokes drawn, then one Refine; each picture shows the dock as it is then
    layer = correct.strokes.draw()
    layer.data = strokes
    _look_at(viewer, drawn[0])  # the first stroke, the largest error region, close enough to judge
    shots = [args.out / "strokes_vessels_before.png", args.out / "strokes_vessels_after.png"]
    take_screenshot(viewer, shots[0], reset=False)
    correct.strokes.refine(run_sync=True)
    print(correct.status.text(), flush=True)
    take_screenshot(viewer, shots[1], reset=False)
    cup_model = cases.REPO / "napari_ramseg" / "bundled_models" / "optic-disc"
    case, labels, correct = _show(viewer, widgets, *CUP_CASE, cup_model)
    _strokes(case, labels, correct, 3, value=2)
    shots.append(args.out / "strokes_cup.png")
    take_screenshot(viewer, shots[-1], 0.95)
    for path in shots:
        shrink_png(path)
        print(f"wrote {path}", flush=True)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
