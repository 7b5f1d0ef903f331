"""Screenshot of the Segment dock running the bundled ``optic-disc`` model on a whole fundus photograph.

    xvfb-run -a python -m bench.screenshots.optic_disc --image PHOTO --out PNG

Which picture may be committed is a licence question (``../shared/data/README.md``): the HRF sample that
ships with the package (CC0, ``napari_ramseg/sample_data``) may; DRIONS-DB photographs may not, so their
screenshot goes under ``bench/work/`` (ignored by git) and is only looked at.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", type=Path, default=REPO / "napari_ramseg" / "sample_data" / "hrf_01_h.jpg")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "screenshots" / "optic_disc.png")
    args = ap.parse_args(argv)

    import napari
    import numpy as np
    from PIL import Image

    from napari_ramseg.plugin.demo import PLUGIN, SCREENSHOT_SIZE, take_screenshot, shrink_png
    from napari_ramseg.models import resolve_model

    viewer = napari.Viewer(title="napari-ramseg: optic disc", show=True)
    viewer.window.resize(*SCREENSHOT_SIZE)
    with Image.open(args.image) as im:
        layer = viewer.add_image(np.asarray(im.convert("RGB")), rgb=True, name=args.image.stem)
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    segment.set_model(resolve_model("optic-disc"))
    segment.image_combo.set_layer(layer)
    begun = time.monotonic()
    segment.segment(run_sync=True)
    print(f"segmented in {time.monotonic() - begun:.1f} s; dock says: {segment.measures_label.text()!r}")
    labels = viewer.layers[f"{layer.name} segmentation"]
    print("layer metadata measures:", labels.metadata.get("measures"))
    print(labels.features)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    take_screenshot(viewer, args.out, 0.75)  # the whole photograph, not just its middle
    viewer.close()
    shrink_png(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
