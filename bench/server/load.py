"""``ramseg serve`` under load (issue 31): N = 1, 4, 16 concurrent clients on loopback, each sending P
photographs, against the same work done locally in one process. Cases that arrive together share a
network pass (``server/batching.py``); each N reports how many passes ran and how many rows shared one.

The server runs in this process on a real uvicorn (loopback, a token, ``--device``), as ``ramseg serve``
would; each client is a thread with its own ``ServerClient``. Reported per N: requests sent and
answered (every one must be: none lost), throughput (photographs per second of wall time) and the
p50 / p95 latency of a request, beside the local run's per-photograph time and throughput (one
``Predictor``, ``segment_case`` in a loop). Every remote mask is checked against the local one.

    python -m bench.server.load --clients 1,4,16 --photos 25 --device cuda --out bench/results/serve_load_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "napari_ramseg" / "sample_data" / "hrf_01_h.jpg"
TOKEN = "serve-load-token-0123456789"


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def local_run(model: str, photo: Path, count: int, device: str, precision: str) -> tuple[dict, np.ndarray]:
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.core.review.pipeline import segment_case
    from napari_ramseg.io import read_image
    from napari_ramseg.models import resolve_model

    predictor = Predictor.from_path(resolve_model(model), device=device, precision=precision)
    image = read_image(photo)
    mask = segment_case(predictor, image).prediction.labels  # warm-up, and the reference mask
    times = []
    start = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        segment_case(predictor, read_image(photo))
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return {"photographs": count, "seconds": round(wall, 3), "per_second": round(count / wall, 3),
            "p50_s": round(_percentile(times, 50), 4), "p95_s": round(_percentile(times, 95), 4)}, mask


def start_server(device: str, batch: int | None, models: Path | None = None):
    import uvicorn

    from napari_ramseg.server.app import ServerSettings, create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = create_app(ServerSettings(token=TOKEN, device=device, batch=batch, models_dir=models))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.catalog = app.app.state.catalog  # to read how many passes were batched
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def load_run(url: str, clients: int, photos: int, model: str, precision: str, reference: np.ndarray,
             photo: Path = PHOTO) -> dict:
    from napari_ramseg.server.client import ServerClient, ServerError

    def one_client(_: int) -> tuple[list[float], int, int]:
        latencies, answered, same = [], 0, 0
        with ServerClient(url, TOKEN) as client:
            for _ in range(photos):
                t = time.perf_counter()
                try:
                    case = client.segment(photo, model=model, precision=precision)
                except ServerError as exc:
                    print(f"lost: {exc}", file=sys.stderr)
                    continue
                latencies.append(time.perf_counter() - t)
                answered += 1
                same += int(case.mask is not None and np.array_equal(case.mask, reference))
        return latencies, answered, same

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one_client, range(clients)))
    wall = time.perf_counter() - start
    latencies = [x for r in results for x in r[0]]
    answered, same = sum(r[1] for r in results), sum(r[2] for r in results)
    return {"clients": clients, "sent": clients * photos, "answered": answered, "same_mask_as_local": same,
            "seconds": round(wall, 3), "per_second": round(answered / wall, 3),
            "p50_s": round(_percentile(latencies, 50), 4), "p95_s": round(_percentile(latencies, 95), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--photos", type=int, default=25, help="photographs each client sends")
    parser.add_argument("--model", default="vessels")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--photo", type=Path, default=PHOTO, help="the photograph every client sends")
    parser.add_argument("--models", type=Path, default=None,
                        help="a models folder for the server (--model then names a run folder in it)")
    parser.add_argument("--batch", type=int, default=None,
                        help="the server's --batch (default: its own rule, Predictor.batch_for)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    local_model = args.model if args.models is None else str(args.models / args.model)
    local, reference = local_run(local_model, args.photo, args.photos, args.device, args.precision)
    print(f"local, one process: {local}", file=sys.stderr)
    server, thread, url = start_server(args.device, args.batch, args.models)
    try:
        from napari_ramseg.server.client import ServerClient

        with ServerClient(url, TOKEN) as client:  # the server loads the model on its first request: not timed
            client.segment(args.photo, model=args.model, precision=args.precision)
        forward = server.catalog.predictor(args.model, args.precision)[1]._forward  # server/batching.BatchedForward
        runs = []
        for n in counts:
            passes, rows = forward.passes, forward.batched_rows
            runs.append(load_run(url, n, args.photos, args.model, args.precision, reference, args.photo))
            runs[-1].update(network_passes=forward.passes - passes, rows_in_shared_passes=forward.batched_rows - rows)
            print(f"N={n}: {runs[-1]}", file=sys.stderr)
    finally:
        server.should_exit = True
        thread.join(60)
    import torch

    machine = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor(),
               "cores": os.cpu_count(), "threads": torch.get_num_threads(), "device": args.device,
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    result = {"photo": args.photo.name, "model": args.model, "precision": args.precision,
              "photos_per_client": args.photos,
              "batch": args.batch, "command": " ".join(["python", *sys.argv]),
              "machine": machine, "local": local, "served": runs,
              "all_answered": all(r["answered"] == r["sent"] for r in runs),
              "all_same_as_local": all(r["same_mask_as_local"] == r["sent"] for r in runs)}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0 if result["all_answered"] and result["all_same_as_local"] else 1


if __name__ == "__main__":
    sys.exit(main())
