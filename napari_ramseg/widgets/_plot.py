"""A small live line plot drawn with QPainter (no matplotlib or pyqtgraph needed)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

_COLORS = ("#f5a623", "#4fc3f7", "#9ccc65", "#e57373")


class LivePlot(QWidget):
    """Curves that grow point by point; each keeps its own y range (``fixed_range`` pins one, e.g. Dice 0..1)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.fixed_range: dict[str, tuple[float, float]] = {}
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)

    def add_series(self, name: str, fixed_range: tuple[float, float] | None = None) -> None:
        self.series.setdefault(name, [])
        if fixed_range is not None:
            self.fixed_range[name] = fixed_range

    def add_point(self, name: str, x: float, y: float) -> None:
        if y is None or not math.isfinite(float(y)):
            return
        self.series.setdefault(name, []).append((float(x), float(y)))
        self.update()

    def clear(self) -> None:
        for points in self.series.values():
            points.clear()
        self.update()

    def last(self, name: str) -> float | None:
        points = self.series.get(name) or []
        return points[-1][1] if points else None

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        rect = QRectF(self.rect()).adjusted(6, 18, -6, -6)
        painter.fillRect(self.rect(), QColor("#262930"))
        painter.setPen(QPen(QColor("#555"), 1))
        painter.drawRect(rect)
        xs = [x for pts in self.series.values() for x, _ in pts]
        x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
        if x1 <= x0:
            x1 = x0 + 1.0
        legend_x = 8.0
        for i, (name, points) in enumerate(self.series.items()):
            color = QColor(_COLORS[i % len(_COLORS)])
            last = f" {points[-1][1]:.3f}" if points else ""
            painter.setPen(color)
            painter.drawText(QPointF(legend_x, 13), f"{name}{last}")
            legend_x += painter.fontMetrics().horizontalAdvance(f"{name}{last}") + 14
            if not points:
                continue
            ys = [y for _, y in points]
            y0, y1 = self.fixed_range.get(name, (min(ys), max(ys)))
            if y1 <= y0:
                y0, y1 = y0 - 0.5, y1 + 0.5
            path = QPainterPath()
            for j, (x, y) in enumerate(points):
                px = rect.left() + (x - x0) / (x1 - x0) * rect.width()
                py = rect.bottom() - (min(max(y, y0), y1) - y0) / (y1 - y0) * rect.height()
                path.moveTo(px, py) if j == 0 else path.lineTo(px, py)
            painter.setPen(QPen(color, 1.5))
            painter.drawPath(path)
            if len(points) == 1:
                painter.drawEllipse(QPointF(path.currentPosition()), 2.0, 2.0)
        painter.setPen(Qt.NoPen)
        painter.end()
