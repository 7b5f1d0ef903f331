"""One way to stop a training run: SIGINT and SIGTERM end it after the current step, with its work kept.

Ctrl-C at a terminal, SIGTERM from SLURM before its time limit (or from Kubernetes, or torchrun when a
peer fails) and Stop in the napari Train dock (which sends its child process SIGTERM) all come here.
The first signal only sets a flag; ``Trainer.run`` reads it (as ``should_stop``) between steps,
finishes the step in progress, writes a resume state for that iteration atomically, and returns.
The command then exits 130 (SIGINT) or 143 (SIGTERM), as a shell does for a process those signals
killed. A second signal stops at once with :class:`StopNow`, a KeyboardInterrupt: atomic writes in
progress remove their temporary files on the way out, and the folder keeps the last state written.

Free of Qt and torch: the CLI, the training child and the tests all use it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["GracefulStop", "StopNow", "exit_code", "signal_name"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The status a shell reports for a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopNow(KeyboardInterrupt):
    """A second stop signal: end at once, without finishing the step."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal_name(signum))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


class GracefulStop:
    """Context manager that turns SIGINT and SIGTERM into a stop request; call it as ``should_stop``.

    ``notice`` (optional) is written to stderr on the first signal with ``os.write``, which is safe
    inside a signal handler (a ``print`` there can collide with a progress bar writing the same stream).
    Outside the main thread signal handlers cannot be installed; the object then only serves
    :meth:`request` (what the Train dock's child does when its parent goes away).
    """

    def __init__(self, signals: Sequence[int] = SIGNALS, notice: Callable[[int], str] | None = None):
        self.signals = tuple(signals)
        self.notice = notice
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    # -- the flag --------------------------------------------------------------------------------
    def __call__(self) -> bool:
        return self.signum is not None

    requested = __call__

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a graceful stop without a signal (the first request wins)."""
        if self.signum is None:
            self.signum = signum

    @property
    def exit_code(self) -> int:
        """0 when no stop was asked for, else 130 (SIGINT) or 143 (SIGTERM)."""
        return 0 if self.signum is None else exit_code(self.signum)

    @property
    def name(self) -> str:
        return "" if self.signum is None else signal_name(self.signum)

    # -- the handlers ----------------------------------------------------------------------------
    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise StopNow(signum)
        self.signum = signum
        if self.notice is not None:
            try:
                os.write(2, self.notice(signum).encode("utf-8", "replace"))
            except OSError:
                pass

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
