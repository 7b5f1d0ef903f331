"""Model files: round trip, validation against the architecture, and refusal of pickles."""

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_ramseg.core.models.checkpoint import ModelMetadata, load_model, save_model
from napari_ramseg.core.config import ModelConfig, TrainConfig
from napari_ramseg.core.labels import OPTIC_DISC_CUP
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.method.model import RamSegNet
from napari_ramseg.errors import RamsegInputError


def _saved(tmp_path, domains=("a", "b")):
    cfg = TrainConfig(labels=OPTIC_DISC_CUP, model=ModelConfig(base_width=4))
    net = RamSegNet(cfg.model, cfg.labels, len(domains))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    save_model(net, ModelMetadata(cfg, list(domains), {"validation": {"dice": 0.5}}), tmp_path / "run")
    return net, tmp_path / "run"


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    net, run = _saved(tmp_path)
    loaded, meta = load_model(run)
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert meta.domains == ["a", "b"] and meta.config.labels == OPTIC_DISC_CUP
    data = json.loads((run / "model.json").read_text())
    for key in ("config", "label_scheme", "source_domains", "normalization", "package_version", "metrics"):
        assert key in data
    # a .safetensors path with model.json beside it loads too
    assert load_model(run / "model.safetensors")[1].domains == ["a", "b"]
    x = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    pred = Predictor(loaded, meta, "cpu").predict(x)
    assert pred.labels.shape == (40, 50) and pred.probabilities.shape == (2, 40, 50)


def test_no_temporary_files_left(tmp_path):
    _, run = _saved(tmp_path)
    assert sorted(p.name for p in run.iterdir()) == ["model.json", "model.safetensors"]


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    _, run = _saved(tmp_path)
    state = load_file(str(run / "model.safetensors"))
    state["head.weight"] = torch.zeros(5, 4, 1, 1)
    save_file(state, str(run / "model.safetensors"))
    with pytest.raises(RamsegInputError, match="wrong shape for head.weight"):
        load_model(run)


def test_broken_metadata_is_refused(tmp_path):
    _, run = _saved(tmp_path)
    (run / "model.json").write_text("{not json")
    with pytest.raises(RamsegInputError, match="model.json"):
        load_model(run)
    (run / "model.json").write_text(json.dumps({"architecture": "Other"}))
    with pytest.raises(RamsegInputError, match="unknown architecture"):
        load_model(run)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickle_model_files_are_refused_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for suffix in (".pt", ".pth", ".ckpt"):
        path = tmp_path / f"evil{suffix}"
        path.write_bytes(pickle.dumps(_Boom()))
        with pytest.raises(RamsegInputError, match="pickle"):
            load_model(path)
    # a pickle renamed to .safetensors is just unreadable safetensors
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(_Boom()))
    (tmp_path / "evil.json").write_text((_saved(tmp_path)[1] / "model.json").read_text())
    with pytest.raises(RamsegInputError, match="safetensors"):
        load_model(tmp_path / "evil.safetensors")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
