"""Training in a child process that streams its progress and stops the way ``ramseg train`` does.

As in MONAI Label, a training job runs in its own process: the UI stays responsive, and the operating
system gives back all its memory, GPU memory included, when it ends. The child is a fresh interpreter,
``python -m napari_ramseg.core.training.process``, not a ``multiprocessing`` child: spawn re-imports the
parent's ``__main__``, and a user's script without an ``if __name__ == "__main__"`` guard would then
open a second viewer in the child and die. Here the child imports only this package.

The request goes to the child's stdin as one pickle (our own parent, our own dataclass); the child
keeps reading stdin and stops gracefully when it closes (the parent went away). Events come back on
stdout as JSON lines; whatever else the child prints goes to its stderr, whose last lines are kept
(``stderr_tail``) to explain a child that died.

Stop is the CLI's mechanism (``core/training/stopping.py``): SIGTERM sets the child's graceful-stop flag, the
loop finishes the step in progress and writes a resume state and the model, atomically, and exits.
If it has not ended ``timeout`` seconds later it is killed; every write being atomic, the folder then
keeps the last complete state. (On Windows there is no SIGTERM: Stop is that kill at once.)

Events are plain dicts (JSON, Qt-free), each with a ``"type"``:

- ``started``: ``pid``
- ``log``: ``message``
- ``iteration``: ``iteration``, ``total``, ``losses`` (dict), ``lr``, ``elapsed``, ``validation``
  (None, or ``{"dice", "dice_by_domain", "cases"}`` from source-domain validation)
- ``done``: ``run_dir``, ``iterations_done``, ``stopped``, ``validation``
- ``error``: ``message`` (one line, fit for a notification), ``traceback``

Nothing here imports torch in the parent: the engine is imported only in the child.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import queue as _queue
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ...errors import one_line

__all__ = ["TrainProcess"]

STDERR_LINES = 20  # kept from the child's stderr, to explain a child that died


# ------------------------------------------------------------------------------------------ child


def _watch_parent(fd: int, stop: Any) -> None:
    # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts interpreter shutdown
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    stop.request()


def _child_main() -> int:
    """The child: read the request from stdin, train, report on the original stdout."""
    from .stopping import GracefulStop, StopNow

    stop = GracefulStop()
    with stop:
        events = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
        os.dup2(2, 1)  # stray prints (libraries, user hooks) go to stderr, never into the event stream

        def put(event: dict[str, Any]) -> None:
            events.write(json.dumps(event, default=str) + "\n")

        request = pickle.load(sys.stdin.buffer)  # the parent writes nothing after it
        # the parent holds our stdin open; end of file means it went away: stop as if told to
        threading.Thread(target=_watch_parent, args=(sys.stdin.fileno(), stop), daemon=True).start()
        put({"type": "started", "pid": os.getpid()})
        try:
            from .job import run_training

            def on_event(event: Any) -> None:
                put({"type": "iteration", "iteration": event.iteration, "total": event.total,
                     "losses": {k: float(v) for k, v in event.losses.items()}, "lr": float(event.lr),
                     "elapsed": float(event.elapsed), "validation": event.validation})

            result = run_training(request, on_event=on_event, should_stop=stop,
                                  log=lambda message: put({"type": "log", "message": str(message)}))
            put({"type": "done", "run_dir": None if result.run_dir is None else str(result.run_dir),
                 "iterations_done": result.iterations_done, "stopped": result.stopped,
                 "validation": result.validation})
        except StopNow:  # a second stop signal: the parent knows; atomic writes cleaned up after themselves
            pass
        except BaseException as exc:  # everything goes back to the parent as one line
            put({"type": "error", "message": one_line(exc), "traceback": traceback.format_exc()})
        finally:
            events.close()
    return stop.exit_code


# ----------------------------------------------------------------------------------------- parent


class TrainProcess:
    """One training job (a ``TrainRequest``) in a child process: ``start``, ``poll``, ``stop``."""

    def __init__(self, request: Any, python: str | None = None):
        self.request = request
        self.python = python or sys.executable
        self._popen: subprocess.Popen | None = None
        self._events: _queue.Queue = _queue.Queue()
        self._readers: list[threading.Thread] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._stray: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._kill_at: float | None = None
        self._exited_at: float | None = None
        self._ended = False
        self.result: dict[str, Any] | None = None  # the "done" event
        self.error: str | None = None  # one line, when the job failed
        self.traceback: str | None = None
        self.stopped = False  # a stop was asked for
        self.killed = False  # ... and the child did not end in time
        self.history: list[dict[str, Any]] = []  # every "iteration" event so far
        self.log: list[str] = []

    def command(self) -> list[str]:
        return [self.python, "-m", "napari_ramseg.core.training.process"]

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> "TrainProcess":
        """Launch the child; returns at once."""
        if self._popen is not None:
            raise RuntimeError("this training job was already started")
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])  # importable even when run from a checkout
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONIOENCODING", "utf-8")
        self._popen = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=env, close_fds=True)
        self._readers = [threading.Thread(target=self._read_events, args=(self._popen.stdout,), daemon=True),
                         threading.Thread(target=self._read_stderr, args=(self._popen.stderr,), daemon=True)]
        for reader in self._readers:
            reader.start()
        try:
            self._popen.stdin.write(pickle.dumps(self.request))
            self._popen.stdin.flush()
        except (BrokenPipeError, OSError):  # the child died at once; poll() reports its stderr
            pass
        return self

    def is_alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def exitcode(self) -> int | None:
        """The child's exit status; negative: the signal that ended it (as ``multiprocessing`` reports)."""
        return None if self._popen is None else self._popen.poll()

    @property
    def finished(self) -> bool:
        """The child has ended and every event it sent has been read."""
        return self._ended

    @property
    def stderr_tail(self) -> list[str]:
        return list(self._stderr)

    @property
    def run_dir(self) -> Path | None:
        if self.result and self.result.get("run_dir"):
            return Path(self.result["run_dir"])
        out = getattr(self.request, "resume", None) or getattr(self.request, "out", None)
        return None if out is None else Path(out)

    def request_stop(self, timeout: float = 30.0) -> None:
        """Ask the child to stop after its current step (SIGTERM, as ``ramseg train`` gets); returns at
        once. :meth:`poll` kills it if it is still there ``timeout`` seconds later."""
        if not self.is_alive():
            return
        self.stopped = True
        if self._kill_at is None:
            self._kill_at = time.monotonic() + timeout
            self._popen.terminate()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop and wait: the child saves its state and ends, or is killed after ``timeout`` seconds."""
        self.request_stop(timeout)
        while self._popen is not None and not self.wait(0.5, interval=0.05):
            pass

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
        if self._popen is None or self._ended:
            return []
        if self._kill_at is not None and time.monotonic() >= self._kill_at and self.is_alive():
            self.killed = True
            self._popen.kill()  # the hard fallback: it did not end in time
        alive = self.is_alive()
        if not alive and self._exited_at is None:
            self._exited_at = time.monotonic()
            self._close_stdin()
        # all events are read once stdout is closed (a grandchild holding it gets 2 s)
        drained = not alive and (not self._readers[0].is_alive() or time.monotonic() - self._exited_at > 2.0)
        if drained:
            for reader in self._readers:
                reader.join(0.5)
        events = self._drain()
        if drained:
            self._ended = True
            if self.result is None and self.error is None and not self.stopped:
                self.error = f"the training process ended unexpectedly (exit code {self._popen.returncode})"
                tail = self.last_error_lines()
                if tail:
                    self.error += f": {tail[-1]}"
                events.append({"type": "error", "message": self.error, "traceback": "\n".join(tail) or None})
                self.traceback = "\n".join(tail) or None
        return events

    def last_error_lines(self, n: int = 5) -> list[str]:
        """The child's last non-empty stderr lines (what a crash printed)."""
        return [line for line in self._stderr if line.strip()][-n:]

    def _drain(self) -> list[dict[str, Any]]:
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except _queue.Empty:
                break
            self._handle(event)
            events.append(event)
        return events

    def _read_events(self, stream: Any) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict) and "type" in event:
                self._events.put(event)
            elif line.strip():  # printed before the child moved stray output to stderr: keep it apart
                self._stray.append(line)
        stream.close()

    def _read_stderr(self, stream: Any) -> None:
        for raw in stream:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

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

    def _close_stdin(self) -> None:
        try:
            if self._popen.stdin is not None:
                self._popen.stdin.close()
        except OSError:
            pass

    def __del__(self) -> None:  # a job nobody stops must not outlive its owner
        try:
            if self.is_alive():
                self._close_stdin()  # the child stops gracefully when its stdin closes
        except Exception:
            pass


if __name__ == "__main__":  # pragma: no cover - the child's entry point
    sys.exit(_child_main())
