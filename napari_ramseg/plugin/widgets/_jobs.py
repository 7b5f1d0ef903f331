"""Background jobs with progress and Stop, and the plain-message notifications they end in.

Background jobs follow stardist-napari: the work is a generator that yields :class:`Progress` and
returns a result, run by napari's ``thread_worker``. With ``RAMSEG_SYNC_WORKERS=1`` (or
``run_sync=True``) the same generator runs in the calling thread, which keeps scripted runs (the
demo's screenshot, some tests) deterministic. Errors never reach napari's traceback dialog: the job
wrapper turns them into one-line ``show_error`` notifications.

Showing a result can itself be slow: napari builds a new layer's visual, controls and overlays on
the UI thread (~50-150 ms each). An ``on_result`` that is a generator function is therefore run one
step per event-loop tick (a step: add or update one layer, then ``yield``), so the viewer stays
responsive between layers; the runner is busy until the last step has run.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ...errors import RamsegInputError, one_line
from ._models import release_accelerator_memory

logger = logging.getLogger(__name__)

SYNC_ENV = "RAMSEG_SYNC_WORKERS"
# Between the steps of showing a result. Not 0: a chain of zero-timers can run back to back before
# Qt delivers other timers and input, which is the stall this avoids (bench/speed/benchmark.py, ui_max_stall_ms).
STEP_DELAY_MS = 5


def sync_workers() -> bool:
    """True when ``RAMSEG_SYNC_WORKERS`` asks for jobs to run in the calling thread."""
    return os.environ.get(SYNC_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def error_message(exc: BaseException) -> str:
    """One plain line for a notification: our own input errors verbatim, others with their type."""
    return one_line(exc)


def notify_error(message: str) -> None:
    """A napari error notification with a plain message (no traceback)."""
    from napari.utils.notifications import show_error

    show_error(message)


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)



# --------------------------------------------------------------------------------------------- jobs


@dataclass
class Progress:
    """What a job reports: ``done`` of ``total`` steps (``total <= 0``: busy, unknown length)."""

    done: int = 0
    total: int = 0
    text: str = ""


@dataclass
class JobFailed:
    message: str


class JobCancelled:
    """Returned by a job that stopped because the user pressed Stop."""


class JobControl:
    """Handed to a running job: ``cancelled()`` to poll, ``report()`` to send progress from callbacks."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self.worker: Any = None

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        # Only the flag: the job wrapper checks it between progress steps and core loops poll it, so
        # every ending (done, cancelled, failed) arrives through the worker's ``returned`` signal.
        self._cancel.set()

    def report(self, done: int, total: int, text: str = "") -> None:
        """Progress from inside a core call (e.g. ``Predictor.predict_volume``'s progress callback)."""
        if self.worker is not None:
            self.worker.yielded.emit(Progress(int(done), int(total), text))


Job = Callable[[JobControl], Generator[Progress, None, Any]]


def _guarded(control: JobControl, job: Job, stops_itself: bool = False) -> Generator[Progress, None, Any]:
    steps = job(control)
    try:
        while True:
            if control.cancelled() and not stops_itself:
                steps.close()
                return JobCancelled()
            try:
                step = next(steps)
            except StopIteration as stop:
                result = stop.value
                break
            yield step
    except InterruptedError:
        return JobCancelled()
    except (RamsegInputError, ValueError, OSError) as exc:
        return JobFailed(error_message(exc))
    except Exception as exc:  # anything else still ends as a notification, with the trace in the log
        logger.exception("napari-ramseg job failed")
        return JobFailed(error_message(exc))
    finally:
        release_accelerator_memory()
    return JobCancelled() if control.cancelled() and not stops_itself else result


class WrappedLabel(QLabel):
    """A word-wrapped label that, empty, still asks for the height its minimum size says: Qt's
    height-for-width of an empty wrapped label is 0, and a form row then squeezes its neighbours."""

    def __init__(self, text: str = ""):
        super().__init__(text)
        self.setWordWrap(True)

    def heightForWidth(self, width: int) -> int:
        return max(super().heightForWidth(width), self.minimumSizeHint().height())


class JobRunner(QWidget):
    """A progress bar, a status line and a Stop button that drive one background job at a time."""

    busy_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Cancel the running job")
        self.status = WrappedLabel("")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.progress, 1)
        row.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.stop_button.clicked.connect(self.cancel)
        self.control: JobControl | None = None
        self.worker: Any = None
        self.last_outcome: str = ""  # "done", "cancelled" or "failed"
        self._steps: Iterator[Any] | None = None  # the result being shown, one step per tick
        self._sync = False

    @property
    def busy(self) -> bool:
        return self.worker is not None or self._steps is not None

    def start(self, job: Job, on_result: Callable[[Any], Any], description: str = "",
              run_sync: bool | None = None, stops_itself: bool = False) -> Any:
        """Run ``job`` (a generator function taking a JobControl); ``on_result`` gets its return value.

        When ``on_result`` returns a generator, each of its steps runs in its own event-loop tick
        (all at once for a synchronous run). ``stops_itself``: Stop only sets the flag the job polls
        (``control.cancelled``); the job ends in its own time and what it returns still goes to
        ``on_result`` (fine-tuning: after the step, saying that nothing was written)."""
        from napari.qt.threading import create_worker

        if self.busy:
            notify_error("a job is already running in this panel; press Stop first")
            return None
        control = JobControl()
        worker = create_worker(_guarded, control, job, stops_itself, _start_thread=False)
        control.worker = worker
        self.control, self.worker = control, worker
        self.last_outcome = ""
        self._sync = sync_workers() if run_sync is None else bool(run_sync)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda result: self._on_returned(result, on_result))
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(lambda: self._on_finished(worker))
        self.stop_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(description or "working…")
        self.busy_changed.emit(True)
        if self._sync:
            worker.run()
        else:
            worker.start()
        return worker

    def cancel(self) -> None:
        if self.control is not None:
            self.control.cancel()
            self.status.setText("stopping…")

    def _on_progress(self, p: Any) -> None:
        if not isinstance(p, Progress):
            return
        if p.total > 0:
            self.progress.setRange(0, p.total)
            self.progress.setValue(min(p.done, p.total))
        else:
            self.progress.setRange(0, 0)
        if p.text:
            self.status.setText(p.text)

    def _on_returned(self, result: Any, on_result: Callable[[Any], Any]) -> None:
        if isinstance(result, JobCancelled):
            self._on_aborted()
            return
        if isinstance(result, JobFailed):
            self.last_outcome = "failed"
            self.status.setText(f"failed: {result.message}")
            notify_error(result.message)
            return
        self.status.setText("done")  # on_result may say more
        try:
            outcome = on_result(result)
        except Exception as exc:  # showing results must not crash napari either
            self._show_failed(exc)
            return
        if not inspect.isgenerator(outcome):
            self.last_outcome = "done"
            return
        self._steps = outcome
        self.stop_button.setEnabled(False)  # the result is computed; only showing it is left
        if self._sync:
            while self._steps is not None:
                self._next_step()
        else:
            self._next_step()

    def _next_step(self) -> None:
        """Run one step of the result being shown, then let the event loop draw before the next."""
        steps = self._steps
        if steps is None:
            return
        try:
            next(steps)
        except StopIteration:
            self._steps = None
            self.last_outcome = "done"
        except Exception as exc:  # noqa: BLE001 - a viewer closed meanwhile, or a layer refused an update
            self._steps = None
            self._show_failed(exc)
        if self._steps is None:
            self._maybe_idle()
        elif not self._sync:
            QTimer.singleShot(STEP_DELAY_MS, self._next_step_safely)

    def _next_step_safely(self) -> None:
        try:
            self._next_step()
        except RuntimeError:  # this widget was deleted (viewer closed) before the tick came
            pass

    def _show_failed(self, exc: BaseException) -> None:
        logger.exception("napari-ramseg: showing the result failed", exc_info=exc)
        self.last_outcome = "failed"
        self.status.setText(f"failed: {error_message(exc)}")
        notify_error(error_message(exc))

    def _on_aborted(self) -> None:
        self.last_outcome = "cancelled"
        self.status.setText("cancelled")
        notify_info("napari-ramseg: cancelled")

    def _on_finished(self, worker: Any) -> None:
        if worker is not self.worker:
            return
        if not self.last_outcome and self._steps is None and self.control is not None and self.control.cancelled():
            self._on_aborted()
        self.worker = None
        self.control = None
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        """Back to idle once the worker has finished and the result is shown."""
        if self.busy:
            return
        self.stop_button.setEnabled(False)
        if self.last_outcome == "done" and self.progress.maximum() > 0:
            self.progress.setValue(self.progress.maximum())  # a counted job stays full at its count
        else:
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if self.last_outcome == "done" else 0)
        self.busy_changed.emit(False)
