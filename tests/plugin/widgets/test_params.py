"""Parameter fields from the config dataclasses (magicgui): defaults, types, None as 'off'; one device list."""

from __future__ import annotations

import pytest

from napari_ramseg.core.config import FinetuneConfig, TrainConfig
from napari_ramseg.core.labels import LabelScheme
from napari_ramseg.core.device import DEVICE_CHOICES
from napari_ramseg.plugin.widgets._models import DeviceCombo
from napari_ramseg.plugin.widgets._params import Param, ParamForm, config_annotation, config_default, param_widget
from napari_ramseg.plugin.widgets._train_options import LONG_SIDE, MORE

pytestmark = pytest.mark.gui


def test_defaults_and_annotations_come_from_the_config():
    assert config_default(TrainConfig, "preprocess.size") == TrainConfig().preprocess.size
    assert config_default(FinetuneConfig, "iterations") == FinetuneConfig().iterations
    assert config_annotation(TrainConfig, "method.ram") is bool
    with pytest.raises(TypeError):
        config_annotation(TrainConfig, "batch.size")


def test_fields_are_magicgui_widgets_holding_the_defaults(qtbot):
    kind = param_widget(Param("label_kind", LabelScheme, "kind", "Label kind"))
    assert kind.value == LabelScheme().kind and tuple(kind.choices) == ("nested", "exclusive")
    long_side = param_widget(LONG_SIDE)
    assert long_side.value == 0 and long_side.native.text() == LONG_SIDE.special  # None shown as "off"
    form = ParamForm(MORE)
    values = form.values()
    defaults = TrainConfig()
    assert values["lr"] == defaults.lr and values["lam_mode"] == defaults.method.lam_mode
    assert values["num_threads"] == defaults.num_threads and values["resume_every_s"] == defaults.resume_every_s
    form.field("seed").value = 7
    assert form.values()["seed"] == 7
    off = ParamForm([LONG_SIDE])
    assert off.values() == {"long_side": None}
    off.field("long_side").value = 512
    assert off.values() == {"long_side": 512}


def test_every_dock_lists_the_one_device_list(qtbot):
    combo = DeviceCombo()
    assert tuple(combo.itemText(i) for i in range(combo.count())) == DEVICE_CHOICES
    combo.probe()
    assert combo.model().item(DEVICE_CHOICES.index("cpu")).isEnabled()
