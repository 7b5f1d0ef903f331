"""Training in a child process that streams its progress and can be stopped at once.

As in MONAI Label, a training job runs in its own process (``multiprocessing`` spawn context, so no
Qt or CUDA state is inherited): the UI stays responsive, Stop ends the job immediately (terminate, then
kill), and the operating system gives back all its memory, GPU memory included. This is safe because
every write to the run folder is atomic: after a hard stop the folder holds the last complete state
(possibly no model at all), never a half-written file.

Events are plain dicts (picklable, Qt-free), each with a ``"type"``:

- ``started``: ``pid``
- ``log``: ``message``
- ``iteration``: ``iteration``, ``total``, ``losses`` (dict), ``lr``, ``elapsed``, ``validation``
  (None, or ``{"dice", "dice_by_domain", "cases"}`` from source-domain validation)
- ``done``: ``run_dir``, ``iterations_done``, ``stopped``, ``validation``
- ``error``: ``message`` (one line, fit for a notification), ``traceback``

Nothing here imports torch in the parent: the engine is imported only in the child.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import queue as _queue
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["TrainProcess", "one_line_error"]


def one_line_error(exc: BaseException) -> str:
    """An exception as one short line: the message of bad input, else the type and the message."""
    from ..errors import RamsegInputError

    text = " ".join(str(exc).split())
    if not isinstance(exc, (RamsegInputError, FileExistsError, FileNotFoundError, ValueError)) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class _Terminated(BaseException):
    """Raised in the child by SIGTERM (``TrainProcess.stop``), so that an atomic write in progress
    removes its temporary file on the way out instead of dying with it half-written."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def _child_main(request: Any, events: Any, stop_event: Any) -> None:
    """Entry point of the child: run the training job and report everything through ``events``."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    put = events.put
    put({"type": "started", "pid": os.getpid()})
    try:
        from .train_job import run_training

        def on_event(event: Any) -> None:
            put({"type": "iteration", "iteration": event.iteration, "total": event.total,
                 "losses": {k: float(v) for k, v in event.losses.items()}, "lr": float(event.lr),
                 "elapsed": float(event.elapsed), "validation": event.validation})

        result = run_training(request, on_event=on_event, should_stop=stop_event.is_set,
                              log=lambda message: put({"type": "log", "message": str(message)}))
        put({"type": "done", "run_dir": None if result.run_dir is None else str(result.run_dir),
             "iterations_done": result.iterations_done, "stopped": result.stopped, "validation": result.validation})
    except _Terminated:  # the parent stopped us: it already knows, and nothing is left half-written
        pass
    except BaseException as exc:  # everything goes back to the parent as one line
        put({"type": "error", "message": one_line_error(exc), "traceback": traceback.format_exc()})
    finally:
        events.close()
        events.join_thread()


class TrainProcess:
    """One training job (a ``TrainRequest``) in a child process: ``start``, ``poll``, ``stop``."""

    def __init__(self, request: Any, start_method: str = "spawn"):
        self.request = request
        self._ctx = mp.get_context(start_method)
        self._process: Any = None
        self._queue: Any = None
        self._stop_event: Any = None
        self._ended = False
        self.result: dict[str, Any] | None = None  # the "done" event
        self.error: str | None = None  # one line, when the job failed
        self.traceback: str | None = None
        self.stopped = False  # stop() was called
        self.history: list[dict[str, Any]] = []  # every "iteration" event so far
        self.log: list[str] = []

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> "TrainProcess":
        """Launch the child; returns at once."""
        if self._process is not None:
            raise RuntimeError("this training job was already started")
        self._queue = self._ctx.Queue()
        self._stop_event = self._ctx.Event()
        self._process = self._ctx.Process(target=_child_main, args=(self.request, self._queue, self._stop_event),
                                          name="ramseg-train", daemon=True)
        self._process.start()
        return self

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def exitcode(self) -> int | None:
        return None if self._process is None else self._process.exitcode

    @property
    def finished(self) -> bool:
        """The child has ended and every event it sent has been read."""
        return self._ended

    @property
    def run_dir(self) -> Path | None:
        if self.result and self.result.get("run_dir"):
            return Path(self.result["run_dir"])
        out = getattr(self.request, "out", None)
        return None if out is None else Path(out)

    def stop(self, grace: float = 0.0, timeout: float = 3.0) -> None:
        """End the job now: with ``grace`` > 0 first ask it to save a "stopped" model and wait that long,
        then terminate, and kill if it is still there after ``timeout`` seconds."""
        if self._process is None:
            return
        if self._process.is_alive():
            self.stopped = True
            self._stop_event.set()
            if grace > 0:
                self._wait_exit(grace)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout)
        self.poll()

    def _wait_exit(self, seconds: float) -> None:
        """Join while draining the queue: a child blocked on a full pipe would never exit otherwise."""
        deadline = time.monotonic() + seconds
        while self._process.is_alive() and time.monotonic() < deadline:
            self._drain()
            self._process.join(0.05)

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> bool:
        """Poll until the job has ended (True) or ``timeout`` passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ended:
            self.poll()
            if self._ended:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True

    # -- events ----------------------------------------------------------------------------------
    def poll(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call (never blocks)."""
        if self._process is None or self._ended:
            return []
        alive = self._process.is_alive()
        events = self._drain()
        if not alive:
            self._process.join(0)
            events += self._drain()  # what the child flushed just before exiting
            self._ended = True
            if self.result is None and self.error is None and not self.stopped:
                code = self._process.exitcode
                self.error = f"the training process ended unexpectedly (exit code {code})"
                events.append({"type": "error", "message": self.error, "traceback": None})
            self._close()
        return events

    def _drain(self) -> list[dict[str, Any]]:
        events = []
        while self._queue is not None:
            try:
                event = self._queue.get_nowait()
            except _queue.Empty:
                break
            except (EOFError, OSError, ValueError):  # a queue cut off by a hard stop
                break
            self._handle(event)
            events.append(event)
        return events

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "iteration":
            self.history.append(event)
        elif kind == "log":
            self.log.append(event["message"])
        elif kind == "done":
            self.result = event
        elif kind == "error":
            self.error = event["message"]
            self.traceback = event.get("traceback")

    def _close(self) -> None:
        if self._queue is not None:
            self._queue.close()
            self._queue.cancel_join_thread()
            self._queue = None
