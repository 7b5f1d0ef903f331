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


def add_settings(p, settings: list, defaults: dict | None = None) -> None:
    """Argparse options generated from config declarations (``core/options.py``): each setting's flag
    (and older aliases), help with its default, type, choices and metavar; its value lands under its
    keyword. A switch on by default is ``--no-<name>``. ``defaults`` overrides what a flag defaults to
    (None where a request's None means "the config's")."""
    for setting in settings:
        default = (defaults or {}).get(setting.name, setting.default)
        kwargs: dict = {"dest": setting.name, "default": default, "help": setting.help_text().replace("%", "%%")}
        if setting.kind is bool:
            kwargs["action"] = "store_false" if setting.flag.startswith("--no-") else "store_true"
        else:
            kwargs["type"] = _setting_type(setting)
            kwargs["choices"] = setting.choices
            kwargs["metavar"] = setting.option.metavar
        p.add_argument(*setting.flags, **kwargs)


def _setting_type(setting):
    """The text-to-value conversion of a setting: its type; for an ``X | None`` one, its minimum is None."""
    def convert(text: str):
        value = setting.kind(text)
        if setting.optional and setting.option.min is not None and value == setting.option.min:
            return None
        return value

    convert.__name__ = setting.kind.__name__  # argparse names the type in "invalid int value"
    return convert


def settings_from(args: argparse.Namespace, settings: list) -> dict:
    """The values parsed for ``settings``, under their keywords."""
    return {s.name: getattr(args, s.name) for s in settings}


def device_settings() -> list:
    from ..core.config import TrainConfig
    from ..core.options import settings_of

    return [s for s in settings_of(TrainConfig) if s.name in ("device", "precision")]


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision``, declared with ``TrainConfig``'s fields."""
    add_settings(p, device_settings())


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


ADAPT_HELP = ("adapt to each scan before segmenting it (test-time adaptation, core/inference/adapt/), one of {names}: align "
              "(training-free: the scan's low-frequency amplitude towards the model's sources), prompt (a learned "
              "low-frequency prompt per scan), adabn or tent (BatchNorm baselines); --adapt alone runs {default}")


def add_adapt(p: argparse.ArgumentParser) -> None:
    """``--adapt [METHOD]``: off unless given; alone it runs ``AdaptConfig.method``. The names are checked
    against the registry when the command runs (``core.inference.adapt.make_method``), so parsing stays torch-free."""
    from ..core.config import ADAPT, ADAPT_METHODS

    p.add_argument("--adapt", nargs="?", const=ADAPT.method, default=None, metavar="METHOD",
                   help=ADAPT_HELP.format(names=", ".join(ADAPT_METHODS), default=ADAPT.method))


def adapt_predictor(predictor, method: str | None):
    """``predictor`` itself, or wrapped to adapt to every scan with ``method``."""
    if method is None:
        return predictor
    from ..core.inference.adapt import AdaptedPredictor

    return AdaptedPredictor(predictor, method)


def adapt_line(report) -> str:
    """One line on what adapting a scan did: the fit before and after and the cost."""
    def score(fit) -> str:
        return "n/a" if fit is None or fit.score is None else f"{fit.score:.2f}"

    return (f"adapted ({report.method}): fit {score(report.fit_before)} -> {score(report.fit_after)}, "
            f"{report.seconds:.2f} s")
