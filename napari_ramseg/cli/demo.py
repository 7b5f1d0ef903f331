"""``ramseg demo``: napari with the sample scan, the bundled model and the docks."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="open napari with the sample scan, the bundled model and the widgets")
    d.add_argument("--screenshot", type=Path, help="write a screenshot of the window here and exit")


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(screenshot=args.screenshot)
