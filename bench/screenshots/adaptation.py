"""README screenshot: the Segment dock adapting to a photograph from a camera the model never saw.

    xvfb-run -a python -m bench.screenshots.adaptation --out bench/results/screenshots

Writes ``segment_adapt.png``: the napari window with the Segment dock after "adapt to this scan"
(the default method) on a photograph of an unseen domain; the plain mask on the upper copy of the
photograph, the adapted mask on the lower, and the dock's line with the fit score before and after
and the cost (the photograph is segmented once first, so neither time holds the first-call warm-up).
``--model`` and ``--image`` pick another model or photograph (default: the bundled vessel model,
trained on HRF, STARE and CHASE_DB1, and Drishti-GS drishtiGS_035 from ../shared/data, another
camera, on which the fit check warns about its style; it has no vessel annotation, so the comparison
is by eye).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE = (REPO / ".." / "shared" / "data" / "fundus" / "Drishti-GS" / "images" / "drishtiGS_035.png").resolve()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "screenshots")
    ap.add_argument("--model", default="default")
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--method", default=None, help="default: AdaptConfig.method")
    args = ap.parse_args(argv)
    if not args.image.exists():
        print(f"no image at {args.image}: nothing to show", file=sys.stderr)
        return 1
    import numpy as np

    from napari_ramseg.core.config import ADAPT
    from napari_ramseg.plugin.demo import (SAMPLE_IMAGE, SAMPLE_MASK, add_captions, open_demo_viewer, raise_dock,
                                           shrink_png, take_screenshot, world_box)
    from napari_ramseg.io import read_image
    from napari_ramseg.models import resolve_model

    method = args.method or ADAPT.method
    viewer, widgets = open_demo_viewer(show=True)
    for name in (SAMPLE_IMAGE, SAMPLE_MASK):
        if name in viewer.layers:
            viewer.layers.remove(name)
    photo = read_image(args.image).array
    name = f"{args.image.parent.parent.name} {args.image.stem}"
    layer = viewer.add_image(photo, name=name, rgb=True)
    seg = widgets["Segment"]
    seg.set_model(resolve_model(args.model))
    seg.probabilities_box.setChecked(False)
    seg.uncertainty_box.setChecked(False)
    seg.adapt_box.setChecked(False)
    seg.adapt_combo.setCurrentText(method)
    seg.image_combo.set_layer(layer)
    seg.segment(run_sync=True)  # warm-up: the first call's one-off costs are in neither time
    seg.adapt_box.setChecked(True)
    seg.segment(run_sync=True)
    plain = viewer.layers[f"{name} segmentation"]
    adapted = viewer.layers[f"{name} segmentation (adapted: {method})"]
    # the photograph twice, one above the other: the plain mask on the upper, the adapted one on the lower
    origin, size = world_box(layer)
    shift = (float(size[0]) * 1.08, 0.0)
    twin = viewer.add_image(np.asarray(layer.data), name=f"{name} (copy)", rgb=True, translate=shift)
    viewer.layers.move(viewer.layers.index(twin), viewer.layers.index(plain))
    adapted.translate = shift
    add_captions(viewer, "captions", [origin, origin + np.asarray(shift)],
                 ["plain", f"adapted to this scan ({method})"], size=10)
    viewer.layers.selection.active = adapted
    print(seg.adapt_label.text(), flush=True)
    raise_dock(seg)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "segment_adapt.png"
    take_screenshot(viewer, path, 0.95)
    shrink_png(path)
    print(f"wrote {path}", flush=True)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
