"""``ramseg predict --input DIR --output DIR`` writes report.csv: one row per case, ranked for review."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ramseg.cli import main
from napari_ramseg.core.infer import Predictor
from napari_ramseg.core.report import read_report


@pytest.mark.parametrize("review", ["uncertainty", "disagreement"])
def test_folder_prediction_writes_a_ranked_report(synthetic_data, tiny_model, tmp_path, review):
    scans = synthetic_data / "siteA" / "images"
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_model), "--input", str(scans), "--output", str(out),
                 "--device", "cpu", "--precision", "fp32", "--review", review]) == 0
    rows = read_report(out / "report.csv")
    files = sorted(p.name for p in scans.iterdir())
    assert sorted(r["file"] for r in rows) == files and len(rows) == 4
    assert [int(r["review_priority"]) for r in rows] == [1, 2, 3, 4]  # written in review order
    column = "mean_uncertainty" if review == "uncertainty" else "disagreement"
    scores = [float(r[column]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    # the same numbers as the engine gives for each case
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    from napari_ramseg.io import read_image

    for row in rows:
        image = read_image(scans / row["file"]).array
        prediction = predictor.predict(image)
        assert int(row["blob_px"]) == int((prediction.labels >= 1).sum())
        assert float(row["mean_uncertainty"]) == pytest.approx(float(np.mean(prediction.entropy)), rel=1e-4)
        assert float(row["fit_score"]) == pytest.approx(predictor.check_fit(image).score, rel=1e-4)
        assert row["fits"] in ("True", "False")


def test_a_single_file_writes_no_report(synthetic_data, tiny_model, tmp_path):
    image = synthetic_data / "siteA" / "images" / "case0.png"
    assert main(["predict", "--model", str(tiny_model), "--input", str(image), "--output", str(tmp_path / "m.png"),
                 "--device", "cpu"]) == 0
    assert not (tmp_path / "report.csv").exists()
