"""The ``ramseg`` command: train, predict, evaluate, finetune and demo, one module per command.

Each command module has ``add_parser(sub)`` and ``run(args)``; adding a command is one module and one
line in ``COMMAND_MODULES``. Bad input ends with one line, ``ramseg: error: <file>: <problem>``, and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import __version__
from ..errors import RamsegInputError, one_line
from . import demo, evaluate, export, finetune, predict, refine, serve, train
from ._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, stderr
from .train import train_run_note

COMMAND_MODULES = {"train": train, "predict": predict, "evaluate": evaluate, "finetune": finetune, "demo": demo,
                   "export": export, "serve": serve, "refine": refine}
COMMANDS = {name: module.run for name, module in COMMAND_MODULES.items()}
_train_run_note = train_run_note  # the name tests and older callers use

__all__ = ["COMMANDS", "EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ramseg", description="Domain-generalizable segmentation with RAM-DSIR.")
    parser.add_argument("--version", action="version", version=f"napari-ramseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("RAMSEG_DEBUG"):
        return COMMANDS[args.command](args)  # full tracebacks for developers
    try:
        return COMMANDS[args.command](args)
    except RamsegInputError as exc:
        if exc.path is None and args.command == "predict" and Path(args.input).is_file() and not args.server:
            exc = RamsegInputError(exc.problem, args.input)  # the predictor does not know the file's name
        _error(exc)
    except FileExistsError as exc:
        hint = ", or pass --overwrite to replace it" if args.command == "predict" else ""
        _error(f"{exc}{hint}")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        _error(exc)
    except ValueError as exc:  # bad option values (device not present, impossible sizes) are input too
        _error(exc)
    except KeyboardInterrupt as exc:  # a second SIGINT or SIGTERM (core.training.stopping.StopNow) carries its code
        stderr(f"ramseg: interrupted; {_interrupted_note(args)}")
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)
    except MemoryError:
        _error("out of memory; try a smaller --size or --batch, or fewer/smaller images")
        return EXIT_FAILED
    except OSError as exc:  # disk full, I/O errors: the machine, not the input
        _error(exc)
        return EXIT_FAILED
    except RuntimeError as exc:  # torch reports exhausted CPU/GPU memory as RuntimeError subclasses
        if "out of memory" not in str(exc).lower() and "not enough memory" not in str(exc).lower():
            raise  # a bug: keep the traceback for the report
        _error(f"out of memory ({str(exc).splitlines()[0][:160]}); try a smaller --size or --batch, or --device cpu")
        return EXIT_FAILED
    return EXIT_BAD_INPUT


def _error(problem: object) -> None:
    stderr(f"ramseg: error: {one_line(problem, None, typed=False)}")


def _interrupted_note(args: argparse.Namespace) -> str:
    """What an interruption left behind, for the command that was running."""
    if args.command == "train":
        return train_run_note(args.resume or args.out, args.data)
    if args.command == "predict":
        return "every mask already written is complete; no partial file is left"
    if args.command == "finetune":
        return "a model version is written only when complete; the base model and the saved corrections are unchanged"
    return "nothing was written"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
