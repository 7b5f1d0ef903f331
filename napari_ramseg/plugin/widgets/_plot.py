"""A small live line plot drawn with QPainter (no matplotlib or pyqtgraph needed)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

_COLORS = ("#f5a623", "#4fc3f7", "#9ccc65", "#e57373")
_TEXT = QColor("#c8c8c8")
_GRID = QColor("#3a3d45")


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


class LivePlot(QWidget):
    """Curves that grow point by point; each keeps its own y range (``fixed_range`` pins one, e.g. Dice 0..1).

    The first curve's y range is labelled on the left axis and the second's on the right, each in its
    curve's colour; the x range (``x_label``, e.g. "iteration") is labelled below.
    """

    def __init__(self, parent: QWidget | None = None, x_label: str = ""):
        super().__init__(parent)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.fixed_range: dict[str, tuple[float, float]] = {}
        self.x_label = x_label
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt naming)
        return QSize(320, 200)

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

    def y_range(self, name: str) -> tuple[float, float] | None:
        """The y range a curve is drawn over (None while it has no points and no fixed range)."""
        points = self.series.get(name) or []
        if name in self.fixed_range:
            y0, y1 = self.fixed_range[name]
        elif points:
            ys = [y for _, y in points]
            y0, y1 = min(ys), max(ys)
        else:
            return None
        if y1 <= y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
        return y0, y1

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        metrics = painter.fontMetrics()
        line = metrics.height()
        names = list(self.series)
        ranges = {name: self.y_range(name) for name in names}
        axis_text = {side: [_fmt(v) for v in ranges[names[i]]] if len(names) > i and ranges[names[i]] else []
                     for i, side in enumerate(("left", "right"))}
        left = max([metrics.horizontalAdvance(t) for t in axis_text["left"]] + [0]) + 10
        right = max([metrics.horizontalAdvance(t) for t in axis_text["right"]] + [0]) + 10
        rect = QRectF(self.rect()).adjusted(left, line + 8, -right, -(line + 6))
        painter.fillRect(self.rect(), QColor("#262930"))
        painter.setPen(QPen(_GRID, 1, Qt.DotLine))
        for frac in (0.25, 0.5, 0.75):
            y = rect.bottom() - frac * rect.height()
            painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
        painter.setPen(QPen(QColor("#555"), 1))
        painter.drawRect(rect)

        xs = [x for pts in self.series.values() for x, _ in pts]
        x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
        if x1 <= x0:
            x1 = x0 + 1.0
        if xs:  # x range and caption under the frame
            baseline = rect.bottom() + 4 + metrics.ascent()
            painter.setPen(_TEXT)
            painter.drawText(QPointF(rect.left(), baseline), _fmt(x0))
            if max(xs) > x0:  # one x so far: no made-up end of the range
                end = _fmt(x1)
                painter.drawText(QPointF(rect.right() - metrics.horizontalAdvance(end), baseline), end)
            if self.x_label:
                painter.drawText(QPointF(rect.center().x() - metrics.horizontalAdvance(self.x_label) / 2, baseline),
                                 self.x_label)

        legend_x = rect.left()
        for i, name in enumerate(names):
            points = self.series[name]
            color = QColor(_COLORS[i % len(_COLORS)])
            label = f"{name} {points[-1][1]:.3f}" if points else name
            painter.setPen(color)
            painter.drawText(QPointF(legend_x, 4 + metrics.ascent()), label)
            legend_x += metrics.horizontalAdvance(label) + 16
            span = ranges[name]
            if i < 2 and span is not None:  # this curve's y range on its axis, in its colour
                for text, y in ((_fmt(span[1]), rect.top() + metrics.ascent() - 2), (_fmt(span[0]), rect.bottom())):
                    x = rect.left() - 5 - metrics.horizontalAdvance(text) if i == 0 else rect.right() + 5
                    painter.drawText(QPointF(x, y), text)
            if not points or span is None:
                continue
            y0, y1 = span
            screen = [QPointF(rect.left() + (x - x0) / (x1 - x0) * rect.width(),
                              rect.bottom() - (min(max(y, y0), y1) - y0) / (y1 - y0) * rect.height())
                      for x, y in points]
            path = QPainterPath(screen[0])
            for point in screen[1:]:
                path.lineTo(point)
            painter.setPen(QPen(color, 1.5))
            painter.drawPath(path)
            if len(points) <= 12:  # few points (validations): mark each one
                painter.setBrush(color)
                for point in screen:
                    painter.drawEllipse(point, 2.2, 2.2)
                painter.setBrush(Qt.NoBrush)
        painter.setPen(Qt.NoPen)
        painter.end()
