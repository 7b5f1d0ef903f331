"""Worklist dock: a folder of scans segmented in the background, ranked for review, corrected one by one.

Choose a folder; "Segment all" runs every scan not yet segmented by the chosen model through it
(``core.worklist.Worklist.iter_segment``) as a ``JobRunner`` job, with progress and Stop (after the
current scan). The table lists the scans by review priority (``core/review.py``; its measures,
mean uncertainty and fit score as ``report.csv`` has them); "Review by" picks the ranking
(``config.REVIEW_PRIORITIES``, default ``ReviewConfig.priority``), kept in the worklist's state. The
set-level ``representative`` order is computed once the folder is done (while scans are segmented the
newly done ones follow the last order). The table's first columns fit the dock's width: the
scan names elide, so the uncertainty and fit columns (the reasons for the ranking) are always in view;
the measures follow them. Clicking a row opens that scan with its prediction as a Labels layer ready to
paint, and the open scan's row stays highlighted (in bold); "Save and next" saves image, prediction
("original") and the painted mask ("final") into the corrections project (``core/corrections.py``, as
the Correct and fine-tune dock does, so that dock fine-tunes on them) and opens the next untouched scan.
"Next" moves on without saving. Status (untouched; reviewed once the user moves on from it with Next or
saves it unchanged, never by opening it alone; corrected once a changed mask is saved) lives in the
worklist's ``worklist.json``, so it is all there again after napari is closed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (QAbstractItemView, QFormLayout, QHBoxLayout, QPushButton, QTableWidget,
                            QTableWidgetItem, QWidget)

from .. import layer_meta
from ..core.config import ReviewConfig
from ..palette import label_color
from ._base import DockWidget, status_label
from ._common import ORIGINAL_KEY, JobControl, Progress, get_predictor, notify_error, notify_info
from ._params import Param
from .finetune import DEFAULT_PROJECT

REVIEW = ReviewConfig()
PRIORITY = Param("priority", ReviewConfig, "priority", "Review by",
                 tooltip="how the table ranks the scans: uncertainty (mean entropy), disagreement (the "
                         "prediction's change over the scan's style views, extra network passes), "
                         "representative (scans that stand for the rest of the folder, leaning to the "
                         "uncertain ones) or random")
NEEDED = {"disagreement": "its style disagreement", "descriptor": "its descriptor"}
# reviewed is slate, not blue: a blue row was taken for the selection (the open scan) after Next
STATUS_COLOURS = {"untouched": None, "reviewed": "#5b6270", "corrected": "#3f8f4f"}
MEASURE_COLUMNS = 2  # the first measures of a row (size and share of the first structure, or vCDR...)
LAYER_PREFIX = "worklist: "
SCAN_COLUMN_PX = 150  # at most; less where the dock is narrow (names elide in the middle)
SCAN_COLUMN_MIN_PX = 60
LEADING_COLUMNS = 5  # "#", scan, status, the ranking's score and fit: always in view; measures follow
NOT_MEASURES = ("case", "file", "mean_uncertainty", "disagreement", "fit_score", "fits", "fit_note",
                "review_priority", "measures_reliable")
UNRELIABLE_MARK = " ⚠"  # beside a measure of a scan that does not fit the model


def segment_all_job(worklist: Any, model: Path, device: str):
    """The job: every pending scan of ``worklist`` segmented with ``model``; returns the worklist."""

    def job(control: JobControl):
        yield Progress(0, 0, "loading model…")
        predictor = get_predictor(model, device)
        pending = worklist.pending(str(model))
        yield Progress(0, len(pending), f"segmenting {len(pending)} scan(s)…")
        for done, total, name in worklist.iter_segment(predictor, str(model), cancelled=control.cancelled):
            yield Progress(done, total, f"segmented {name} ({done}/{total})")
        return worklist

    return job


class FittedTable(QTableWidget):
    """The worklist's table: columns sized to their contents, the scan column (column 1) to what the
    leading columns leave of the table's width, on every resize, so they are always in view."""

    def fit_columns(self) -> None:
        self.resizeColumnsToContents()
        leading = sum(self.columnWidth(j) for j in range(min(LEADING_COLUMNS, self.columnCount())) if j != 1)
        free = self.viewport().width() - leading
        self.setColumnWidth(1, max(SCAN_COLUMN_MIN_PX, min(SCAN_COLUMN_PX, free)))

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if self.columnCount() > 1:
            self.fit_columns()


def _number(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class WorklistWidget(DockWidget):
    """A folder's scans by review priority; open, correct, save, next."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        self.worklist: Any = None
        self.current: str | None = None  # the open scan's file name
        form = QFormLayout()
        self.folder_edit = self.add_path(form, "Scans", "Folder of scans", placeholder="a folder of images or volumes",
                                         then=self.open_folder)
        self.folder_edit.editingFinished.connect(self.open_folder)
        self.model_picker = self.add_model_choice(form)
        self.device_combo = self.add_device_choice(form)
        self.project_edit = self.add_path(form, "Corrections", "Corrections project folder", text=str(DEFAULT_PROJECT),
                                          tooltip="where saved corrections go (the Correct and fine-tune dock's project)")
        self.priority_choice = self.add_param(form, PRIORITY)  # a magicgui combo box of the config's choices
        self.priority_choice.changed.connect(lambda value: self.set_priority(value))
        self.segment_button = QPushButton("Segment all")
        self.segment_button.clicked.connect(lambda: self.segment_all())
        self.runner = self.add_job_runner()
        self.table = FittedTable(0, 0)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(240)
        self.table.setTextElideMode(Qt.ElideMiddle)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setMinimumSectionSize(24)
        self.table.cellClicked.connect(lambda row, _col: self.open_case(self._name_at(row)))
        buttons = QHBoxLayout()
        self.save_button = QPushButton("Save and next")
        self.save_button.setToolTip("save the painted mask into the corrections project, then open the next scan")
        self.save_button.clicked.connect(lambda: self.save_and_next())
        self.next_button = QPushButton("Next")
        self.next_button.setToolTip("leave this scan as reviewed, without saving, and open the next untouched one")
        self.next_button.clicked.connect(lambda: self.next_case())
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.next_button)
        self.status = status_label()
        self.lay_out(form, self.segment_button, self.runner, self.table, buttons, self.status)
        self.runner.busy_changed.connect(lambda busy: self.segment_button.setEnabled(not busy))
        # the job reads the ranking to know what to measure: it stays put while scans are segmented
        self.runner.busy_changed.connect(lambda busy: setattr(self.priority_choice, "enabled", not busy))
        self._set_buttons()

    # -- the folder ------------------------------------------------------------------------------
    def open_folder(self, folder: str | Path | None = None) -> Any:
        """Read (or start) the worklist of this folder and show it; None when the folder is refused."""
        from ..core.worklist import Worklist
        from ..errors import one_line

        if folder is not None:
            self.folder_edit.setText(str(folder))
        text = self.folder_edit.text().strip()
        if not text or self.runner.busy:
            return self.worklist
        try:
            work = Worklist(Path(text))  # with the ranking its state was left with
            if not work.state_path.exists():  # a new worklist: the ranking chosen here
                work.set_priority(self.priority_choice.value)
        except Exception as exc:  # a missing folder, an unreadable state: one line, the dock stays usable
            self.worklist = None
            self.status.setText(f"Cannot open the worklist: {one_line(exc)}")
            self.refresh()
            return None
        self.worklist = work
        self.current = None
        with self.priority_choice.changed.blocked():
            self.priority_choice.value = work.priority
        self.refresh()
        return self.worklist

    def set_priority(self, priority: str) -> None:
        """Rank the table by ``priority`` (``config.REVIEW_PRIORITIES``); kept in the worklist's state."""
        from ..errors import one_line

        if self.priority_choice.value != priority:
            self.priority_choice.value = priority  # its signal comes back here
            return
        if self.worklist is None:
            return
        try:
            self.worklist.set_priority(priority)
        except Exception as exc:  # an unwritable folder: said, the table keeps its order
            notify_error(f"cannot change the ranking: {one_line(exc)}")
        self.refresh()

    def segment_all(self, run_sync: bool | None = None) -> Any:
        """Segment every scan not yet segmented by the chosen model (background job); returns its worker."""
        work = self.worklist or self.open_folder()
        try:
            if work is None:
                raise ValueError("choose a folder of scans first")
            model = self.model_picker.model_path()
        except Exception as exc:
            notify_error(str(exc))
            self.status.setText(str(exc))
            return None
        worker = self.runner.start(segment_all_job(work, model, self.device_combo.value()),
                                   on_result=lambda _: self.refresh(), description="segmenting…",
                                   run_sync=run_sync, stops_itself=True)
        if worker is not None:
            worker.yielded.connect(lambda _: self.refresh())  # the table fills in as scans are done
        return worker

    # -- the table -------------------------------------------------------------------------------
    def order(self) -> list[str]:
        return [] if self.worklist is None else self.worklist.order()

    def _name_at(self, row: int) -> str | None:
        item = self.table.item(row, 1)
        return None if item is None else item.data(Qt.UserRole)

    def refresh(self) -> None:
        """Rebuild the table from the worklist, in review order."""
        self.table.clearContents()
        work = self.worklist
        if work is None:
            self.table.setRowCount(0)
            self._set_buttons()
            return
        order = work.order()
        rows = {n: work.cases[n].row or {} for n in order}
        measures: list[str] = []
        for row in rows.values():
            measures += [k for k in row if k not in NOT_MEASURES and k not in measures]
        measures = measures[:MEASURE_COLUMNS]
        score = "disagreement" if work.priority == "disagreement" else "mean_uncertainty"
        # the reasons for the ranking (score and fit) lead, the measures follow: a narrow dock scrolls
        # the measures, never the ranking's reasons, out of view
        headers = ["#", "scan", "status", "uncertainty" if score == "mean_uncertainty" else score, "fit",
                   *(m.replace("_", " ") for m in measures)]
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(order))
        for i, name in enumerate(order):
            case, row = work.cases[name], rows[name]
            unfit = row.get("fits", True) not in (True, None)
            mark = UNRELIABLE_MARK if unfit and row.get("measures_reliable") is False else ""
            cells = [str(i + 1) if row else "–", name, case.status, _number(row.get(score)),
                     _number(row.get("fit_score")) + (" ⚠" if unfit else ""),
                     *(_number(row.get(m)) + (mark if row.get(m) not in (None, "") else "") for m in measures)]
            self._fill_row(i, name, cells, row, STATUS_COLOURS.get(case.status), open_scan=name == self.current)
        self.table.fit_columns()
        self._highlight_current(order)
        counts = work.counts()
        done = sum(1 for c in work.cases.values() if c.row is not None)
        lacking = work.unmeasured()
        need = NEEDED.get(work.needs or "", "what it needs")
        self.status.setText(f"{len(order)} scans, {done} segmented: " + ", ".join(f"{v} {k}" for k, v in counts.items())
                            + (f"; open: {self.current}" if self.current else "")
                            + (f"; {len(lacking)} scan(s) lack {need} for this ranking and come last: "
                               "Segment all measures it" if lacking and not self.runner.busy else ""))
        self._set_buttons()

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
            self.table.setItem(i, j, item)

    def _highlight_current(self, order: list[str]) -> None:
        """The open scan's row selected and current (the keyboard focus too), so it follows Next."""
        if self.current in order:
            i = order.index(self.current)
            with_signals = self.table.blockSignals(True)
            try:
                self.table.setCurrentCell(i, 1)
                self.table.selectRow(i)
            finally:
                self.table.blockSignals(with_signals)
            self.table.scrollToItem(self.table.item(i, 1))
        else:
            self.table.clearSelection()

    def _set_buttons(self) -> None:
        open_case = self.current is not None and self.viewer is not None and self._labels_name() in self.viewer.layers
        self.save_button.setEnabled(open_case)
        self.next_button.setEnabled(self.worklist is not None)

    # -- one case --------------------------------------------------------------------------------
    def _image_name(self, name: str | None = None) -> str:
        return LAYER_PREFIX + (name or self.current or "")

    def _labels_name(self, name: str | None = None) -> str:
        return self._image_name(name) + " prediction"

    def _edited(self) -> bool:
        if self.current is None or self._labels_name() not in self.viewer.layers:
            return False
        layer = self.viewer.layers[self._labels_name()]
        original = layer.metadata.get(ORIGINAL_KEY)
        return original is None or not np.array_equal(np.asarray(layer.data), original)

    def _close_current(self) -> None:
        """Take the open scan's layers away, unless the mask was painted and not saved: those stay."""
        if self.current is None:
            return
        names = [self._labels_name(), self._image_name()]
        if self._edited():
            notify_info(f"napari-ramseg: '{self._labels_name()}' has unsaved edits and was left in the viewer")
            for name in names:  # renamed, so the next time this scan opens it gets fresh layers
                if name in self.viewer.layers:
                    self.viewer.layers[name].name = name + " (unsaved)"
            return
        for name in names:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)

    def open_case(self, name: str | None) -> bool:
        """Show a segmented scan with its prediction, ready to paint (its status changes when the user
        moves on: Next or Save and next)."""
        work = self.worklist
        if work is None or name is None or name not in work.cases:
            return False
        if work.cases[name].row is None:
            self.status.setText(f"{name} is not segmented yet: press Segment all")
            return False
        try:
            image = work.load_image(name)
            labels = work.load_prediction(name)
        except Exception as exc:
            notify_error(f"cannot open {name}: {exc}")
            return False
        if name != self.current:
            self._close_current()
        self.current = name
        case = work.cases[name]
        scale = tuple(image.spacing) if image.is_volume and image.spacing else None
        meta = {layer_meta.SOURCE_PATH: str(work.scans / name)}
        if image.spacing is not None:
            meta[layer_meta.SPACING] = [float(s) for s in image.spacing]
        if image.affine is not None:
            meta[layer_meta.AFFINE] = np.asarray(image.affine).tolist()
        geometry = {"scale": scale} if scale else {}
        viewer = self.viewer
        if self._image_name() not in viewer.layers:
            viewer.add_image(image.array, name=self._image_name(), rgb=image.axes == "YXC", metadata=meta, **geometry)
        if self._labels_name() not in viewer.layers:
            colours = {0: "transparent", None: "transparent", **{i: label_color(i) for i in range(1, 9)}}
            layer = viewer.add_labels(labels, name=self._labels_name(), opacity=0.7, colormap=colours,
                                      metadata={layer_meta.MODEL: case.model, ORIGINAL_KEY: labels.copy(),
                                                **layer_meta.geometry_of(meta)}, **geometry)
        layer = viewer.layers[self._labels_name()]
        viewer.layers.selection.active = layer
        try:
            layer.mode = "paint"
        except Exception:  # noqa: BLE001 - a napari without paint mode for this layer: the user picks a tool
            pass
        # not marked reviewed here: opening is not looking; Next or Save and next mark it
        self.refresh()
        return True

    def save_and_next(self) -> str | None:
        """Save the open scan's mask as a correction, mark it, open the next untouched scan; the case id."""
        from ..core.corrections import CorrectionStore
        from ..errors import one_line

        work, name = self.worklist, self.current
        if work is None or name is None or self._labels_name() not in self.viewer.layers:
            self.status.setText("open a scan first (click a row)")
            return None
        layer = self.viewer.layers[self._labels_name()]
        image_layer = self.viewer.layers[self._image_name()]
        final = np.asarray(layer.data)
        original = np.asarray(layer.metadata.get(ORIGINAL_KEY, final))
        changed = not np.array_equal(final, original)
        meta = {k: image_layer.metadata[k] for k in (layer_meta.AFFINE, layer_meta.SPACING, layer_meta.SOURCE_PATH)
                if k in image_layer.metadata}
        meta["worklist"] = str(work.root)
        try:
            store = CorrectionStore(Path(self.project_edit.text().strip() or DEFAULT_PROJECT).expanduser())
            model = work.cases[name].model
            case_id = store.save(np.asarray(image_layer.data), original, final, model, work.case_name(name), meta)
        except Exception as exc:
            message = f"Could not save the correction: {one_line(exc)}"
            notify_error(message)
            self.status.setText(message)
            return None
        work.mark(name, "corrected" if changed else "reviewed", case_id)
        layer.metadata[ORIGINAL_KEY] = final.copy()  # saved: nothing unsaved left on this layer
        notify_info(f"napari-ramseg: saved {case_id} in {store.root}")
        self.next_case()
        return case_id

    def next_case(self) -> str | None:
        """Open the next untouched scan in review order (the current one counts as reviewed)."""
        work = self.worklist
        if work is None:
            return None
        if self.current is not None and work.cases[self.current].status == "untouched":
            work.mark(self.current, "reviewed")
        following = work.next_case(after=self.current)
        if following is None:
            self._close_current()
            self.current = None
            self.refresh()
            self.status.setText(self.status.text() + "; no untouched scan left")
            return None
        self.open_case(following)
        return following
