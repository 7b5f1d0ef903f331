"""Worklist dock: a folder of scans segmented in the background, ranked for review, corrected one by one.

Choose a folder; "Segment all" runs every scan not yet segmented by the chosen model through it
(``core.review.worklist.Worklist.iter_segment``) as a ``JobRunner`` job, with progress and Stop (after the
current scan). The device list offers a ramseg server too (``_server.py``: the same settings and
remembered address as the other docks): each scan is segmented there and its mask written here, the
same as a local run's; Stop drops the answer of the scan on its way. The table lists the scans by
review priority (``core/review/priority.py``; its measures, mean uncertainty and fit score as ``report.csv`` has
them); "Review by" picks the ranking (``config.REVIEW_PRIORITIES``, default ``ReviewConfig.priority``),
kept in the worklist's state. The
set-level ``representative`` order is computed once the folder is done (while scans are segmented the
newly done ones follow the last order). The table's first columns fit the dock's width: the
scan names elide, so the uncertainty and fit columns (the reasons for the ranking) are always in view;
the measures follow them. Clicking a row opens that scan with its prediction as a Labels layer ready to
paint, and the open scan's row stays highlighted (in bold); "Save and next" saves image, prediction
("original") and the painted mask ("final") into the corrections project (``core/finetune/corrections.py``, as
the Correct and fine-tune dock does, so that dock fine-tunes on them) and opens the next untouched scan.
"Next" moves on without saving. Status (untouched; reviewed once the user moves on from it with Next or
saves it unchanged, never by opening it alone; corrected once a changed mask is saved) lives in the
worklist's ``worklist.json``, so it is all there again after napari is closed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QPushButton, QWidget

from .. import layer_meta
from ...core.config import ReviewConfig
from ._base import DockWidget, status_label
from ._common import ORIGINAL_KEY, JobControl, Progress, get_predictor, notify_error, notify_info
from ._params import Param
from ._server import SERVER, remote_model_name, server_worklist_job
from ._worklist_layers import close_scan_layers, image_layer_name, labels_layer_name, show_scan_layers
from ._worklist_table import FittedTable, status_text
from .finetune import DEFAULT_PROJECT

REVIEW = ReviewConfig()
PRIORITY = Param("priority", ReviewConfig, "priority", "Review by",
                 tooltip="how the table ranks the scans: uncertainty (mean entropy), disagreement (the "
                         "prediction's change over the scan's style views, extra network passes), "
                         "representative (scans that stand for the rest of the folder, leaning to the "
                         "uncertain ones) or random")


def segment_all_job(worklist: Any, model: Path, device: str, model_name: str = ""):
    """The job: every pending scan of ``worklist`` segmented with ``model``; returns the worklist.
    Device "server": through the remembered server, where the model is ``model_name``."""
    if device == SERVER:
        return server_worklist_job(worklist, model, model_name)

    def job(control: JobControl):
        yield Progress(0, 0, "loading model…")
        predictor = get_predictor(model, device)
        pending = worklist.pending(str(model))
        yield Progress(0, len(pending), f"segmenting {len(pending)} scan(s)…")
        for done, total, name in worklist.iter_segment(predictor, str(model), cancelled=control.cancelled):
            yield Progress(done, total, f"segmented {name} ({done}/{total})")
        return worklist

    return job


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
        self.device_combo = self.add_device_choice(form, server=True)
        self.project_edit = self.add_path(form, "Corrections", "Corrections project folder", text=str(DEFAULT_PROJECT),
                                          tooltip="where saved corrections go (the Correct and fine-tune dock's project)")
        self.priority_choice = self.add_param(form, PRIORITY)  # a magicgui combo box of the config's choices
        self.priority_choice.changed.connect(lambda value: self.set_priority(value))
        self.segment_button = QPushButton("Segment all")
        self.segment_button.clicked.connect(lambda: self.segment_all())
        self.runner = self.add_job_runner()
        self.table = FittedTable()
        self.table.cellClicked.connect(lambda row, _col: self.open_case(self.table.name_at(row)))
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
        from ...core.review.worklist import Worklist
        from ...errors import one_line

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
        from ...errors import one_line

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
        job = segment_all_job(work, model, self.device_combo.value(),
                              remote_model_name(model, self.model_picker.bundled_name()))
        worker = self.runner.start(job,
                                   on_result=lambda _: self.refresh(), description="segmenting…",
                                   run_sync=run_sync, stops_itself=True)
        if worker is not None:
            worker.yielded.connect(lambda _: self.refresh())  # the table fills in as scans are done
        return worker

    # -- the table -------------------------------------------------------------------------------
    def order(self) -> list[str]:
        return [] if self.worklist is None else self.worklist.order()

    def refresh(self) -> None:
        """Rebuild the table from the worklist, in review order, and the status line under it."""
        self.table.show_worklist(self.worklist, self.current)
        if self.worklist is not None:
            self.status.setText(status_text(self.worklist, self.current, self.runner.busy))
        self._set_buttons()

    def _set_buttons(self) -> None:
        open_case = self.current is not None and self.viewer is not None and self._labels_name() in self.viewer.layers
        self.save_button.setEnabled(open_case)
        self.next_button.setEnabled(self.worklist is not None)

    # -- one case --------------------------------------------------------------------------------
    def _image_name(self) -> str:
        return image_layer_name(self.current or "")

    def _labels_name(self) -> str:
        return labels_layer_name(self.current or "")

    def _close_current(self) -> None:
        """Take the open scan's layers away (painted, unsaved ones stay)."""
        if self.current is not None:
            close_scan_layers(self.viewer, self.current)

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
        show_scan_layers(self.viewer, name, image, labels, work.cases[name].model, str(work.scans / name))
        # not marked reviewed here: opening is not looking; Next or Save and next mark it
        self.refresh()
        return True

    def save_and_next(self) -> str | None:
        """Save the open scan's mask as a correction, mark it, open the next untouched scan; the case id."""
        from ...core.finetune.corrections import CorrectionStore
        from ...errors import one_line

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
