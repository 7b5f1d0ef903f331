"""Temporary alias of ``napari_ramseg.plugin.demo``, kept only for bench/strokes_screenshot.py, which another
change is editing; delete this file when that script moves into bench/'s packages (issue 27)."""

from .plugin.demo import open_demo_viewer, raise_dock, shrink_png  # noqa: F401
from .plugin.demo import take_screenshot as _screenshot  # noqa: F401  the name that script imports
