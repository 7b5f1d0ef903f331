"""The Worklist dock: a folder of tiny scans segmented in the background, the table in review order,
open -> correct -> save -> next, and the same state after the viewer is closed and opened again."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_ramseg.core.finetune.corrections import CorrectionStore
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.io import read_image, read_mask
from napari_ramseg.plugin.widgets.worklist import WorklistWidget

pytestmark = pytest.mark.gui


@pytest.fixture()
def scans(tmp_path, synthetic_data):
    folder = tmp_path / "scans"
    folder.mkdir()
    truths = {}
    for domain in ("siteA", "siteB"):
        for i in (0, 1):
            name = f"{domain}_case{i}.png"
            shutil.copy(synthetic_data / domain / "images" / f"case{i}.png", folder / name)
            truths[name] = read_mask(synthetic_data / domain / "labels" / f"case{i}.png")
    return folder, truths


def _dock(viewer, folder, model, project):
    widget = WorklistWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Worklist")
    widget.model_picker.set_model(model)
    widget.device_combo.setCurrentText("cpu")
    widget.project_edit.setText(str(project))
    assert widget.open_folder(folder) is not None
    return widget


def _table(widget):
    t = widget.table
    headers = [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())]
    return headers, [[t.item(i, j).text() for j in range(t.columnCount())] for i in range(t.rowCount())]


def test_worklist_open_correct_save_next_and_reopen(make_napari_viewer, qtbot, tmp_path, scans, tiny_model):
    folder, truths = scans
    project = tmp_path / "corrections"
    viewer = make_napari_viewer()
    widget = _dock(viewer, folder, tiny_model, project)
    headers, rows = _table(widget)
    assert len(rows) == 4 and {r[2] for r in rows} == {"untouched"}

    worker = widget.segment_all()  # in the background, with progress and Stop
    assert worker is not None and not widget.segment_button.isEnabled() and widget.runner.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    assert widget.runner.last_outcome == "done", widget.runner.status.text()
    assert widget.runner.progress.value() == 4

    # the table: every scan, ranked by mean uncertainty (highest first), measures and fit beside it
    headers, rows = _table(widget)
    assert headers[:5] == ["#", "scan", "status", "uncertainty", "fit"]  # the ranking's reasons, then measures
    assert "blob px" in headers
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    order = [r[1] for r in rows]
    assert order == widget.worklist.order() and sorted(order) == sorted(truths)
    uncertainty = [widget.worklist.cases[n].row["mean_uncertainty"] for n in order]
    assert uncertainty == sorted(uncertainty, reverse=True)
    predictor = Predictor.from_path(tiny_model, device="cpu")

    # open the first row: the scan and its prediction, ready to paint
    widget.table.cellClicked.emit(0, 1)
    first = order[0]
    assert widget.current == first
    labels = viewer.layers[f"worklist: {first} prediction"]
    np.testing.assert_array_equal(labels.data, predictor.predict(read_image(folder / first).array).labels)
    assert viewer.layers.selection.active is labels and labels.mode == "paint"
    assert _table(widget)[1][0][2] == "untouched"  # opened is not looked at: Next or Save marks it

    # correct it through napari's painting path, save, and the next scan opens
    truth = truths[first]
    for value in (0, 1):
        fix = np.nonzero((truth == value) & (np.asarray(labels.data) != value))
        if fix[0].size:
            labels.data_setitem(fix, value)
    changed = not np.array_equal(truth, predictor.predict(read_image(folder / first).array).labels)
    case_id = widget.save_and_next()
    assert case_id is not None, widget.status.text()
    saved = CorrectionStore(project).load(case_id)
    np.testing.assert_array_equal(saved.final, truth)
    assert widget.current == order[1] and f"worklist: {first} prediction" not in viewer.layers
    assert f"worklist: {order[1]} prediction" in viewer.layers

    # Next without saving: the second is marked reviewed as the user moves on, the third opens untouched
    assert widget.next_case() == order[2]
    statuses = [r[2] for r in _table(widget)[1]]
    assert statuses[:3] == ["corrected" if changed else "reviewed", "reviewed", "untouched"]
    assert statuses[3] == "untouched"
    viewer.close()

    # napari closed and opened again: the same list, the same marks, nothing to segment again
    viewer = make_napari_viewer()
    again = _dock(viewer, folder, tiny_model, project)
    headers, rows = _table(again)
    assert [r[1] for r in rows] == order and [r[2] for r in rows] == statuses
    assert again.worklist.cases[first].case_id == case_id
    assert again.worklist.pending(str(tiny_model)) == []
    assert again.next_case() == order[2]  # opened but never moved on from: still to review


def test_stop_keeps_what_was_segmented(make_napari_viewer, qtbot, tmp_path, scans, tiny_model):
    folder, _ = scans
    viewer = make_napari_viewer()
    widget = _dock(viewer, folder, tiny_model, tmp_path / "c")
    widget.segment_all()
    widget.runner.cancel()  # Stop: the job ends after the scan it is on
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    done = sum(1 for c in widget.worklist.cases.values() if c.row is not None)
    assert done < 4
    assert len(widget.worklist.pending(str(tiny_model))) == 4 - done


def test_a_folder_without_scans_says_so(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = WorklistWidget(viewer)
    assert widget.open_folder(tmp_path) is None
    assert "no readable images" in widget.status.text()


def test_review_by_representative_reorders_the_table_and_is_kept(make_napari_viewer, qtbot, tmp_path, scans,
                                                                 tiny_model):
    from napari_ramseg.core.review.priority import representative_order

    folder, _ = scans
    viewer = make_napari_viewer()
    widget = _dock(viewer, folder, tiny_model, tmp_path / "c")
    assert widget.priority_choice.value == "uncertainty"  # ReviewConfig's default
    assert list(widget.priority_choice.choices) == ["uncertainty", "disagreement", "representative", "random"]
    widget.priority_choice.value = "representative"  # the dock's magicgui combo box
    assert widget.worklist.priority == "representative"
    widget.segment_all()
    assert not widget.priority_choice.enabled  # the job measures what the ranking needs: fixed meanwhile
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    assert widget.runner.last_outcome == "done", widget.runner.status.text()
    assert widget.priority_choice.enabled

    work = widget.worklist
    expected = representative_order(work.descriptors, {n: c.row["mean_uncertainty"] for n, c in work.cases.items()})
    headers, rows = _table(widget)
    assert [r[1] for r in rows] == expected and [r[0] for r in rows] == ["1", "2", "3", "4"]
    assert headers[3:5] == ["uncertainty", "fit"]

    widget.priority_choice.value = "uncertainty"  # the table re-orders at once, nothing segmented again
    by_entropy = [r[1] for r in _table(widget)[1]]
    scores = [work.cases[n].row["mean_uncertainty"] for n in by_entropy]
    assert scores == sorted(scores, reverse=True) and work.pending(str(tiny_model)) == []
    assert by_entropy != expected  # on these four scans the two rankings differ, so the table did re-order
    widget.priority_choice.value = "representative"
    assert [r[1] for r in _table(widget)[1]] == expected
    viewer.close()

    # napari closed and opened again: the ranking chosen and its order come back
    viewer = make_napari_viewer()
    again = _dock(viewer, folder, tiny_model, tmp_path / "c")
    assert again.priority_choice.value == "representative"
    assert [r[1] for r in _table(again)[1]] == expected
    assert again.next_case() == expected[0]
    # a ranking whose scores were never measured says so; Segment all would measure just those
    again.priority_choice.value = "disagreement"
    assert "4 scan(s) lack its style disagreement" in again.status.text()
    assert _table(again)[0][3] == "disagreement"
