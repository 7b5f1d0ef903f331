"""The Train and fine-tune docks' settings, generated from their declarations in ``core/config.py``.

Every ``TrainConfig`` / ``FinetuneConfig`` option a dock shows (``Option.dock``) becomes a
:class:`~._params.Param` (:func:`param`): named as the keyword it fills (a ``TrainRequest`` field, a
``FinetuneConfig`` field), labelled, explained and bounded as declared. ``ramseg train`` and ``ramseg
finetune`` generate their flags from the same declarations, so a dock field and its flag cannot drift.
A dock places a few fields in its form by name; the rest fold away under "More options".
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFormLayout, QLineEdit, QToolButton, QVBoxLayout, QWidget

from ...core.config import FinetuneConfig, TrainConfig
from ...core.labels import LabelScheme
from ...core.options import Setting, settings_of
from ._params import Param, ParamForm, param_value


def param(setting: Setting) -> Param:
    """The dock field of a declared option."""
    declared = setting.option
    return Param(setting.name, setting.config, setting.path, setting.label, declared.help, min=declared.min,
                 max=declared.max, step=declared.step, decimals=declared.decimals, special=declared.special,
                 suffix=declared.suffix)


def dock_params(config: type) -> dict[str, Param]:
    """Every option of ``config`` a dock shows, by keyword, in declaration order."""
    return {s.name: param(s) for s in settings_of(config) if s.option.dock}


TRAIN_PARAMS = dock_params(TrainConfig)
FINETUNE_PARAMS = dock_params(FinetuneConfig)
# the Train dock's own form places these; LONG_SIDE sits with the labels
ITERATIONS, SIZE, BATCH, WIDTH, LONG_SIDE = (TRAIN_PARAMS[n] for n in ("iterations", "size", "batch", "base_width",
                                                                         "long_side"))
METHOD = tuple(TRAIN_PARAMS[n] for n in ("ram", "dsir", "consistency"))
PLACED = {"iterations", "size", "batch", "base_width", "long_side", "ram", "dsir", "consistency"}
MORE = tuple(p for name, p in TRAIN_PARAMS.items() if name not in PLACED)
FINETUNE_ITERATIONS = FINETUNE_PARAMS["iterations"]
FINETUNE_MORE = tuple(p for name, p in FINETUNE_PARAMS.items() if name != "iterations")
LABEL_KIND = Param("label_kind", LabelScheme, "kind", "Label kind",
                   "nested: structures inside each other, outermost first (disc,cup), one sigmoid each; "
                   "exclusive: one softmax over background and the labels")


class LabelOptions:
    """Label names, their kind and the field-of-view scale (``--labels``, ``--label-kind``, ``--long-side``)."""

    def __init__(self, dock: Any, form: QFormLayout):
        self.labels_edit = QLineEdit()
        self.labels_edit.setPlaceholderText("from the data; e.g. vessel")
        self.labels_edit.setToolTip("names for mask values 1..K, comma-separated; they name the model's outputs. "
                                    "Empty: dataset.json's names, else label_1..label_K")
        form.addRow("Labels", self.labels_edit)
        self.kind = dock.add_param(form, LABEL_KIND)
        self.long_side = dock.add_param(form, LONG_SIDE)
        self.kind_combo, self.long_side_spin = self.kind.native, self.long_side.native

    def request_kwargs(self) -> dict[str, Any]:
        names = [n.strip() for n in self.labels_edit.text().split(",") if n.strip()]
        return {"labels": names or None, "label_kind": self.kind.value if names else None,
                "long_side": param_value(self.long_side)}


class MoreOptions(QWidget):
    """The rest of a dock's options (the Train dock's ``MORE`` unless given), folded away under one button."""

    def __init__(self, parent: QWidget | None = None, params: tuple[Param, ...] = MORE):
        super().__init__(parent)
        self.toggle = QToolButton()
        self.toggle.setText("More options")
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.RightArrow)
        self.toggle.toggled.connect(self.set_expanded)
        self.form = ParamForm(params)
        self.body = self.form.native
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toggle)
        layout.addWidget(self.body)
        self.set_expanded(False)

    def set_expanded(self, expanded: bool) -> None:
        self.body.setVisible(expanded)
        self.toggle.setArrowType(Qt.DownArrow if expanded else Qt.RightArrow)

    def request_kwargs(self) -> dict[str, Any]:
        return self.form.values()
