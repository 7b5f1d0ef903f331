"""``ramseg predict`` on folders as a new user and an attacker met it (issue 29): a file-like --output for a
folder (10), the optic disc settings only with --verbose (12), measures marked unreliable in report.csv
(18), an unreadable file among good ones (28), scan names that spreadsheets would run (31)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from napari_ramseg.cli import main
from napari_ramseg.core.review.report import read_report, write_report


@pytest.fixture()
def folder(tmp_path, synthetic_data):
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in (0, 1):
        shutil.copy(synthetic_data / "siteA" / "images" / f"case{i}.png", scans / f"case{i}.png")
    return scans


def test_a_folder_input_refuses_an_output_that_names_a_file(folder, tiny_model, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert main(["predict", "--model", str(tiny_model), "--input", str(folder), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "names a file" in err and "Give a folder" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # no folder named out.png
    assert main(["predict", "--model", str(tiny_model), "--input", str(folder), "--output", str(tmp_path / "out")]) == 0


def test_the_disc_settings_are_printed_only_with_verbose(shared_data, tmp_path, capsys):
    from napari_ramseg.models import bundled_models

    if "optic-disc" not in bundled_models():
        pytest.skip("optic-disc model not installed")
    photo = shared_data / "fundus" / "DRIONS-DB" / "images" / "image_001.jpg"
    args = ["predict", "--model", "optic-disc", "--input", str(photo), "--output", str(tmp_path / "m.png")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "vCDR" in err and "optic disc settings" not in err and "DiscConfig" not in err
    assert main([*args, "--overwrite", "--verbose"]) == 0
    assert "optic disc settings: the model package's" in capsys.readouterr().err


def test_report_csv_marks_the_measures_of_a_scan_that_does_not_fit(folder, tiny_model, tmp_path):
    source = np.array(Image.open(folder / "case0.png"))
    Image.fromarray(source.mean(axis=-1).astype(np.uint8)).save(folder / "grey.png")  # unlike the sources
    assert main(["predict", "--model", str(tiny_model), "--input", str(folder), "--output", str(tmp_path / "o")]) == 0
    rows = {r["file"]: r for r in read_report(tmp_path / "o" / "report.csv")}
    assert list(rows["grey.png"])[:4] == ["case", "file", "review_priority", "measures_reliable"]
    assert rows["grey.png"]["measures_reliable"] == "False" and rows["grey.png"]["blob_px"] != ""
    assert rows["case0.png"]["measures_reliable"] == rows["case1.png"]["measures_reliable"] == "True"


def test_an_unreadable_file_is_listed_with_its_reason_and_the_folder_goes_on(folder, tiny_model, tmp_path, capsys):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png at all" * 4)
    (folder / "zz.png").write_bytes((folder / "case0.png").read_bytes())  # after the broken one
    out = tmp_path / "o"
    assert main(["predict", "--model", str(tiny_model), "--input", str(folder), "--output", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["case0.png", "case1.png", "zz.png"]
    rows = {r["file"]: r for r in read_report(out / "report.csv")}
    assert set(rows) == {"broken.png", "case0.png", "case1.png", "zz.png"}
    broken = rows["broken.png"]
    assert broken["review_priority"] == "1" and "cannot read this file" in broken["fit_note"]
    assert broken["fits"] == "False" and broken["blob_px"] == ""
    assert "broken.png: cannot read this file" in capsys.readouterr().err
    # the rerun is not stopped by the masks already there: it needs --overwrite for those, as ever
    assert main(["predict", "--model", str(tiny_model), "--input", str(folder), "--output", str(out),
                 "--overwrite"]) == 0


@pytest.mark.parametrize("name", ["=HYPERLINK(\"x\",\"y\")", "+cmd", "-2+3", "@SUM(A1)"])
def test_report_cells_that_a_spreadsheet_would_run_are_neutralised(folder, tiny_model, tmp_path, name):
    shutil.copy(folder / "case0.png", folder / f"{name}.png")
    assert main(["predict", "--model", str(tiny_model), "--input", str(folder), "--output", str(tmp_path / "o")]) == 0
    text = (tmp_path / "o" / "report.csv").read_text()
    rows = {r["file"]: r for r in read_report(tmp_path / "o" / "report.csv")}
    assert rows[f"'{name}.png"]["case"] == f"'{name}"  # a text cell, shown as typed
    assert f",{name}" not in text and f"\n{name}" not in text


def test_negative_numbers_are_numbers_not_text(tmp_path):
    rows = [{"case": "a", "file": "a.png", "mean_uncertainty": 0.2, "shift": -0.5, "note": "-x"}]
    back = read_report(write_report(tmp_path / "r.csv", rows))
    assert back[0]["shift"] == "-0.5" and back[0]["note"] == "'-x"
