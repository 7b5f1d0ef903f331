"""Thin napari/Qt widgets: they collect parameters, start workers and show results."""
