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


ADAPT_HELP = ("adapt to each scan before segmenting it (test-time adaptation, core/adapt/), one of {names}: align "
              "(training-free: the scan's low-frequency amplitude towards the model's sources), prompt (a learned "
              "low-frequency prompt per scan), adabn or tent (BatchNorm baselines); --adapt alone runs {default}")


def add_adapt(p: argparse.ArgumentParser) -> None:
    """``--adapt [METHOD]``: off unless given; alone it runs ``AdaptConfig.method``. The names are checked
    against the registry when the command runs (``core.adapt.make_method``), so parsing stays torch-free."""
    from ..core.config import ADAPT, ADAPT_METHODS

    p.add_argument("--adapt", nargs="?", const=ADAPT.method, default=None, metavar="METHOD",
                   help=ADAPT_HELP.format(names=", ".join(ADAPT_METHODS), default=ADAPT.method))


def adapt_predictor(predictor, method: str | None):
    """``predictor`` itself, or wrapped to adapt to every scan with ``method``."""
    if method is None:
        return predictor
    from ..core.adapt import AdaptedPredictor

    return AdaptedPredictor(predictor, method)


def adapt_line(report) -> str:
    """One line on what adapting a scan did: the fit before and after and the cost."""
    def score(fit) -> str:
        return "n/a" if fit is None or fit.score is None else f"{fit.score:.2f}"

    return (f"adapted ({report.method}): fit {score(report.fit_before)} -> {score(report.fit_after)}, "
            f"{report.seconds:.2f} s")
