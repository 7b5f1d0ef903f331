"""``--resume`` continues the run it names, on the data it started with (issue 29, finding 29): options
that would change what is trained are refused by name, how-to-run options apply, other data is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from napari_ramseg.core.training.job import TrainRequest, run_training
from napari_ramseg.errors import RamsegInputError

BASE = dict(iterations=4, size=32, batch=4, base_width=4, labels=["blob"], device="cpu", val_every=2)


@pytest.fixture(scope="module")
def _stopped(tmp_path_factory, synthetic_data):
    """A run stopped after its first step: it holds a resume state for iteration 1."""
    root = tmp_path_factory.mktemp("stopped")
    data = root / "data"
    shutil.copytree(synthetic_data, data)
    steps = []
    result = run_training(TrainRequest(data=data, out=root / "run", **BASE),
                          on_event=lambda e: steps.append(e.iteration), should_stop=lambda: bool(steps))
    assert result.stopped and (root / "run" / "resume.json").exists()
    return root


@pytest.fixture
def stopped_run(_stopped, tmp_path):
    """A copy of the stopped run and its data (the resume state names its data by content, not by place)."""
    shutil.copytree(_stopped / "data", tmp_path / "data")
    shutil.copytree(_stopped / "run", tmp_path / "run")
    return tmp_path / "data", tmp_path / "run"


def test_the_resume_state_records_the_data_by_content(stopped_run):
    data, run = stopped_run
    state = json.loads((run / "resume.json").read_text())
    model = json.loads((run / "model.json").read_text()) if (run / "model.json").exists() else None
    assert len(state["data"]["sha256"]) == 64 and state["data"]["name"] == "data" and state["data"]["files"] > 0
    assert model is None or model["data"]["sha256"] == state["data"]["sha256"]


@pytest.mark.parametrize("changes, named", [
    ({"size": 64}, "--size 64 (the run has --size 32)"),
    ({"lr": 0.01}, "--lr 0.01 (the run has --lr 0.002)"),
    ({"ram": False}, "--no-ram (the run has --ram)"),
    ({"iterations": 9}, "--iterations 9 (the run has --iterations 4)"),
    ({"domains": ["siteA"]}, "--domains siteA (the run has siteA siteB)"),
])
def test_options_that_change_the_run_are_refused_by_name(stopped_run, changes, named):
    data, run = stopped_run
    before = (run / "resume.json").read_bytes()
    request = TrainRequest(data=data, resume=run, **{**BASE, **changes})
    with pytest.raises(RamsegInputError) as err:
        run_training(request)
    message = str(err.value)
    assert message.startswith(str(run / "resume.json")) and "--resume continues the run as it was started" in message
    assert named in message, message
    assert (run / "resume.json").read_bytes() == before  # nothing advanced


def test_resuming_on_other_data_is_refused_saying_what_changed(stopped_run):
    data, run = stopped_run
    image = data / "siteA" / "images" / "case0.png"
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image)
    with pytest.raises(RamsegInputError, match="the data differ from those the run started with"):
        run_training(TrainRequest(data=data, resume=run, **BASE))


def test_the_same_options_and_data_resume_and_finish(stopped_run):
    data, run = stopped_run
    result = run_training(TrainRequest(data=data, resume=run, **{**BASE, "device": "cpu"}))
    assert not result.stopped and (run / "model.json").exists() and not (run / "resume.json").exists()
