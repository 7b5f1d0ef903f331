"""Stand-ins the widget tests share (imported as ``from fakes import ...``: pytest puts this folder on sys.path)."""

from __future__ import annotations

from qtpy.QtWidgets import QWidget


class FakeSegment(QWidget):
    """Stands in for the Segment widget: anything docked with set_model(path)."""

    def __init__(self):
        super().__init__()
        self.models: list[str] = []

    def set_model(self, path: str) -> None:
        self.models.append(path)
