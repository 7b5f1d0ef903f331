"""The fine-tune dock's "New site's scans": unlabelled scans of the new site reach the round as
target-style RAM partners and are recorded in the new model."""

from __future__ import annotations

import pytest

from helpers import make_synthetic_domains
from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.finetune.corrections import CorrectionStore
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.io import read_image, read_mask
from napari_ramseg.plugin.widgets.finetune import CorrectFinetuneWidget

pytestmark = pytest.mark.gui


def test_the_new_sites_scans_join_the_round(make_napari_viewer, qtbot, tmp_path, tiny_model):
    site = make_synthetic_domains(tmp_path / "site", domains=("siteC",), cases=2, size=40, seed=11) / "siteC"
    unlabelled = make_synthetic_domains(tmp_path / "new", domains=("siteD",), cases=2, size=44, seed=4) / "siteD"
    project = tmp_path / "project"
    store, predictor = CorrectionStore(project), Predictor.from_path(tiny_model, device="cpu")
    for i in range(2):
        image = read_image(site / "images" / f"case{i}.png").array
        store.save(image, predictor.predict(image).labels, read_mask(site / "labels" / f"case{i}.png"),
                   tiny_model, f"case{i}")
    widget = CorrectFinetuneWidget(make_napari_viewer())
    widget.project_edit.setText(str(project))
    widget.model_picker.set_model(tiny_model)
    widget.device_combo.setCurrentText("cpu")
    widget.iterations_spin.setValue(2)
    widget.target_style_edit.setText(str(unlabelled / "images"))
    assert widget.start_finetune() is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    result = widget.last_result
    assert result is not None and result.model_dir is not None, widget.status.text()
    _, meta = load_model(result.model_dir)
    assert meta.extra["finetune"]["target_style"]["images"] == 2
