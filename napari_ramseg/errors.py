"""The one exception type for bad user input, so every edge can report it in a single line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


class RamsegInputError(ValueError):
    """Bad or inconsistent user input (a file, a folder, a model); the message names the culprit."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Give ``path`` to a RamsegInputError raised without one: the engine judges arrays (NaN, odd
    shapes) and cannot know which file they came from; the user needs that file's name."""
    try:
        yield
    except RamsegInputError as exc:
        if exc.path is not None:
            raise
        raise RamsegInputError(exc.problem, path) from None
