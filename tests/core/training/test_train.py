"""The training engine on synthetic and real data: losses fall, switches work, runs are reproducible."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.config import MethodConfig, ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.data.dataset import Sample
from napari_ramseg.core.method.sampling import SourcePool
from napari_ramseg.core.training.trainer import TrainCallbacks, Trainer, make_optimizer
from napari_ramseg.core.training.job import TrainRequest, run_training

from helpers import square_samples


def _config(**method):
    return TrainConfig(model=ModelConfig(base_width=4), preprocess=PreprocessConfig(size=32), batch=6,
                       iterations=6, method=MethodConfig(**method), device="cpu", val_every=100)


def test_batches_are_balanced_across_domains():
    pool = SourcePool(square_samples(), ["A", "B", "C"], PreprocessConfig(size=32), seed=0)
    images, masks, domains = pool.draw_batch(7)
    assert images.shape == (7, 3, 32, 32) and masks.shape == (7, 32, 32)
    counts = np.bincount(domains.numpy(), minlength=3)
    assert counts.min() >= 2 and counts.sum() == 7
    partners = pool.draw_partners(domains)
    assert partners.shape == images.shape


def test_partner_comes_from_another_domain():
    samples = square_samples(("A", "B"), n=2)
    samples["B"] = [Sample(np.full_like(s.image, 0.9), s.mask, "B", s.name) for s in samples["B"]]
    pool = SourcePool(samples, ["A", "B"], PreprocessConfig(size=32), scale_aug_p=0.0)
    partners = pool.draw_partners(torch.zeros(16, dtype=torch.long))  # all slots from domain A
    assert torch.allclose(partners, torch.full_like(partners, 0.9))


@pytest.mark.parametrize("method, terms", [
    ({"ram": False, "dsir": False, "consistency": False}, {"seg"}),
    ({"ram": True, "dsir": False, "consistency": False}, {"seg", "seg_ram"}),
    ({"ram": True, "dsir": False, "consistency": True}, {"seg", "seg_ram", "consistency"}),
    ({}, {"seg", "seg_ram", "consistency", "restoration"}),
])
def test_ablation_switches_select_loss_terms(method, terms):
    trainer = Trainer(_config(**method), ["A", "B", "C"], square_samples())
    losses = trainer.step()
    assert set(losses) - {"loss", "lr"} == terms
    assert losses["loss"] == pytest.approx(sum(losses[t] for t in terms), rel=1e-5)


def test_encoder_runs_at_half_rate_with_dsir():
    net = Trainer(_config(), ["A", "B", "C"], square_samples()).net
    groups = {g["name"]: g["lr"] for g in make_optimizer(net, _config()).param_groups}
    assert groups["encoder"] == pytest.approx(groups["decoder"] / 2)
    erm = make_optimizer(net, _config(ram=False, dsir=False, consistency=False)).param_groups
    assert {g["name"] for g in erm} == {"encoder", "decoder"} and erm[0]["lr"] == erm[1]["lr"]


def test_same_seed_same_result_on_cpu():
    a = Trainer(_config(), ["A", "B", "C"], square_samples())
    b = Trainer(_config(), ["A", "B", "C"], square_samples())
    la = [a.step()["loss"] for _ in range(3)]
    lb = [b.step()["loss"] for _ in range(3)]
    assert la == lb
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(va, vb), k


def test_loss_falls_on_synthetic_data():
    cfg = _config().replace(iterations=40, lr=5e-3)
    trainer = Trainer(cfg, ["A", "B", "C"], square_samples())
    losses = [trainer.step()["seg"] for _ in range(cfg.iterations)]
    assert np.mean(losses[-8:]) < 0.92 * np.mean(losses[:8])


def test_stop_then_resume_matches_an_uninterrupted_run(tmp_path):
    cfg = _config().replace(iterations=4, val_every=2)
    full = Trainer(cfg, ["A", "B", "C"], square_samples(), square_samples(n=1)["A"], tmp_path / "full")
    full.run()
    stops = iter([False, False, True])
    part = Trainer(cfg, ["A", "B", "C"], square_samples(), square_samples(n=1)["A"], tmp_path / "part",
                   TrainCallbacks(should_stop=lambda: next(stops)))
    result = part.run()
    assert result.stopped and result.iterations_done == 2
    assert (tmp_path / "part" / "resume.json").exists()
    resumed = Trainer(cfg, ["A", "B", "C"], square_samples(), square_samples(n=1)["A"], tmp_path / "part")
    resumed.load_resume_state()
    assert resumed.run().iterations_done == 4
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "part" / "resume.json").exists()  # a complete run drops its resume state


def _real_loss_falls(root: Path, tmp_path: Path, **kwargs):
    events = []
    result = run_training(TrainRequest(data=root, out=tmp_path / "run", iterations=16, size=64, batch=4,
                                       base_width=8, lr=5e-3, device="cpu", val_every=16, **kwargs),
                          on_event=events.append)
    seg = [e.losses["seg"] for e in events]
    assert np.mean(seg[-4:]) < np.mean(seg[:4])
    model, meta = load_model(result.run_dir)
    return meta


def test_loss_falls_on_real_vessels(shared_data, tmp_path):
    meta = _real_loss_falls(shared_data / "vessels", tmp_path, domains=["HRF", "STARE"], long_side=160,
                            labels=["vessel"])
    assert meta.domains == ["HRF", "STARE"] and meta.config.labels.names == ("vessel",)


def test_loss_falls_on_real_dofe_fundus(shared_data, tmp_path):
    meta = _real_loss_falls(shared_data / "fundus_dofe_layout", tmp_path, format="dofe")
    assert meta.config.labels.names == ("disc", "cup") and len(meta.domains) == 3
