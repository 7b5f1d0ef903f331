"""Parameter fields built from the config dataclasses with magicgui: one defaults source per dock.

A :class:`Param` names a setting by where its default lives (``Param("size", TrainConfig,
"preprocess.size", "Size (px)")``); :func:`param_widget` reads that field's default and annotation
from ``core/config.py`` and lets ``magicgui.widgets.create_widget`` build the control (a spin box for
``int`` and ``float``, a check box for ``bool``, a combo box for a ``Literal``). A ``ParamForm`` is a
magicgui ``Container`` of such fields whose :meth:`~ParamForm.values` are the keyword arguments they
fill (``TrainRequest(**form.values())``). No dock types a default itself.

``int | None`` fields (``long_side``: None is "off") show None as their minimum, with ``special``
as its text; :meth:`ParamForm.values` gives None back there. Integer fields use a plain ``QSpinBox``:
magicgui's own integer box (superqt's ``QLargeIntSpinBox``) can show neither a special text nor a
suffix, and takes the keyboard focus whenever its value is set, away from the canvas.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from magicgui.widgets import Container, create_widget
from magicgui.widgets.bases import RangedWidget, ValueWidget


@dataclass(frozen=True)
class Param:
    """One setting: the keyword it fills, the config field that owns its default, how it is shown."""

    name: str  # the keyword it fills (a TrainRequest / FinetuneConfig field)
    config: type  # the config dataclass (core/config.py) that owns its default
    path: str  # the field in it, dotted for nested configs ("preprocess.size")
    label: str
    tooltip: str = ""
    min: float | None = None
    max: float | None = None
    step: float | None = None
    decimals: int | None = None
    special: str = ""  # the text shown at the minimum (what it means there: off, auto, ...)
    suffix: str = ""


def config_default(config: type, path: str) -> Any:
    """The default of ``config``'s field ``path`` (dotted through nested config dataclasses)."""
    value: Any = config()
    for part in path.split("."):
        value = getattr(value, part)
    return value


def config_annotation(config: type, path: str) -> Any:
    """The annotation of ``config``'s field ``path`` (resolved, also under ``from __future__ import annotations``)."""
    annotation: Any = config
    for part in path.split("."):
        if not dataclasses.is_dataclass(annotation):
            raise TypeError(f"{config.__name__}.{path}: {part!r} is not inside a config dataclass")
        annotation = typing.get_type_hints(annotation)[part]
    return annotation


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``; ``(annotation, False)`` otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _plain_spin_box() -> Any:
    """A magicgui backend for ``int`` on a ``QSpinBox`` (a special text, a suffix, no focus grabbing)."""
    try:
        from magicgui.backends._qtpy.widgets import QBaseRangedWidget
        from qtpy.QtWidgets import QSpinBox
    except ImportError:  # another magicgui layout: its own integer box, without the special text
        return None

    class QtSpinBox(QBaseRangedWidget):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(QSpinBox, **kwargs)

        def _mgui_set_value(self, value: Any) -> None:
            super()._mgui_set_value(int(value))

        def _pre_set_hook(self, value: Any) -> int:
            return int(value)

    return QtSpinBox


_SPIN_BOX: Any = None


def param_widget(param: Param) -> ValueWidget:
    """The magicgui widget for ``param``, holding its config default."""
    global _SPIN_BOX
    annotation, optional = _without_none(config_annotation(param.config, param.path))
    default = config_default(param.config, param.path)
    if default is None:
        default = param.min if optional and param.min is not None else annotation()
    options = {key: getattr(param, key) for key in ("min", "max", "step") if getattr(param, key) is not None}
    if annotation is int:
        if _SPIN_BOX is None:
            _SPIN_BOX = _plain_spin_box() or False
        if _SPIN_BOX:
            # magicgui drops ``options`` for a backend class, so the range is set on the widget
            widget: ValueWidget = RangedWidget(widget_type=_SPIN_BOX, name=param.name, label=param.label,
                                               **options)
            widget.value = default
        else:
            widget = create_widget(value=default, annotation=int, name=param.name, label=param.label, options=options)
    else:
        widget = create_widget(value=default, annotation=annotation, name=param.name, label=param.label,
                               options=options)
    native = widget.native
    if param.decimals is not None and hasattr(native, "setDecimals"):
        native.setDecimals(param.decimals)
        if param.min is not None:
            widget.min = param.min
        widget.value = default  # again: a spin box rounds to its decimals
    if param.special and hasattr(native, "setSpecialValueText"):
        native.setSpecialValueText(param.special)
    if param.suffix and hasattr(native, "setSuffix"):
        native.setSuffix(param.suffix)
    if param.tooltip:
        widget.tooltip = param.tooltip
    widget.optional_none = optional  # None is shown as the minimum
    return widget


def param_value(widget: ValueWidget) -> Any:
    """The widget's value as its config field takes it (None at the minimum of an ``X | None`` field)."""
    value = widget.value
    if getattr(widget, "optional_none", False) and isinstance(widget, RangedWidget) and value == widget.min:
        return None
    return value


class ParamForm(Container):
    """A form (magicgui ``Container``) of :class:`Param` fields, labels on the left."""

    def __init__(self, params: typing.Sequence[Param], **kwargs: Any):
        super().__init__(widgets=[param_widget(p) for p in params], labels=True, **kwargs)
        self.margins = (0, 0, 0, 0)

    def field(self, name: str) -> ValueWidget:
        return getattr(self, name)

    def values(self) -> dict[str, Any]:
        """Each field's value under its keyword (its ``Param.name``)."""
        return {w.name: param_value(w) for w in self}
