"""``ramseg refine`` and a stroke-refined correction: the CLI gives core's refinement, the strokes are
kept with the correction, and fine-tuning learns from it."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import make_synthetic_domains
from napari_ramseg.cli import main
from napari_ramseg.core.config import FinetuneConfig
from napari_ramseg.core.finetune.corrections import CorrectionStore
from napari_ramseg.core.finetune.round import finetune
from napari_ramseg.core.finetune.data import case_samples
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.review.refine import BACKGROUND_STROKE, refine_case
from napari_ramseg.io import read_image, read_mask, write_labels


@pytest.fixture()
def scan(tmp_path):
    site = make_synthetic_domains(tmp_path / "site", domains=("siteC",), cases=4, size=40, seed=7) / "siteC"
    return site


def _strokes(shape) -> np.ndarray:
    strokes = np.zeros(shape, np.uint8)
    strokes[10, 5:20] = 1
    strokes[30, 20:35] = BACKGROUND_STROKE
    return strokes


def test_refine_writes_cores_refinement(tmp_path, scan, tiny_model, capsys):
    image_path = scan / "images" / "case0.png"
    strokes = _strokes(read_mask(scan / "labels" / "case0.png").shape)
    write_labels(tmp_path / "strokes.png", strokes)
    out = tmp_path / "refined.png"
    assert main(["refine", "--model", str(tiny_model), "--input", str(image_path), "--strokes",
                 str(tmp_path / "strokes.png"), "--output", str(out), "--device", "cpu", "--precision", "fp32"]) == 0
    written = read_mask(out)
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    expected, result = refine_case(predictor, read_image(image_path), strokes)
    np.testing.assert_array_equal(written, expected)
    assert (written[10, 5:20] == 1).all() and (written[30, 20:35] == 0).all()
    assert "pixels changed by the strokes" in capsys.readouterr().err

    # --mask: a painted mask is refined, and kept where nothing was drawn near it
    painted = result.prediction.labels.copy()
    painted[0:3, 0:3] = 1
    write_labels(tmp_path / "painted.png", painted)
    again = tmp_path / "again.png"
    assert main(["refine", "--model", str(tiny_model), "--input", str(image_path), "--strokes",
                 str(tmp_path / "strokes.png"), "--mask", str(tmp_path / "painted.png"), "--output", str(again),
                 "--device", "cpu", "--precision", "fp32"]) == 0
    assert (read_mask(again)[0:3, 0:3] == 1).all()


def test_refine_refuses_bad_strokes_and_keeps_an_existing_mask(tmp_path, scan, tiny_model, capsys):
    image_path = scan / "images" / "case0.png"
    bad = np.full(read_mask(scan / "labels" / "case0.png").shape, 3, np.uint8)
    write_labels(tmp_path / "bad.png", bad)
    args = ["refine", "--model", str(tiny_model), "--input", str(image_path), "--device", "cpu"]
    assert main(args + ["--strokes", str(tmp_path / "bad.png"), "--output", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and "value 3" in err and "Traceback" not in err
    (tmp_path / "kept.png").write_bytes(b"a mask")
    write_labels(tmp_path / "s.png", _strokes(bad.shape))
    assert main(args + ["--strokes", str(tmp_path / "s.png"), "--output", str(tmp_path / "kept.png")]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "kept.png").read_bytes() == b"a mask"
    assert main(args + ["--strokes", str(tmp_path / "s.png"), "--output", str(tmp_path / "n.png"), "--reach", "0"]) == 2
    assert "--reach must be a number >= 1" in capsys.readouterr().err and not (tmp_path / "n.png").exists()


def test_a_refined_correction_keeps_its_strokes_and_finetuning_learns_it(tmp_path, scan, tiny_model):
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    store = CorrectionStore(tmp_path / "project")
    refined_ids = []
    for i in range(4):
        image = read_image(scan / "images" / f"case{i}.png")
        strokes = _strokes(image.spatial_shape)
        refined, result = refine_case(predictor, image, strokes)
        refined_ids.append(store.save(image.array, result.prediction.labels, refined, tiny_model, f"case{i}",
                                      strokes=strokes))
    case = store.load(refined_ids[0])
    np.testing.assert_array_equal(case.strokes, _strokes(case.final.shape))
    assert case.provenance["stroked_pixels"] == 30 and case.provenance["files"]["strokes"] == "strokes.tif"
    samples = case_samples(case, predictor.labels)
    np.testing.assert_array_equal(samples[0].mask, case.final)  # fine-tuning's target: the refined mask
    result = finetune(tiny_model, store, tmp_path / "models", FinetuneConfig(iterations=1, device="cpu"))
    assert set(result.train_cases) | set(result.val_cases) == set(refined_ids)
    assert result.model_dir is not None
