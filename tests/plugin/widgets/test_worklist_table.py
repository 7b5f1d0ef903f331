"""The Worklist table as a new user met it (issue 29, finding 8): the uncertainty and fit columns in view
without scrolling in a docked, shown Worklist; the highlighted row follows Next; a click opens a scan
without marking it reviewed. And finding 18 in the table: measures of a scan that does not fit are marked."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from qtpy.QtCore import Qt

from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.plugin.widgets.worklist import WorklistWidget

pytestmark = pytest.mark.gui
SHOTS = Path(os.environ.get("RAMSEG_SHOTS", tempfile.gettempdir()))  # where the screenshot is left to look at


@pytest.fixture()
def docked(make_napari_viewer, qtbot, tmp_path, synthetic_data, tiny_model):
    """A shown viewer with the Worklist docked at napari's width, four long-named scans segmented."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for domain in ("siteA", "siteB"):
        for i in (0, 1):
            shutil.copy(synthetic_data / domain / "images" / f"case{i}.png",
                        folder / f"{domain}_patient_0042_left_eye_visit_{i}.png")
    viewer = make_napari_viewer(show=True)
    widget = WorklistWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Worklist")
    widget.model_picker.set_model(tiny_model)
    widget.device_combo.setCurrentText("cpu")
    widget.project_edit.setText(str(tmp_path / "corrections"))
    widget.open_folder(folder)
    list(widget.worklist.iter_segment(Predictor.from_path(tiny_model, device="cpu"), str(tiny_model)))
    widget.refresh()
    qtbot.wait(50)
    return widget


def _column(widget, title):
    t = widget.table
    return next(j for j in range(t.columnCount()) if t.horizontalHeaderItem(j).text() == title)


def test_the_uncertainty_and_fit_columns_are_in_view_without_scrolling(docked, qtbot):
    table, header = docked.table, docked.table.horizontalHeader()
    assert table.horizontalScrollBar().value() == 0
    for title in ("uncertainty", "fit"):
        j = _column(docked, title)
        right = header.sectionViewportPosition(j) + header.sectionSize(j)
        assert 0 <= header.sectionViewportPosition(j) and right <= table.viewport().width(), title
    assert header.sectionSize(1) >= 60  # the scan names elide, they do not vanish
    docked.table.resize(docked.table.width() + 120, docked.table.height())  # a wider dock: more of the names
    qtbot.wait(20)
    assert header.sectionSize(1) > 60


def _click_row(widget, qtbot, i):
    table = widget.table
    rect = table.visualRect(table.model().index(i, 1))
    qtbot.mouseClick(table.viewport(), Qt.LeftButton, pos=rect.center())


def test_a_click_opens_a_scan_without_marking_it_and_the_highlight_follows_next(docked, qtbot):
    work, table = docked.worklist, docked.table
    order = work.order()
    _click_row(docked, qtbot, 1)  # a real click on the second row
    assert docked.current == order[1]
    assert work.cases[order[1]].status == "untouched"  # opened is not yet looked at
    assert table.currentRow() == 1 and [i.row() for i in table.selectionModel().selectedRows()] == [1]

    following = docked.next_case()  # moving on marks it reviewed and opens the next untouched scan
    assert work.cases[order[1]].status == "reviewed" and following == order[2]
    assert table.currentRow() == 2 and [i.row() for i in table.selectionModel().selectedRows()] == [2]
    assert work.cases[order[2]].status == "untouched"
    bold = [i for i in range(table.rowCount()) if table.item(i, 1).font().bold()]
    assert bold == [2]  # the open scan stands out whatever its status colour
    qtbot.wait(50)
    docked.viewer.window._qt_window.grab().save(str(SHOTS / "worklist_after_next.png"))


def test_measures_of_a_scan_that_does_not_fit_are_marked_in_the_table(make_napari_viewer, tmp_path,
                                                                    synthetic_data, tiny_model):
    folder = tmp_path / "scans"
    folder.mkdir()
    source = synthetic_data / "siteA" / "images" / "case0.png"
    shutil.copy(source, folder / "source.png")
    Image.fromarray(np.array(Image.open(source)).mean(axis=-1).astype(np.uint8)).save(folder / "grey.png")
    widget = WorklistWidget(make_napari_viewer())
    widget.open_folder(folder)
    list(widget.worklist.iter_segment(Predictor.from_path(tiny_model, device="cpu"), "m"))
    widget.refresh()
    t = widget.table
    rows = {t.item(i, 1).text(): [t.item(i, j).text() for j in range(t.columnCount())] for i in range(t.rowCount())}
    blob = _column(widget, "blob px")
    assert rows["grey.png"][blob].endswith("⚠") and not rows["source.png"][blob].endswith("⚠")
    assert "does not fit" in t.item(list(rows).index("grey.png"), blob).toolTip()
