"""``ramseg demo``: napari with the sample scan, the bundled model and the docks."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import EXIT_BAD_INPUT, stderr


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="open napari with the sample scan, the bundled model and the widgets")
    d.add_argument("--screenshot", type=Path, help="write a screenshot of the window here and exit")


def run(args: argparse.Namespace) -> int:
    from ..plugin.demo import no_display_note, prefer_qt6, run_demo

    # checked before Qt is imported: without a display Qt aborts the process (exit 134), no message
    note = no_display_note(args.screenshot)
    if note:
        stderr(f"ramseg: error: {note}")
        return EXIT_BAD_INPUT
    prefer_qt6()  # PyQt6 beside PyQt5: napari's PyQt5-deprecation warning stays off the console
    return run_demo(screenshot=args.screenshot)
