"""Fixtures shared by the dock tests."""

from __future__ import annotations

import pytest

from napari_ramseg.plugin.widgets import _common
from napari_ramseg.plugin.widgets.segment import SegmentWidget


@pytest.fixture
def segment_widget(make_napari_viewer, tiny_model):
    """The Segment dock in a real viewer with the tiny model loaded; jobs run in a worker thread."""
    w = SegmentWidget(make_napari_viewer())
    w.set_model(tiny_model)
    return w


@pytest.fixture
def sync_segment_widget(segment_widget, monkeypatch):
    """The same dock with jobs run to the end before ``segment()`` returns, for tests that read results."""
    monkeypatch.setenv(_common.SYNC_ENV, "1")
    return segment_widget
