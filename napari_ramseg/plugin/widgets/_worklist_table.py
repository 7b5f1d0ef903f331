"""The Worklist dock's table: the scans in review order, one row each, its columns fitted to the dock.

The reasons for the ranking (its score and the fit) lead and the measures follow, so a narrow dock
scrolls the measures, never the reasons, out of view; the scan names elide in the middle instead.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

NEEDED = {"disagreement": "its style disagreement", "descriptor": "its descriptor"}
# reviewed is slate, not blue: a blue row was taken for the selection (the open scan) after Next
STATUS_COLOURS = {"untouched": None, "reviewed": "#5b6270", "corrected": "#3f8f4f"}
MEASURE_COLUMNS = 2  # the first measures of a row (size and share of the first structure, or vCDR...)
SCAN_COLUMN_PX = 150  # at most; less where the dock is narrow (names elide in the middle)
SCAN_COLUMN_MIN_PX = 60
LEADING_COLUMNS = 5  # "#", scan, status, the ranking's score and fit: always in view; measures follow
NOT_MEASURES = ("case", "file", "mean_uncertainty", "disagreement", "fit_score", "fits", "fit_note",
                "review_priority", "measures_reliable")
UNRELIABLE_MARK = " ⚠"  # beside a measure of a scan that does not fit the model


def cell_text(value: Any) -> str:
    """A report value as a table cell: empty for none, yes/no, three significant digits."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def ranking_score(priority: str) -> str:
    """The report column the table shows as the ranking's score."""
    return "disagreement" if priority == "disagreement" else "mean_uncertainty"


def measure_columns(rows: list[dict]) -> list[str]:
    """The first measures the rows have, in their order."""
    measures: list[str] = []
    for row in rows:
        measures += [k for k in row if k not in NOT_MEASURES and k not in measures]
    return measures[:MEASURE_COLUMNS]


def row_cells(rank: int, name: str, status: str, row: dict, score: str, measures: list[str]) -> list[str]:
    """One scan's cells; a measure of a scan that does not fit the model is marked unreliable."""
    unfit = row.get("fits", True) not in (True, None)
    mark = UNRELIABLE_MARK if unfit and row.get("measures_reliable") is False else ""
    return [str(rank) if row else "–", name, status, cell_text(row.get(score)),
            cell_text(row.get("fit_score")) + (" ⚠" if unfit else ""),
            *(cell_text(row.get(m)) + (mark if row.get(m) not in (None, "") else "") for m in measures)]


def status_text(work: Any, current: str | None, busy: bool) -> str:
    """The dock's status line under the table: counts, the open scan, scans the ranking lacks."""
    counts = work.counts()
    done = sum(1 for c in work.cases.values() if c.row is not None)
    lacking = work.unmeasured()
    need = NEEDED.get(work.needs or "", "what it needs")
    return (f"{len(work.cases)} scans, {done} segmented: " + ", ".join(f"{v} {k}" for k, v in counts.items())
            + (f"; open: {current}" if current else "")
            + (f"; {len(lacking)} scan(s) lack {need} for this ranking and come last: "
               "Segment all measures it" if lacking and not busy else ""))


class FittedTable(QTableWidget):
    """The worklist's table: columns sized to their contents, the scan column (column 1) to what the
    leading columns leave of the table's width, on every resize, so they are always in view."""

    def __init__(self) -> None:
        super().__init__(0, 0)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.setMinimumHeight(240)
        self.setTextElideMode(Qt.ElideMiddle)
        self.setWordWrap(False)
        self.horizontalHeader().setMinimumSectionSize(24)

    def name_at(self, row: int) -> str | None:
        """The scan file name of a row (its cell may show it elided)."""
        item = self.item(row, 1)
        return None if item is None else item.data(Qt.UserRole)

    def show_worklist(self, work: Any, current: str | None) -> None:
        """Rebuild the rows from ``work`` in review order; the open scan's row bold and selected."""
        self.clearContents()
        if work is None:
            self.setRowCount(0)
            return
        order = work.order()
        rows = {n: work.cases[n].row or {} for n in order}
        measures = measure_columns(list(rows.values()))
        score = ranking_score(work.priority)
        headers = ["#", "scan", "status", "uncertainty" if score == "mean_uncertainty" else score, "fit",
                   *(m.replace("_", " ") for m in measures)]
        self.setColumnCount(len(headers))
        self.setHorizontalHeaderLabels(headers)
        self.setRowCount(len(order))
        for i, name in enumerate(order):
            status = work.cases[name].status
            cells = row_cells(i + 1, name, status, rows[name], score, measures)
            self._fill_row(i, name, cells, rows[name], STATUS_COLOURS.get(status), open_scan=name == current)
        self.fit_columns()
        self._highlight(order, current)

    def _fill_row(self, i: int, name: str, cells: list[str], row: dict, colour: str | None,
                  open_scan: bool = False) -> None:
        """One row's cells; the open scan's in bold, which a status colour cannot hide as it can the
        selection's."""
        for j, text in enumerate(cells):
            item = QTableWidgetItem(text)
            if open_scan:
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            if j == 1:
                item.setData(Qt.UserRole, name)
                if row.get("fit_note"):
                    item.setToolTip(row["fit_note"])
            elif j >= LEADING_COLUMNS and UNRELIABLE_MARK in text:
                item.setToolTip("unreliable: the scan does not fit the model's training data")
            if colour is not None:
                item.setBackground(QColor(colour))
            self.setItem(i, j, item)

    def _highlight(self, order: list[str], current: str | None) -> None:
        """The open scan's row selected and current (the keyboard focus too), so it follows Next."""
        if current in order:
            i = order.index(current)
            with_signals = self.blockSignals(True)
            try:
                self.setCurrentCell(i, 1)
                self.selectRow(i)
            finally:
                self.blockSignals(with_signals)
            self.scrollToItem(self.item(i, 1))
        else:
            self.clearSelection()

    def fit_columns(self) -> None:
        self.resizeColumnsToContents()
        leading = sum(self.columnWidth(j) for j in range(min(LEADING_COLUMNS, self.columnCount())) if j != 1)
        free = self.viewport().width() - leading
        self.setColumnWidth(1, max(SCAN_COLUMN_MIN_PX, min(SCAN_COLUMN_PX, free)))

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if self.columnCount() > 1:
            self.fit_columns()
