"""Temporary: bench/strokes*.py (run as ``python bench/strokes.py``, with bench/ on sys.path) import this
by bare name. The code is bench/common/machine.py; this module goes when the strokes scripts move into
a study."""

from common.machine import SIMD_FLAGS, describe, one_line  # noqa: F401
