"""How a config field is offered to users, declared once beside the field in ``core/config.py``.

A field declared with :func:`option` carries its command-line flag, its help text and its bounds (and
how a dock shows it: label, step, decimals, the meaning of its minimum). ``ramseg train`` and ``ramseg
finetune`` generate their argparse options from these declarations (``cli/_options.py``), ``TrainRequest``
its setting fields (``core/training/job.py``), and the Train and fine-tune docks their magicgui fields
(``plugin/widgets/_train_options.py``); so a new option is one field in the config, and a flag, a request
keyword and a dock field cannot drift apart.

Each option's keyword is its field's name (``num_threads``, ``lam_mode``); a nested field keeps its own
name (``preprocess.size`` is ``size``). Older flags stay accepted as ``aliases``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from ..errors import RamsegInputError

__all__ = ["Option", "Setting", "option", "settings_of", "check_setting", "check_settings", "setting_named"]


@dataclass(frozen=True)
class Option:
    """How one config field is offered: on the command line and in a dock."""

    help: str
    flag: str = ""  # the command-line flag; "" is "--" and the field's name with dashes
    aliases: tuple[str, ...] = ()  # older flags that keep working
    label: str = ""  # the dock's label; "" is the field's name in words
    min: float | None = None  # bounds, checked for every request (the CLI's and the docks')
    max: float | None = None
    step: float | None = None  # a dock's spin box step
    decimals: int | None = None
    # for an ``X | None`` field: the minimum stands for None, and this says what None means ("off")
    special: str = ""
    suffix: str = ""
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None  # else a ``Literal`` annotation's values
    dock: bool = True  # False: no dock field (a dock has its own picker for it, or it only matters in a terminal)


def option(default: Any = dataclasses.MISSING, *, help: str, **declaration: Any) -> Any:
    """A dataclass field with ``default`` whose metadata declares its :class:`Option`."""
    return field(default=default, metadata={"option": Option(help=help, **declaration)})


@dataclass(frozen=True)
class Setting:
    """One declared option of a config class: its keyword, where its field lives, the declaration."""

    name: str  # the keyword it fills (a TrainRequest / FinetuneConfig field)
    path: str  # the field in the config, dotted through nested configs ("preprocess.size")
    config: type  # the top config class (TrainConfig, FinetuneConfig)
    option: Option

    @property
    def flag(self) -> str:
        """The flag; a switch that is on by default is turned off by ``--no-<name>``."""
        if self.option.flag:
            return self.option.flag
        negated = self.kind is bool and self.default is True
        return ("--no-" if negated else "--") + self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.flag, *self.option.aliases)

    @property
    def label(self) -> str:
        return self.option.label or self.name.replace("_", " ").capitalize()

    @property
    def default(self) -> Any:
        value: Any = self.config()
        for part in self.path.split("."):
            value = getattr(value, part)
        return value

    @property
    def annotation(self) -> Any:
        annotation: Any = self.config
        for part in self.path.split("."):
            annotation = typing.get_type_hints(annotation)[part]
        return annotation

    @property
    def kind(self) -> type:
        """The value's type without ``| None`` (``int``, ``float``, ``bool``, ``str``)."""
        args = [a for a in typing.get_args(self.annotation) if a is not type(None)]
        base = args[0] if self.optional else self.annotation
        if typing.get_origin(base) is typing.Literal:
            return type(typing.get_args(base)[0])
        return base

    @property
    def optional(self) -> bool:
        """Whether None is a value of it (shown and given as the minimum)."""
        return type(None) in typing.get_args(self.annotation)

    @property
    def choices(self) -> tuple[Any, ...] | None:
        if self.option.choices is not None:
            return self.option.choices
        if typing.get_origin(self.annotation) is typing.Literal:
            return typing.get_args(self.annotation)
        return None

    def help_text(self) -> str:
        """The help with the default said, as the command line shows it."""
        default = self.default
        if self.kind is bool and self.flag.startswith("--no-"):
            return f"switch off {self.option.help} (on by default)"
        if self.optional and self.option.min is not None:  # the minimum stands for None
            said = f"{self.option.special or 'none'}" if default is None else str(default)
            return f"{self.option.help} ({self.option.min:g}: {self.option.special or 'none'}; default: {said})"
        if default is None:
            said = self.option.special or "none"
        elif isinstance(default, bool):
            said = "on" if default else "off"
        else:
            said = f"{default:g}" if isinstance(default, float) else str(default)
        return f"{self.option.help} (default: {said})"


def settings_of(config: type, prefix: str = "", top: type | None = None) -> list[Setting]:
    """Every declared option of ``config`` in field order, nested configs (``preprocess``) included."""
    out: list[Setting] = []
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        declared = f.metadata.get("option")
        if declared is not None:
            out.append(Setting(f.name, prefix + f.name, top or config, declared))
        elif dataclasses.is_dataclass(hints[f.name]):
            out.extend(settings_of(hints[f.name], f"{prefix}{f.name}.", top or config))
    return out


def setting_named(settings: list[Setting], name: str) -> Setting:
    return next(s for s in settings if s.name == name)


def check_setting(setting: Setting, value: Any) -> None:
    """Refuse a value outside the setting's bounds or choices, in one line naming its flag."""
    if value is None and setting.optional:
        return
    choices = setting.choices
    if choices is not None:
        if value not in choices:
            raise RamsegInputError(f"{setting.flag} must be one of {', '.join(map(str, choices))}, not {value!r}")
        return
    low, high = setting.option.min, setting.option.max
    if setting.kind is bool or (low is None and high is None):
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if setting.kind is int and number and value != int(value):
        number = False
    if not number or (low is not None and value < low):
        raise RamsegInputError(f"{setting.flag} must be a number {f'>= {low:g}' if low is not None else f'<= {high:g}'}"
                               f"{'' if high is None or low is None else f' and <= {high:g}'}, not {value}")
    if high is not None and value > high:
        raise RamsegInputError(f"{setting.flag} must be a number <= {high:g}, not {value}")


def check_settings(config: Any) -> None:
    """Refuse a config instance (``FinetuneConfig(...)``) any of whose declared options is out of bounds."""
    for setting in settings_of(type(config)):
        value: Any = config
        for part in setting.path.split("."):
            value = getattr(value, part)
        check_setting(setting, value)
