"""Issue 28's recipe options, each through the one config and at tiny size: the working scale
(``long_side``), photometric augmentation and RAM partners from a folder of unlabelled images; and the
bundled recipes' leave-one-camera-out jobs (bench/recipes/shipped.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_ramseg.cli import build_parser
from napari_ramseg.core.training.job import TrainRequest, run_training

from helpers import import_bench, make_synthetic_domains


def _tiny(tmp_path: Path, **settings):
    root = make_synthetic_domains(tmp_path / "data", cases=3, size=48)
    return run_training(TrainRequest(data=root, out=tmp_path / "run", iterations=2, size=32, batch=4, base_width=4,
                                     device="cpu", precision="fp32", **settings))


def _model_json(result) -> dict:
    return json.loads((Path(result.run_dir) / "model.json").read_text())


def test_the_cli_offers_every_recipe_option_with_help():
    parser = build_parser()
    args = parser.parse_args(["train", "--data", "d", "--long-side", "768", "--photometric", "0.5",
                              "--partners", "styles", "--partner-share", "0.3"])
    assert (args.long_side, args.photometric, args.partners, args.partner_share) == (768, 0.5, Path("styles"), 0.3)
    train = next(a for a in parser._subparsers._group_actions[0].choices["train"]._actions if "--photometric" in a.option_strings)
    assert "probability" in train.help


def test_photometric_and_scale_reach_the_pool_and_model_json(tmp_path):
    result = _tiny(tmp_path, photometric=0.7, long_side=40)
    config = _model_json(result)["config"]
    assert config["photometric"] == 0.7 and config["preprocess"]["long_side"] == 40


def test_photometric_out_of_bounds_is_refused_as_the_request_is_made(tmp_path):
    with pytest.raises(Exception, match="photometric"):
        TrainRequest(data=tmp_path, photometric=1.5)


def test_partners_lend_their_amplitude_and_are_recorded(tmp_path, monkeypatch):
    styles = tmp_path / "styles"
    styles.mkdir()
    for i, grey in enumerate((50, 120, 200)):  # flat images: any crop or resize of one stays flat
        Image.fromarray(np.full((30, 50, 3), grey, np.uint8)).save(styles / f"camera{i}.png")
    seen = {}
    from napari_ramseg.core.training import job as train_job

    original = train_job.lend_partner_styles

    def spy(trainer, folder, config):
        original(trainer, folder, config)
        seen["styles"], seen["share"] = len(trainer.pool.style), trainer.pool.style_share
        # with share 1 every partner is one of the flat unlabelled images, never a (textured) source image
        partners = trainer.pool.draw_partners(torch.tensor([0, 1, 0, 1]))
        seen["from_styles"] = all(float(p.std()) < 1e-5 for p in partners)

    monkeypatch.setattr(train_job, "lend_partner_styles", spy)
    result = _tiny(tmp_path, partners=styles, partner_share=1.0)
    assert seen == {"styles": 3, "share": 1.0, "from_styles": True}
    assert _model_json(result)["ram_partners"] == {"folder": "styles", "scans": 3, "images": 3, "share": 1.0}


def test_a_missing_partner_folder_is_one_clear_error(tmp_path):
    from napari_ramseg.errors import RamsegInputError

    with pytest.raises(RamsegInputError, match="unlabelled scans was not found"):
        _tiny(tmp_path, partners=tmp_path / "nowhere")


def _shipped():
    return import_bench("recipes.shipped")


def test_each_recipe_check_holds_out_exactly_its_camera(tmp_path):
    shipped = _shipped()
    (tmp_path / "vessels").mkdir()
    (tmp_path / "optic_disc" / "domains").mkdir(parents=True)
    (tmp_path / "optic_disc" / "partners").mkdir()
    cmd = shipped.train_command("vessels", tmp_path / "run", tmp_path, target="STARE")
    assert cmd[cmd.index("--domains") + 1] == "HRF,CHASE_DB1" and "--partners" not in cmd
    cmd = shipped.train_command("optic-disc", tmp_path / "run", tmp_path, target="DRIONS-DB")
    assert cmd[cmd.index("--domains") + 1] == "Drishti-GS,REFUGE-train,REFUGE-val"
    # the check keeps the recipe's RAM partners: it is the shipped recipe with one camera held out
    assert cmd[cmd.index("--partners") + 1] == str(tmp_path / "optic_disc" / "partners")
    jobs = shipped.jobs(["vessels", "optic-disc"])
    assert len(jobs) == 7 and ("vessels", None) in jobs and ("optic-disc", "Drishti-GS") in jobs
    with pytest.raises(SystemExit):
        shipped.train_command("optic-disc", tmp_path / "run", tmp_path, target="REFUGE-val")


def test_ship_refuses_a_run_that_has_not_finished_and_leaves_the_bundled_model_alone(tmp_path, capsys):
    """A paused run (its resume state and model so far) is never shipped: the bundled files stay as they were."""
    shipped = _shipped()
    bundled = shipped.REPO / "napari_ramseg" / "bundled_models" / "vessels" / "model.json"
    before = bundled.read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"metrics": {"iterations_done": 1344, "iterations_planned": 6000}}))
    (run / "model.safetensors").write_bytes(b"not shipped")
    assert shipped.main(["ship", "vessels", "--run", str(run), "--data", str(tmp_path)]) == 2
    assert "1344 of 6000" in capsys.readouterr().err
    assert bundled.read_bytes() == before
    assert shipped.main(["ship", "vessels", "--run", str(tmp_path / "missing"), "--data", str(tmp_path)]) == 2
    for steps in shipped.SHIP_STEPS.values():  # every step is a module of the repository's bench
        assert all((shipped.REPO / (step[0].replace(".", "/") + ".py")).is_file() for step in steps)


def test_snapshots_keep_the_network_at_every_nth_iteration_as_loadable_models(tmp_path):
    from napari_ramseg.core.models.checkpoint import load_model
    from napari_ramseg.core.models.run_folder import RunFolder

    root = make_synthetic_domains(tmp_path / "data", cases=3, size=48)
    result = run_training(TrainRequest(data=root, out=tmp_path / "run", iterations=4, size=32, batch=4, base_width=4,
                                       device="cpu", precision="fp32", snapshot_every=2))
    snapshots = RunFolder(result.run_dir).snapshots()
    assert [s.path.name for s in snapshots] == ["iter_0000002", "iter_0000004"]
    meta = json.loads(snapshots[0].model_json.read_text())
    assert meta["metrics"]["selected_iteration"] == 2 and meta["config"]["snapshot_every"] == 2
    first, last = (load_model(s.path)[0].state_dict() for s in snapshots)
    assert any(not torch.equal(first[k], last[k]) for k in first)  # two states, not one written twice
