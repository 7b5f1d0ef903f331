"""The Train dock's settings: which ``core/config.py`` field owns each one's default, and how it is shown.

Each is a :class:`~._params.Param` named as the ``TrainRequest`` field it fills, so the dock's request is
``TrainRequest(**values)``; magicgui builds the fields (``_params``). ``MAIN`` are shown in the dock's
form, ``MORE`` fold away under "More options".
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFormLayout, QLineEdit, QToolButton, QVBoxLayout, QWidget

from ..core.config import LabelScheme, TrainConfig
from ._params import Param, ParamForm, param_value

T = TrainConfig
ITERATIONS = Param("iterations", T, "iterations", "Iterations", min=1, max=10_000_000)
SIZE = Param("size", T, "preprocess.size", "Size (px)", "training crop / network input side in pixels",
             min=16, max=4096, step=16)
LABEL_KIND = Param("label_kind", LabelScheme, "kind", "Label kind",
                   "nested: structures inside each other, outermost first (disc,cup), one sigmoid each; "
                   "exclusive: one softmax over background and the labels")
LONG_SIDE = Param("long_side", T, "preprocess.long_side", "Long side (px)",
                  "keep each image's aspect and scale its longer side to this many pixels (one field-of-view "
                  "scale for photographs of different resolutions); training takes Size crops, prediction slides "
                  "a window. Off: every image is resized to Size x Size",
                  min=0, max=8192, step=16, special="off: resize to Size x Size")
BATCH = Param("batch", T, "batch", "Batch", min=1, max=1024)
WIDTH = Param("base_width", T, "model.base_width", "Model width", "channels of the first U-Net level (16 in the paper)",
              min=2, max=256)
METHOD = (Param("ram", T, "method.ram", "RAM"), Param("dsir", T, "method.dsir", "DSIR"),
          Param("consistency", T, "method.consistency", "Consistency"))
MORE = (
    Param("lr", T, "lr", "Learning rate", min=1e-6, max=1.0, step=1e-4, decimals=6),
    Param("seed", T, "seed", "Seed", min=0, max=2**31 - 1),
    Param("val_fraction", T, "val_fraction", "Validation share", "of each source domain's cases, held out for "
          "validation", min=0.0, max=0.9, step=0.05, decimals=2),
    Param("val_every", T, "val_every", "Validate every", min=0, max=10_000_000, special="auto (about 10 per run)"),
    Param("window_ratio", T, "method.window_ratio", "RAM window",
          "RAM window ratio L: half-width of the mixed low-frequency window", min=0.01, max=0.5, step=0.01, decimals=3),
    Param("lam_mode", T, "method.lam_mode", "RAM λ"),
    Param("cldice_weight", T, "cldice_weight", "clDice weight",
          "weight of a soft-clDice (skeleton) term beside BCE + Dice; 1 is clDice's own mix. It trades: more "
          "thin-vessel recall for slightly lower Dice on source validation (at 1: thin-vessel recall +0.04-0.05, "
          "Dice -0.01; bench/results/thin_vessels.md)", min=0.0, max=10.0, step=0.1, decimals=2, special="off"),
    Param("grad_accumulation", T, "grad_accumulation", "Accumulation", "micro-batches of Batch per optimizer step",
          min=1, max=1024),
    Param("threads", T, "num_threads", "CPU threads", min=0, max=1024, special="torch's default"),
    Param("resume_every_s", T, "resume_every_s", "Resume state every",
          "also write a resume state this often, so that a crash costs minutes", min=0, max=7 * 24 * 3600, step=60,
          decimals=0, suffix=" s", special="only at validation and Stop"),
)


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
    """The rest of ``ramseg train``'s options (``MORE``), folded away under one button."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.toggle = QToolButton()
        self.toggle.setText("More options")
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.RightArrow)
        self.toggle.toggled.connect(self.set_expanded)
        self.form = ParamForm(MORE)
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
