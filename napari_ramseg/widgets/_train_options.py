"""The Train dock's fields for what ``ramseg train`` offers beyond the basics; every default from core/config.py."""

from __future__ import annotations

import typing
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QToolButton,
                            QVBoxLayout, QWidget)

from ..core.config import LabelKind, LabelScheme, MethodConfig, PreprocessConfig, TrainConfig

LABEL_KINDS = typing.get_args(LabelKind)  # ("nested", "exclusive"), as the config defines them
LAMBDA_MODES = typing.get_args(typing.get_type_hints(MethodConfig)["lam_mode"])


def spin(lo: int, hi: int, value: int, step: int = 1, special: str = "", suffix: str = "") -> QSpinBox:
    """A spin box; ``special`` names its lowest value (e.g. 0: off)."""
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    if special:
        box.setSpecialValueText(special)
    if suffix:
        box.setSuffix(suffix)
    return box


def double_spin(lo: float, hi: float, value: float, step: float, decimals: int) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    return box


class LabelOptions:
    """Label names, their kind and the field-of-view scale (``--labels``, ``--label-kind``, ``--long-side``)."""

    def __init__(self, form: QFormLayout):
        prep = PreprocessConfig()
        self.labels_edit = QLineEdit()
        self.labels_edit.setPlaceholderText("from the data; e.g. vessel")
        self.labels_edit.setToolTip("names for mask values 1..K, comma-separated; they name the model's outputs. "
                                    "Empty: dataset.json's names, else label_1..label_K")
        form.addRow("Labels", self.labels_edit)
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(LABEL_KINDS)
        self.kind_combo.setCurrentText(LabelScheme().kind)
        self.kind_combo.setToolTip("nested: structures inside each other, outermost first (disc,cup), one "
                                   "sigmoid each; exclusive: one softmax over background and the labels")
        form.addRow("Label kind", self.kind_combo)
        self.long_side_spin = spin(0, 8192, prep.long_side or 0, step=16, special="off: resize to Size x Size")
        self.long_side_spin.setToolTip(
            "keep each image's aspect and scale its longer side to this many pixels (one field-of-view scale "
            "for photographs of different resolutions); training takes Size crops, prediction slides a window. "
            "Off: every image is resized to Size x Size")
        form.addRow("Long side (px)", self.long_side_spin)

    def request_kwargs(self) -> dict[str, Any]:
        names = [n.strip() for n in self.labels_edit.text().split(",") if n.strip()]
        return {"labels": names or None, "label_kind": self.kind_combo.currentText() if names else None,
                "long_side": self.long_side_spin.value() or None}


class MoreOptions(QWidget):
    """The rest of ``ramseg train``'s options, folded away under one button."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        defaults, method = TrainConfig(), MethodConfig()
        self.toggle = QToolButton()
        self.toggle.setText("More options")
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.RightArrow)
        self.toggle.toggled.connect(self.set_expanded)
        self.body = QWidget()
        form = QFormLayout(self.body)
        form.setContentsMargins(0, 0, 0, 0)
        self.lr_spin = double_spin(1e-6, 1.0, defaults.lr, 1e-4, 6)
        form.addRow("Learning rate", self.lr_spin)
        self.seed_spin = spin(0, 2**31 - 1, defaults.seed)
        form.addRow("Seed", self.seed_spin)
        self.val_fraction_spin = double_spin(0.0, 0.9, defaults.val_fraction, 0.05, 2)
        self.val_fraction_spin.setToolTip("of each source domain's cases, held out for validation")
        form.addRow("Validation share", self.val_fraction_spin)
        self.val_every_spin = spin(0, 10_000_000, defaults.val_every, special="auto (about 10 per run)")
        form.addRow("Validate every", self.val_every_spin)
        self.window_spin = double_spin(0.01, 0.5, method.window_ratio, 0.01, 3)
        self.window_spin.setToolTip("RAM window ratio L: half-width of the mixed low-frequency window")
        form.addRow("RAM window", self.window_spin)
        self.lam_combo = QComboBox()
        self.lam_combo.addItems(LAMBDA_MODES)
        self.lam_combo.setCurrentText(method.lam_mode)
        form.addRow("RAM λ", self.lam_combo)
        self.accumulation_spin = spin(1, 1024, defaults.grad_accumulation)
        self.accumulation_spin.setToolTip("micro-batches of Batch per optimizer step")
        form.addRow("Accumulation", self.accumulation_spin)
        self.threads_spin = spin(0, 1024, defaults.num_threads, special="torch's default")
        form.addRow("CPU threads", self.threads_spin)
        self.resume_every_spin = spin(0, 7 * 24 * 3600, int(defaults.resume_every_s), step=60, suffix=" s",
                                      special="only at validation and Stop")
        self.resume_every_spin.setToolTip("also write a resume state this often, so that a crash costs minutes")
        form.addRow("Resume state every", self.resume_every_spin)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toggle)
        layout.addWidget(self.body)
        self.set_expanded(False)

    def set_expanded(self, expanded: bool) -> None:
        self.body.setVisible(expanded)
        self.toggle.setArrowType(Qt.DownArrow if expanded else Qt.RightArrow)

    def request_kwargs(self) -> dict[str, Any]:
        return {"lr": self.lr_spin.value(), "seed": self.seed_spin.value(),
                "val_fraction": self.val_fraction_spin.value(), "val_every": self.val_every_spin.value(),
                "window_ratio": self.window_spin.value(), "lam_mode": self.lam_combo.currentText(),
                "grad_accumulation": self.accumulation_spin.value(), "threads": self.threads_spin.value(),
                "resume_every_s": float(self.resume_every_spin.value())}
