"""What every ``ramseg`` command shares: exit codes, option helpers, progress bars and messages."""

from __future__ import annotations

import argparse
import shlex
import sys

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_FAILED = 1  # the machine failed (out of memory, disk full), not the input


def csv_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def add_device(p: argparse.ArgumentParser) -> None:
    from ..core.config import TrainConfig
    from ..core.device import DEVICE_CHOICES, PRECISION_CHOICES

    p.add_argument("--device", default=TrainConfig.default("device"), choices=DEVICE_CHOICES,
                   help="auto picks CUDA, then MPS, then CPU")
    p.add_argument("--precision", default=TrainConfig.default("precision"), choices=PRECISION_CHOICES,
                   help="auto: bf16 where it is faster (GPUs, CPUs with native bf16), else fp32")


def progress_bar(total: int, desc: str, quiet: bool = False):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", disable=quiet, dynamic_ncols=True, file=sys.stderr)


def stderr(message: str) -> None:
    print(message, file=sys.stderr)


def quote(path: object) -> str:
    return shlex.quote(str(path))


def typed_command() -> str:
    """The command line as typed, for the provenance in model.json."""
    return " ".join(["ramseg", *sys.argv[1:]])
