"""Cases that arrive together share the device: their network passes run as one batch.

Each segment request runs the whole per-case pipeline on its own thread (reading, the task's steps, fit,
measures: CPU work that overlaps freely). Only the network pass goes through ``BatchedForward``, which
``Catalog`` puts around every loaded ``Predictor`` (``Predictor.route_forward``). A thread that needs a
pass queues its input; whichever thread gets the device next takes every queued input of the same
shape (up to the batch limit), runs them as one forward pass, and hands each thread its own rows back.
Nothing waits for company: a lone request runs at once, and those that arrive while the device is busy
go together once it is free. The network is in eval mode (BatchNorm uses its running statistics; the
fast path folds it away), so a case's rows do not depend on the others in its batch; the tests check
that the masks are identical to unbatched ones.

``DeviceGate`` keeps apart what must not overlap: adapting to a scan changes a copy of the network or
hooks the model's layers, so an adapted case has the device to itself (``exclusive``), while plain cases
share it (``shared``) and batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


class DeviceGate:
    """Many plain cases at once, or one adapted case alone (a readers-writer lock, writers first)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sharing = 0
        self._exclusive = False
        self._waiting_exclusive = 0
        self._owner: int | None = None

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            own = self._owner == threading.get_ident()  # within an adapted case: its own passes
            while not own and (self._exclusive or self._waiting_exclusive):
                self._cond.wait()
            if not own:
                self._sharing += 1
        if own:
            yield
            return
        try:
            yield
        finally:
            with self._cond:
                self._sharing -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting_exclusive += 1
            while self._exclusive or self._sharing:
                self._cond.wait()
            self._waiting_exclusive -= 1
            self._exclusive, self._owner = True, threading.get_ident()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive, self._owner = False, None
                self._cond.notify_all()


@dataclass
class _Pass:
    """One thread's network input, and what came back for it."""

    x: torch.Tensor
    done: threading.Event = field(default_factory=threading.Event)
    output: torch.Tensor | None = None
    error: BaseException | None = None

    @property
    def key(self) -> tuple:
        """What passes batched together share (one model and precision share one ``BatchedForward``)."""
        return tuple(self.x.shape[1:]), self.x.dtype, self.x.device


class BatchedForward:
    """The network pass of one loaded model, batched across the threads that call it together.

    ``limit(height, width)``: the most rows one pass takes at that size (``Predictor.batch_for``, or the
    server's ``--batch``). ``device``: a lock shared by every model on the device, so one pass runs at a
    time. ``passes`` and ``batched_rows`` count what it did (for the tests and the load benchmark)."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], limit: Callable[[int, int], int],
                 device: threading.Lock):
        self.forward, self.limit, self.device = forward, limit, device
        self._queue: list[_Pass] = []
        self._queue_lock = threading.Lock()
        self.passes = 0
        self.batched_rows = 0  # rows that ran in a pass together with another thread's

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mine = _Pass(x)
        with self._queue_lock:
            self._queue.append(mine)
        while not mine.done.is_set():
            with self.device:
                if not mine.done.is_set():
                    self._run(self._take(mine))
        if mine.error is not None:
            raise mine.error
        return mine.output

    def _take(self, mine: _Pass) -> list[_Pass]:
        """``mine`` first, then queued passes of the same shape and kind, up to the limit in rows."""
        rows = max(1, int(self.limit(*mine.x.shape[-2:])))
        with self._queue_lock:
            batch, used = [mine], len(mine.x)
            for other in self._queue:
                if other is not mine and other.key == mine.key and used + len(other.x) <= rows:
                    batch.append(other)
                    used += len(other.x)
            self._queue = [p for p in self._queue if all(p is not b for b in batch)]
        return batch

    def _run(self, batch: list[_Pass]) -> None:
        try:
            if len(batch) == 1:
                outputs = [self.forward(batch[0].x)]
            else:
                together = self.forward(torch.cat([p.x for p in batch]))
                outputs = list(torch.split(together, [len(p.x) for p in batch]))
                self.batched_rows += len(together)
            self.passes += 1
            for item, output in zip(batch, outputs):
                item.output = output
        except BaseException as exc:  # noqa: BLE001  every waiting thread hears of it, not only this one
            for item in batch:
                item.error = exc
        finally:
            for item in batch:
                item.done.set()
