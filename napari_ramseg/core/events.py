"""Long work as generators of progress events whose return value is the result (``Trainer.iter_run``,
``round.iter_finetune``): driving one to its end, and relaying its events as another kind."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

E = TypeVar("E")
F = TypeVar("F")
R = TypeVar("R")


def drive(events: Generator[E, Any, R], on_event: Callable[[E], None] | None = None) -> R:
    """Run ``events`` to its end, handing each event to ``on_event``; its return value."""
    while True:
        try:
            event = next(events)
        except StopIteration as done:
            return done.value
        if on_event is not None:
            on_event(event)


def relay(events: Generator[E, Any, R], convert: Callable[[E], F]) -> Generator[F, None, R]:
    """Yield each event of ``events`` as ``convert`` makes it; return what ``events`` returns
    (use as ``result = yield from relay(...)``)."""
    while True:
        try:
            event = next(events)
        except StopIteration as done:
            return done.value
        yield convert(event)
