"""``ramseg predict --input DIR --output DIR`` writes report.csv: one row per case, ranked for review."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ramseg.cli import main
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.review.report import read_report


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


def test_representative_report_ranks_the_folder_from_descriptors_kept_beside_it(synthetic_data, tiny_model,
                                                                                 tmp_path):
    from napari_ramseg.core.review.report import read_descriptors
    from napari_ramseg.core.review.priority import descriptor, representative_order
    from napari_ramseg.io import read_image

    scans = tmp_path / "scans"  # a folder of tiny images from two cameras
    scans.mkdir()
    for domain in ("siteA", "siteB"):
        for p in sorted((synthetic_data / domain / "images").glob("*.png")):
            (scans / f"{domain}_{p.name}").write_bytes(p.read_bytes())
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_model), "--input", str(scans), "--output", str(out),
                 "--device", "cpu", "--precision", "fp32", "--review", "representative"]) == 0
    rows = read_report(out / "report.csv")
    assert len(rows) == 8 and [int(r["review_priority"]) for r in rows] == list(range(1, 9))
    assert not any("descriptor" in column for column in rows[0])  # the vectors are no spreadsheet columns
    kept = read_descriptors(out / "descriptors.npz")
    assert sorted(kept) == sorted(r["file"] for r in rows)
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    for name, vector in kept.items():
        np.testing.assert_allclose(vector, descriptor(predictor, read_image(scans / name).array), rtol=1e-5, atol=1e-6)
    # the order is the set-level one over the whole folder, from the kept descriptors and the rows' uncertainty
    uncertainty = {r["file"]: float(r["mean_uncertainty"]) for r in rows}
    assert [r["file"] for r in rows] == representative_order(kept, uncertainty)
    # the default ranking costs no encoder pass and leaves no sidecar
    assert main(["predict", "--model", str(tiny_model), "--input", str(scans), "--output", str(tmp_path / "plain"),
                 "--device", "cpu", "--precision", "fp32"]) == 0
    assert not (tmp_path / "plain" / "descriptors.npz").exists()


def test_a_single_file_writes_no_report(synthetic_data, tiny_model, tmp_path):
    image = synthetic_data / "siteA" / "images" / "case0.png"
    assert main(["predict", "--model", str(tiny_model), "--input", str(image), "--output", str(tmp_path / "m.png"),
                 "--device", "cpu"]) == 0
    assert not (tmp_path / "report.csv").exists()


def test_two_scans_of_one_stem_get_two_rows_and_two_masks(synthetic_data, tiny_model, tmp_path, capsys):
    """a.png and a.tif (and b.png beside b.jpg, whose masks would both be b.png) are four cases."""
    from napari_ramseg.io import read_image, read_mask, write_image

    images = sorted((synthetic_data / "siteA" / "images").glob("*.png"))
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.png").write_bytes(images[0].read_bytes())
    write_image(scans / "a.tif", read_image(images[1]))  # another scan under the same stem
    (scans / "b.png").write_bytes(images[2].read_bytes())
    (scans / "b.jpg").write_bytes(_jpeg(read_image(images[3]).array))
    (scans / "c.png").write_bytes(images[0].read_bytes())  # a stem of its own keeps its plain name
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_model), "--input", str(scans), "--output", str(out),
                 "--device", "cpu", "--precision", "fp32"]) == 0
    rows = read_report(out / "report.csv")
    assert sorted((r["case"], r["file"]) for r in rows) == [
        ("a.png", "a.png"), ("a.tif", "a.tif"), ("b.jpg", "b.jpg"), ("b.png", "b.png"), ("c", "c.png")]
    masks = sorted(p.name for p in out.iterdir() if p.name not in ("report.csv",))
    assert masks == ["a.png.png", "a.tif.tif", "b.jpg.png", "b.png.png", "c.png"]
    predictor = Predictor.from_path(tiny_model, device="cpu", precision="fp32")
    for scan, mask in (("a.png", "a.png.png"), ("a.tif", "a.tif.tif"), ("b.jpg", "b.jpg.png")):
        np.testing.assert_array_equal(read_mask(out / mask), predictor.predict(read_image(scans / scan).array).labels)
    # a rerun names every case the same and, without --overwrite, leaves the masks already there alone
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["predict", "--model", str(tiny_model), "--input", str(scans), "--output", str(out),
                 "--device", "cpu"]) != 0
    assert "already exists" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["predict", "--model", str(tiny_model), "--input", str(scans), "--output", str(out),
                 "--device", "cpu", "--precision", "fp32", "--overwrite"]) == 0
    assert sorted(r["case"] for r in read_report(out / "report.csv")) == ["a.png", "a.tif", "b.jpg", "b.png", "c"]


def test_an_output_folder_that_is_the_input_folder_is_refused(synthetic_data, tiny_model, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    for p in sorted((synthetic_data / "siteA" / "images").glob("*.png"))[:2]:
        (scans / p.name).write_bytes(p.read_bytes())
    before = {p.name: p.read_bytes() for p in scans.iterdir()}
    assert main(["predict", "--model", str(tiny_model), "--input", str(scans), "--output", str(scans),
                 "--device", "cpu", "--overwrite"]) != 0
    assert "input scan" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in scans.iterdir()} == before  # the scans are never replaced


def test_jpeg_scans_get_no_masks_in_their_own_folder(synthetic_data, tiny_model, tmp_path, capsys):
    """a.jpg's mask a.png replaces nothing, but the next run would read it as a scan: refused as well."""
    from napari_ramseg.io import read_image

    scans = tmp_path / "scans"
    scans.mkdir()
    for p in sorted((synthetic_data / "siteA" / "images").glob("*.png"))[:2]:
        (scans / f"{p.stem}.jpg").write_bytes(_jpeg(read_image(p).array))
    before = sorted(p.name for p in scans.iterdir())
    assert main(["predict", "--model", str(tiny_model), "--input", str(scans), "--output", str(scans),
                 "--device", "cpu"]) != 0
    assert "read as scans" in capsys.readouterr().err
    assert sorted(p.name for p in scans.iterdir()) == before


def _jpeg(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
