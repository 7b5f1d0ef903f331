#!/usr/bin/env python
"""Peak memory of loading training data, with and without shrinking to the working scale as read.

Each variant runs in its own process (peak RSS is per process). HRF's 3504x2336 photographs are the
case that matters: held at full size as float32 they take about 98 MB each.

    python -m bench.speed.training_memory --out bench/results/training_memory.md
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.common import machine as bench_machine

BENCH = Path(__file__).resolve().parents[1]


def _child(data: str, domains: str, scaled: bool) -> None:
    from napari_ramseg.core.config import PreprocessConfig
    from napari_ramseg.core.labels import VESSELS
    from napari_ramseg.core.training.job import load_training_data

    start = time.perf_counter()
    preprocess = PreprocessConfig(size=256, long_side=540) if scaled else None
    data_ = load_training_data(Path(data), "domains", domains.split(","), None, VESSELS, 0.2, 0, preprocess=preprocess)
    samples = [s for v in data_.train.values() for s in v] + list(data_.val)
    held = sum(s.image.nbytes + (0 if s.mask is None else s.mask.nbytes) for s in samples)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "held_mb": held / 2**20, "samples": len(samples), "seconds": time.perf_counter() - start,
                      "shapes": sorted({tuple(s.image.shape) for s in samples})[:3]}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(BENCH.parent.parent / "shared" / "data" / "vessels"))
    ap.add_argument("--domains", default="HRF")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "training_memory.md")
    ap.add_argument("--_child", choices=["full", "scaled"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        _child(args.data, args.domains, args._child == "scaled")
        return 0
    if not Path(args.data).is_dir():
        print(f"skipped: {args.data} is not there")
        return 0
    rows = {}
    for mode in ("full", "scaled"):
        proc = subprocess.run([sys.executable, "-m", __spec__.name, "--data", args.data, "--domains", args.domains,
                               "--_child", mode], capture_output=True, text=True, check=True, cwd=BENCH.parent)
        rows[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    command = "python -m bench.speed.training_memory " + " ".join(sys.argv[1:])
    lines = ["# Peak memory while loading training data", "",
             f"Command: `{command}`  ", f"Machine: {bench_machine.one_line(bench_machine.describe())}  ",
             f"Data: {args.domains} from `{Path(args.data).name}` ({rows['full']['samples']} cases, training + validation)", "",
             "| loading | peak RSS | samples held | time |", "|---|---|---|---|",
             f"| full resolution (before: the preprocess hook was never given) | {rows['full']['peak_rss_mb']:.0f} MB | "
             f"{rows['full']['held_mb']:.0f} MB | {rows['full']['seconds']:.1f} s |",
             f"| shrunk to the working scale as read (540 px long side; now what `ramseg train` does) | "
             f"{rows['scaled']['peak_rss_mb']:.0f} MB | {rows['scaled']['held_mb']:.0f} MB | {rows['scaled']['seconds']:.1f} s |", ""]
    from napari_ramseg.files import atomic_write

    atomic_write(args.out, lambda t: t.write_text("\n".join(lines)))
    atomic_write(args.out.with_suffix(".json"), lambda t: t.write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
