"""The same cases through ``ramseg predict``, the Segment dock and the Worklist give the same masks, the
same measures and the same refusals (issue 27's "one pipeline per case"; issue 29 finding 4): a whole
fundus photograph and a disc-centred crop with the optic disc model, a prostate MRI slice with the optic
disc model (refused by all three, in the same words), and a volume with the vessel model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_ramseg.plugin import layer_meta
from napari_ramseg.cli import main
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.review.report import read_report
from napari_ramseg.core.review.worklist import Worklist
from napari_ramseg.io import read_image, read_mask
from napari_ramseg.models import bundled_models, resolve_model
from napari_ramseg.plugin.widgets import _common
from napari_ramseg.plugin.widgets.segment import SegmentWidget

pytestmark = [pytest.mark.gui,
              pytest.mark.skipif(not {"optic-disc", "vessels"} <= set(bundled_models()),
                                 reason="the bundled optic-disc and vessels models are needed")]
MRI_REFUSAL = "the optic disc model takes a colour fundus image"


@pytest.fixture(scope="module")
def folders(shared_data, tmp_path_factory):
    """One folder per model: the optic disc's photograph, crop and MRI slice; the vessel model's volume."""
    import nibabel as nib

    root = tmp_path_factory.mktemp("cross")
    disc, vessels = root / "disc", root / "vessels"
    disc.mkdir()
    vessels.mkdir()
    shutil.copy(shared_data / "fundus" / "DRIONS-DB" / "images" / "image_001.jpg", disc / "photo.jpg")
    shutil.copy(shared_data / "fundus" / "Drishti-GS" / "images" / "drishtiGS_004.png", disc / "crop.png")
    shutil.copy(shared_data / "prostate_slices" / "BIDMC" / "images" / "test_00_00.png", disc / "mri.png")
    volume = nib.load(shared_data / "prostate_volume" / "Case00.nii.gz")  # 8 slices keep the test short
    part = np.asarray(volume.dataobj)[32:96, 32:96, 28:36].astype(np.float32)
    nib.save(nib.Nifti1Image(part, volume.affine), vessels / "volume.nii.gz")
    return {"optic-disc": disc, "vessels": vessels}


def _by_cli(folder, model, out):
    assert main(["predict", "--model", model, "--input", str(folder), "--output", str(out)]) == 0
    rows = {r["file"]: r for r in read_report(out / "report.csv")}
    masks = {}
    for file, row in rows.items():
        mask = next(iter(out.glob(row["case"] + ".*")), None)
        masks[file] = None if mask is None else read_mask(mask)
    return masks, rows


def _by_worklist(folder, model):
    work = Worklist(folder)
    list(work.iter_segment(Predictor.from_path(resolve_model(model), device="cpu"), model))
    masks = {f: work.load_prediction(f) for f in work.cases}  # a refused scan: an empty mask to draw in
    refusals = {f: c.refused for f, c in work.cases.items()}
    return masks, {r["file"]: r for r in read_report(work.root / "report.csv")}, refusals


def _by_dock(viewer, folder, model, notifications):
    """Each scan as napari's reader opens it, segmented by the dock: (mask or None, measures or the message)."""
    widget = SegmentWidget(viewer)
    widget.set_model(resolve_model(model))
    widget.device_combo.setCurrentText("cpu")
    out = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        image = read_image(path)
        meta = {} if image.spacing is None else {layer_meta.SPACING: list(image.spacing)}
        scale = image.spacing if image.is_volume and image.spacing else None
        layer = viewer.add_image(image.array, name=path.name, rgb=image.is_rgb, metadata=meta,
                                 **({"scale": scale} if scale else {}))
        widget.image_combo.set_layer(layer)
        seen = len(notifications())
        widget.segment()
        name = f"{path.name} segmentation"
        if name in viewer.layers:
            out[path.name] = (np.asarray(viewer.layers[name].data), viewer.layers[name].metadata[layer_meta.MEASURES])
        else:
            out[path.name] = (None, " ".join(notifications()[seen:]))
    return out


def _same_measures(dock: dict, *rows: dict) -> None:
    """Every measure the dock shows has the same value in both reports (as report.csv writes it)."""
    from napari_ramseg.core.review.report import _cell

    shown = {k: v for k, v in dock.items() if k in rows[0] and not isinstance(v, (dict, list))}
    assert shown, "the dock shows no measure of the report"
    for row in rows:
        assert {k: str(_cell(v)) for k, v in shown.items()} == {k: row[k] for k in shown}


def test_the_three_entry_points_give_the_same_masks_measures_and_refusals(folders, tmp_path, make_napari_viewer,
                                                                         notifications, monkeypatch):
    monkeypatch.setenv(_common.SYNC_ENV, "1")
    viewer = make_napari_viewer()
    for model, folder in folders.items():
        cli_masks, cli_rows = _by_cli(folder, model, tmp_path / model)
        work_masks, work_rows, refusals = _by_worklist(folder, model)
        dock = _by_dock(viewer, folder, model, notifications)
        assert set(cli_rows) == set(work_rows) == set(dock) == {p.name for p in folder.iterdir() if p.is_file()}
        for file in cli_rows:
            cli_row, work_row = cli_rows[file], work_rows[file]
            dock_mask, dock_measures = dock[file]
            if file == "mri.png":  # refused by all three, for the same reason, with no mask drawn
                assert cli_masks[file] is None and dock_mask is None
                assert MRI_REFUSAL in cli_row["fit_note"] and MRI_REFUSAL in refusals[file]
                assert MRI_REFUSAL in dock_measures  # the dock's notification
                assert not work_masks[file].any()  # the worklist's empty mask to draw in
                assert cli_row["vcdr"] == work_row["vcdr"] == ""
                continue
            assert refusals[file] == "" and dock_mask is not None, dock_measures
            np.testing.assert_array_equal(cli_masks[file], work_masks[file])
            np.testing.assert_array_equal(cli_masks[file], dock_mask)
            assert (dock_mask >= 1).any()
            _same_measures(dock_measures, cli_row, work_row)
        if model == "optic-disc":
            assert 0 < float(cli_rows["photo.jpg"]["vcdr"]) < 1 and 0 < float(cli_rows["crop.png"]["vcdr"]) < 1
        else:
            assert cli_masks["volume.nii.gz"].ndim == 3 and "vessel_ml" in cli_rows["volume.nii.gz"]
