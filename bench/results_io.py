"""Temporary: bench/strokes*.py (run as ``python bench/strokes.py``, with bench/ on sys.path) import this
by bare name. The code is bench/common/results_io.py; this module goes when the strokes scripts move into
a study."""

from common.results_io import write_figure, write_json, write_text, write_with  # noqa: F401
