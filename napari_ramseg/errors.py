"""The one exception type for bad user input, and the one way to say any exception in a single line."""

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


class TrainingDiverged(RamsegInputError, FloatingPointError):
    """A training loss became NaN or infinite: said in one line, with what to change (the learning
    rate, the data), instead of a traceback. Still a FloatingPointError for code that catches that."""


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


# Errors the user can act on from the message alone; anything else also gets its type's name, which is
# the first thing a bug report needs (a bare "0" from a KeyError says nothing).
INPUT_ERRORS: tuple[type[BaseException], ...] = (RamsegInputError, ValueError, FileNotFoundError,
                                                 FileExistsError, PermissionError)


def one_line(problem: BaseException | str, limit: int | None = 300, *, typed: bool = True) -> str:
    """An exception (or a message) as one line, whitespace collapsed, cut to ``limit`` characters.

    ``typed``: prefix ``Type:`` unless the exception is one of ``INPUT_ERRORS`` (for lines shown to a
    user: a notification, the CLI, a child process's report). ``typed=False`` gives the bare message,
    for quoting a library's exception inside our own RamsegInputError ("cannot read PNG: <why>").
    An empty message falls back to the type's name. ``limit=None`` never cuts.
    """
    text = " ".join(str(problem).split())
    if isinstance(problem, BaseException) and (not text or (typed and not isinstance(problem, INPUT_ERRORS))):
        text = f"{type(problem).__name__}: {text}" if text else type(problem).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
