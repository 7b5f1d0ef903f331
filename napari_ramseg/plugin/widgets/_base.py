"""The base every napari-ramseg dock is built on, and the parameter builders they all use.

micro-sam's shape: the engine (``core``) knows nothing of Qt; each dock is a :class:`DockWidget`
and asks it for its fields instead of building them by hand, so that one kind of field looks and
behaves the same in every dock:

- :meth:`~DockWidget.add_layer_choice`: a layer of one type, kept in sync with the layer list;
  preview layers (``layer_meta.PREVIEW``) are never offered.
- :meth:`~DockWidget.add_model_choice`: a bundled model by name, or a run folder / file.
- :meth:`~DockWidget.add_device_choice`: ``core.device.DEVICE_CHOICES``, absent devices greyed out.
- :meth:`~DockWidget.add_path`: a line edit with a browse button (a folder or a file).
- :meth:`~DockWidget.add_param` / :meth:`~DockWidget.add_params`: settings whose defaults are read
  from ``core/config.py`` and whose fields magicgui makes (``_params``).
- :meth:`~DockWidget.add_job_runner`: a background job with progress, Stop and a status line.
- :func:`note_label`, :func:`status_label` and :meth:`~DockWidget.lay_out` for the rest.

Each builder returns the control and, given a ``QFormLayout``, adds it as a labelled row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import (QFileDialog, QFormLayout, QFrame, QHBoxLayout, QLabel, QLayout, QLineEdit, QPushButton,
                            QScrollArea, QVBoxLayout, QWidget)

from ._common import LayerCombo
from ._jobs import JobRunner
from ._models import DeviceCombo, ModelPicker
from ._params import Param, ParamForm, param_widget


NOTE_COLOUR = "#9aa4b1"  # explanations under a field: quieter than the fields themselves
WARNING_COLOUR = "#ffb347"


def note_label(text: str = "", colour: str = NOTE_COLOUR) -> QLabel:
    """A word-wrapped explanation in a quieter colour."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet(f"color: {colour};")
    return label


def status_label() -> QLabel:
    """A word-wrapped status line whose text can be selected and copied (paths, error lines)."""
    label = QLabel("")
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return label


def path_row(edit: QLineEdit, browse: Callable[[], None], button_text: str = "…",
             extra: Sequence[QWidget] = ()) -> QWidget:
    """``edit`` with a browse button (and ``extra`` widgets) on one row, as one widget."""
    holder = QWidget()
    row = QHBoxLayout(holder)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    button = QPushButton(button_text)
    if button_text == "…":
        button.setMaximumWidth(30)
    button.clicked.connect(browse)
    row.addWidget(button)
    for widget in extra:
        row.addWidget(widget)
    holder.browse_button = button  # type: ignore[attr-defined]
    return holder


class DockWidget(QWidget):
    """A napari-ramseg dock: the viewer, and the builders for the fields every dock shares."""

    def __init__(self, napari_viewer: Any = None, parent: QWidget | None = None):
        from ..napari_io import prefer_our_readers

        super().__init__(parent)
        self.viewer = napari_viewer
        prefer_our_readers()  # a dock is open: File > Open takes our reader for our patterns, never asks

    def lay_out(self, *parts: QWidget | QLayout, stretch: bool = True) -> QVBoxLayout:
        """The dock's parts (widgets or layouts) top to bottom, in a scroll area (``self.scroll_area``):
        a dock stacked under another scrolls instead of clipping. ``stretch`` keeps them at the top."""
        self.content = QWidget()
        layout = QVBoxLayout(self.content)
        for part in parts:
            if isinstance(part, QLayout):
                layout.addLayout(part)
            else:
                layout.addWidget(part)
        if stretch:
            layout.addStretch(1)
        self.scroll_area = DockScrollArea(self.content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll_area)
        return layout

    # -- shared choices --------------------------------------------------------------------------
    def add_image_model_device(self, form: QFormLayout, server: bool = False) -> tuple[LayerCombo, ModelPicker,
                                                                                        DeviceCombo]:
        """The image, model and device rows that open the Segment and restoration docks (``server``: a
        ramseg server among the devices)."""
        return (self.add_layer_choice(form, "image"), self.add_model_choice(form),
                self.add_device_choice(form, server=server))

    def add_layer_choice(self, form: QFormLayout | None, label: str, layer_type: type | None = None) -> LayerCombo:
        """The viewer's layers of ``layer_type`` (default: Image), never preview layers."""
        combo = LayerCombo(self.viewer, layer_type)
        _add_row(form, label, combo)
        return combo

    def add_model_choice(self, form: QFormLayout | None, label: str = "model") -> ModelPicker:
        picker = ModelPicker()
        _add_row(form, label, picker)
        return picker

    def add_device_choice(self, form: QFormLayout | None, label: str = "device", server: bool = False) -> DeviceCombo:
        combo = DeviceCombo(server=server)
        _add_row(form, label, combo)
        return combo

    def add_path(self, form: QFormLayout | None, label: str, title: str, *, text: str = "",
                 placeholder: str = "", tooltip: str = "", folder: bool = True, file_filter: str = "",
                 button_text: str = "…", extra: Sequence[QWidget] = (),
                 chosen: Callable[[str], str | None] | None = None,
                 then: Callable[[], Any] | None = None) -> QLineEdit:
        """A path field with a browse button. ``chosen`` (optional) gets the picked path and may return
        the text to put in the field (e.g. a new run folder inside the chosen one); ``then`` runs
        once the field holds the picked path."""
        edit = QLineEdit(text)
        if placeholder:
            edit.setPlaceholderText(placeholder)
        if tooltip:
            edit.setToolTip(tooltip)

        def browse() -> None:
            start = edit.text().strip() or str(Path.home())
            if folder:
                path = QFileDialog.getExistingDirectory(self, title, start)
            else:
                path, _ = QFileDialog.getOpenFileName(self, title, start, file_filter)
            if not path:
                return
            text = chosen(path) if chosen is not None else None
            edit.setText(path if text is None else text)
            if then is not None:
                then()

        row = path_row(edit, browse, button_text, extra)
        _add_row(form, label, row)
        edit.row = row  # type: ignore[attr-defined]
        return edit

    # -- settings from core/config.py ------------------------------------------------------------
    def add_param(self, form: QFormLayout | None, param: Param) -> Any:
        """One setting (its default from the config); returns the magicgui widget (``.native``: the Qt one)."""
        widget = param_widget(param)
        _add_row(form, param.label, widget.native)
        return widget

    def add_params(self, form: QFormLayout | None, params: Sequence[Param], label: str = "") -> ParamForm:
        """Several settings as one magicgui form (labels inside it)."""
        params_form = ParamForm(params)
        if form is not None:
            if label:
                form.addRow(label, params_form.native)
            else:
                form.addRow(params_form.native)
        return params_form

    # -- jobs --------------------------------------------------------------------------------------
    def add_job_runner(self) -> JobRunner:
        return JobRunner()


class DockScrollArea(QScrollArea):
    """Scrolls a dock's contents vertically; never narrower than they are (no horizontal clipping), and
    as short as napari likes (two docks stacked in a 1000 px window share the height and each scrolls)."""

    def __init__(self, content: QWidget):
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setWidget(content)
        content.installEventFilter(self)

    def eventFilter(self, watched: Any, event: Any) -> bool:
        if watched is self.widget() and event.type() == QEvent.LayoutRequest:
            self._fit_height()
        return super().eventFilter(watched, event)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._fit_height()

    def _fit_height(self) -> None:
        """Word-wrapped notes are taller when narrower: the contents are never squeezed below the height
        they need at the dock's width (the scroll bar takes over instead)."""
        layout = self.widget().layout()
        if layout is not None and layout.hasHeightForWidth():
            self.widget().setMinimumHeight(layout.totalHeightForWidth(self.viewport().width()))

    def _bar(self) -> int:
        return self.verticalScrollBar().sizeHint().width()

    def minimumSizeHint(self) -> QSize:
        """As wide as the contents; as high as they need up to 40 % of the screen (another dock stacked
        on the same side keeps room, and a dock added below another is not squeezed to a sliver)."""
        content = self.widget().minimumSizeHint()
        screen = self.screen() if hasattr(self, "screen") else None
        cap = max(120, int(0.4 * screen.availableGeometry().height())) if screen is not None else 240
        return QSize(content.width() + self._bar(), min(content.height(), cap))

    def sizeHint(self) -> QSize:
        """The contents' height at the dock's width (a word-wrapped note's own hint assumes a narrow
        column and asks for far more): stacked docks then share the height by what they hold."""
        content = self.widget()
        hint = content.sizeHint()
        layout = content.layout()
        height = hint.height()
        if layout is not None and layout.hasHeightForWidth():
            height = layout.totalHeightForWidth(max(self.viewport().width(), content.minimumSizeHint().width()))
        return QSize(hint.width() + self._bar(), height)


def _add_row(form: QFormLayout | None, label: str, widget: QWidget) -> None:
    if form is not None:
        form.addRow(label, widget)
