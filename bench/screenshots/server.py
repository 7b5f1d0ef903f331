"""README screenshot: the Segment dock segmenting through a ramseg server (issue 31).

    xvfb-run -a python -m bench.screenshots.server --out bench/results/screenshots

Starts ``ramseg serve``'s app on loopback in this process (a token, the bundled models), remembers it in a
throwaway settings folder as the dock's settings dialog would, chooses "server" in the Segment dock's
device list and segments the sample photograph through it. Writes ``segment_server.png``: the window
with the dock (device: server, its status line) and the labels layer the server's answer made.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOKEN = "screenshot-token-0123456789"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "screenshots")
    ap.add_argument("--model", default="vessels")
    args = ap.parse_args(argv)
    os.environ["RAMSEG_CONFIG_DIR"] = tempfile.mkdtemp(prefix="ramseg-config-")  # never the user's own settings
    from tests.helpers import serve_on_loopback, stop_server

    from napari_ramseg.plugin.demo import SAMPLE_IMAGE, SAMPLE_MASK, take_screenshot, open_demo_viewer, raise_dock, shrink_png
    from napari_ramseg.models import resolve_model
    from napari_ramseg.server import connection
    from napari_ramseg.server.app import ServerSettings, create_app

    server, thread, url = serve_on_loopback(create_app(ServerSettings(token=TOKEN, device="cpu")))
    try:
        connection.save(url, TOKEN)
        viewer, widgets = open_demo_viewer(show=True)
        if SAMPLE_MASK in viewer.layers:
            viewer.layers.remove(SAMPLE_MASK)
        seg = widgets["Segment"]
        seg.set_model(resolve_model(args.model))
        seg.probabilities_box.setChecked(False)
        seg.uncertainty_box.setChecked(False)
        seg.image_combo.set_layer(viewer.layers[SAMPLE_IMAGE])
        seg.device_combo.choose_server()
        seg.segment(run_sync=True)
        print(seg.runner.status.text(), seg.runner.last_outcome, flush=True)
        labels = viewer.layers[f"{SAMPLE_IMAGE} segmentation"]
        print(f"device: {labels.metadata.get('device')}; model: {labels.metadata.get('model')}", flush=True)
        viewer.layers.selection.active = labels
        raise_dock(seg)
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "segment_server.png"
        take_screenshot(viewer, path, 0.95)
        shrink_png(path)
        print(f"wrote {path}", flush=True)
        viewer.close()
    finally:
        stop_server(server, thread)
    return 0 if seg.runner.last_outcome == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
