"""Multi-process training: torchrun + DistributedDataParallel, gloo on CPU.

The end-to-end tests start 2 processes with torchrun on tiny synthetic data and compare them with one
process at the same global batch. Tolerance: the distributed objective is the same function of the
same global batch (same cases, augmentations, RAM partners and mixing weights; Dice sums, BatchNorm
statistics and per-domain restoration terms combined over ranks), so only float32 summation order
differs (per-rank partial sums, all-reduce, conv kernels at batch 2 vs 4): about 1e-7 relative per
operation. Losses are compared with rtol 1e-4 (measured: equal to the 6 decimals the history keeps).
Weights are compared as a whole, by relative L2 difference <= 1e-3 (measured: up to 1.5e-4 after
3-4 steps), not element by element: Adam's first updates are about lr * sign(g) whatever |g| is, and
the convolutions before BatchNorm are scale-invariant, so many of their gradient components are ~0;
rounding can flip such a component's step, moving that one weight by up to 2 lr (4e-3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn

from napari_ramseg.core.training import distributed
from napari_ramseg.core.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.labels import LabelScheme
from napari_ramseg.core.method.losses import SegmentationLoss
from napari_ramseg.core.method.sampling import SourcePool, shard_slots
from napari_ramseg.core.training.trainer import Trainer
from napari_ramseg.core.training.job import TrainRequest, run_training

from helpers import make_synthetic_domains, square_samples

# The stated tolerance of "the same curve": 1e-3 relative per loss term. fp32 sums in a different order
# at a different per-process batch (oneDNN's channels_last convolutions block by batch), which moves
# small terms such as the consistency KL by a few 1e-4 after a few steps; a real DDP bug (a wrong
# sampler, unsynchronised gradients, a missing domain) moves them by 1e-2 or more at once.
# atol: the history keeps 6 decimals.
LOSS_RTOL, LOSS_ATOL = 1e-3, 2e-6
WEIGHT_RTOL = 1e-3  # relative L2 difference of all weights together


def _relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    keys = sorted(k for k in a if a[k].is_floating_point())
    for k in set(a) - set(keys):  # integer buffers (num_batches_tracked) must agree exactly
        assert torch.equal(a[k], b[k]), k
    diff = torch.cat([(a[k].float() - b[k].float()).flatten() for k in keys])
    return float(diff.norm() / torch.cat([a[k].float().flatten() for k in keys]).norm())
TERMS = ("loss", "seg", "seg_ram", "consistency", "restoration")


# -- the sampler ------------------------------------------------------------------------------------


def test_shards_partition_the_batch_and_spread_every_domain():
    for k in range(1, 5):
        for world in (1, 2, 3, 4):
            for batch in range(world, 17, world):
                pool_domains = np.sort(np.concatenate([np.arange(k)] * (batch // k) + [np.arange(k)[: batch % k]]))
                parts = [shard_slots(pool_domains, r, world) for r in range(world)]
                assert sorted(np.concatenate(parts).tolist()) == list(range(batch))
                for part in parts:
                    assert len(part) == batch // world
                    counts = np.bincount(pool_domains[part], minlength=k)
                    totals = np.bincount(pool_domains, minlength=k)
                    assert np.all(counts >= totals // world) and np.all(counts <= -(-totals // world))
                    if batch // world >= k:
                        assert counts.min() >= 1  # every domain on every rank
    with pytest.raises(ValueError, match="divisible"):
        shard_slots(np.zeros(6, dtype=np.int64), 0, 4)


def test_ranks_draw_slices_of_the_single_process_batch():
    """Same seed: the ranks' slots (partners included) are exactly the one-process batch, step after step."""
    single = SourcePool(square_samples(), ["A", "B", "C"], PreprocessConfig(size=32), seed=5)
    ranks = [SourcePool(square_samples(), ["A", "B", "C"], PreprocessConfig(size=32), seed=5) for _ in range(2)]
    for _ in range(4):
        images, masks, domains = single.draw_batch(6)
        partners = single.draw_partners(domains)
        seen = []
        for rank, pool in enumerate(ranks):
            shard = pool.draw_shard(6, rank, 2)
            assert torch.equal(shard.images, images[shard.slots]) and torch.equal(shard.masks, masks[shard.slots])
            assert torch.equal(shard.partners, partners[shard.slots])
            assert torch.equal(shard.domains, domains[shard.slots])
            assert set(shard.domains.tolist()) == {0, 1, 2}
            assert np.array_equal(shard.global_domains, domains.numpy())
            seen += shard.slots.tolist()
        assert sorted(seen) == list(range(6))


def test_domain_weights_turn_the_rank_mean_into_the_global_sum():
    """Whatever the split, (1 / world) sum_r sum_k w_rk MSE_rk equals the one-process sum_k MSE_k."""
    domains = np.array([0, 0, 0, 1, 2, 2])
    errors = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 7.0])  # each slot's restoration error
    expected = sum(errors[domains == k].mean() for k in range(3))
    for parts in ([[0, 1, 4], [2, 3, 5]], [[0, 3, 5], [1, 2, 4]]):
        total = 0.0
        for part in parts:
            weights = distributed.domain_weights(domains, domains[part], 3, 2)
            for k in range(3):
                mine = [i for i in part if domains[i] == k]
                total += weights[k] * errors[mine].mean() if mine else 0.0
                assert (weights[k] == 0) == (not mine)
        assert total / 2 == pytest.approx(expected)


# -- the global-batch objective, in one process -----------------------------------------------------


@pytest.mark.parametrize("labels", [LabelScheme(("disc", "cup"), "nested"), LabelScheme(("a", "b"), "exclusive")])
def test_global_batch_loss_is_segmentation_loss_in_one_process(labels):
    torch.manual_seed(0)
    logits = torch.randn(4, labels.out_channels, 16, 16, requires_grad=True)
    mask = torch.randint(0, labels.num_classes + 1, (4, 16, 16))
    ours = distributed.GlobalBatchSegmentationLoss(labels)(logits, mask)
    monai = SegmentationLoss(labels)(logits, mask)
    torch.testing.assert_close(ours, monai, rtol=1e-6, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_monai,) = torch.autograd.grad(monai, logits)
    torch.testing.assert_close(g_ours, g_monai, rtol=1e-5, atol=1e-7)


@pytest.fixture
def one_rank_group(tmp_path):
    """A gloo process group of one rank in this process: the distributed code paths without spawning."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield distributed.DistContext(0, 1, 0, torch.device("cpu"), "gloo")
    dist.destroy_process_group()


def test_sync_batchnorm_equals_batchnorm_on_one_rank(one_rank_group):
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(3)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
        plain.running_mean.fill_(0.2)
    synced = distributed.convert_sync_batchnorm(nn.Sequential(_copy_bn(plain)))[0]
    assert type(synced) is distributed.SyncBatchNorm2d
    x = torch.randn(5, 3, 6, 7) * 3 + 1
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), synced(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(ya)
    (ya * weights).sum().backward()
    (yb * weights).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(synced.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(synced, name), getattr(plain, name), rtol=1e-5, atol=1e-6)
    # an empty batch everywhere (a domain absent from the whole batch) leaves the statistics alone
    before = synced.running_mean.clone(), synced.num_batches_tracked.clone()
    assert synced(torch.zeros(0, 3, 4, 4)).shape == (0, 3, 4, 4)
    assert torch.equal(synced.running_mean, before[0]) and torch.equal(synced.num_batches_tracked, before[1])
    assert set(synced.state_dict()) == set(plain.state_dict())


def _copy_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(bn.num_features)
    out.load_state_dict(bn.state_dict())
    return out


@pytest.mark.parametrize("sync", [False, True])
def test_one_rank_ddp_reproduces_the_single_process_trainer(one_rank_group, sync):
    """DDP wrapper, sharded draw, global Dice, domain weights and (optionally) SyncBatchNorm2d change nothing."""
    cfg = TrainConfig(model=ModelConfig(base_width=4), preprocess=PreprocessConfig(size=32), batch=4,
                      iterations=3, device="cpu", precision="fp32", val_every=100, sync_batchnorm=sync,
                      grad_accumulation=2)
    single = Trainer(cfg, ["A", "B", "C"], square_samples())
    ranked = Trainer(cfg, ["A", "B", "C"], square_samples(), dist_context=one_rank_group)
    assert isinstance(ranked.module, nn.parallel.DistributedDataParallel)
    assert ranked.extra_metadata["world_size"] == 1 and single.extra_metadata["world_size"] == 1
    for _ in range(cfg.iterations):
        a, b = single.step(), ranked.step()
        for term in TERMS:
            assert b[term] == pytest.approx(a[term], rel=LOSS_RTOL, abs=1e-6), term
    assert _relative_difference(single.net.state_dict(), ranked.net.state_dict()) < WEIGHT_RTOL


def test_fp16_steps_with_a_grad_scaler_and_resumes_it(tmp_path):
    """The CUDA-without-bf16 path, run on CPU: scaled backward, scaler step, scaler state in resume."""
    cfg = TrainConfig(model=ModelConfig(base_width=4), preprocess=PreprocessConfig(size=16), batch=2,
                      iterations=2, device="cpu", val_every=100)
    trainer = Trainer(cfg, ["A", "B"], square_samples(("A", "B"), n=2, size=24), run_dir=tmp_path)
    trainer.dtype, trainer.scaler = torch.float16, torch.amp.GradScaler("cpu", init_scale=1024.0)
    losses = trainer.step()
    assert np.isfinite(losses["loss"])
    trainer.save_resume_state()
    state = json.loads((tmp_path / "resume.json").read_text())
    assert state["grad_scaler"]["scale"] == trainer.scaler.get_scale()
    again = Trainer(cfg, ["A", "B"], square_samples(("A", "B"), n=2, size=24), run_dir=tmp_path)
    again.dtype, again.scaler = torch.float16, torch.amp.GradScaler("cpu")
    again.load_resume_state()
    assert again.scaler.get_scale() == trainer.scaler.get_scale()


def test_plain_training_has_no_process_group(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    with distributed.initialize("cpu") as context:
        assert context is None and not dist.is_initialized()


# -- two processes under torchrun --------------------------------------------------------------------


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in distributed.ENV_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "napari_ramseg", "train", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _history(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())["history"]


def _assert_same_curve(ours: list[dict], reference: list[dict]) -> None:
    assert [r["iteration"] for r in ours] == [r["iteration"] for r in reference]
    for a, b in zip(reference, ours):
        for term in TERMS:
            assert b[term] == pytest.approx(a[term], rel=LOSS_RTOL, abs=LOSS_ATOL), (a["iteration"], term)
        if "val_dice" in a:
            assert b["val_dice"] == pytest.approx(a["val_dice"], abs=1e-6)


def _assert_close_weights(run: Path, reference: Path) -> None:
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert _relative_difference(a, b) < WEIGHT_RTOL


def _assert_identical_replicas(run: Path, buffers: bool) -> dict:
    meta = json.loads((run / "model.json").read_text())
    info = meta["distributed"]
    assert meta["world_size"] == 2 and info["world_size"] == 2 and info["backend"] == "gloo"
    assert len(info["parameters_sha256_by_rank"]) == 2 and info["replicas_identical"]
    assert len(set(info["parameters_sha256_by_rank"])) == 1
    if buffers:  # with SyncBatchNorm the running statistics agree too
        assert len(set(info["buffers_sha256_by_rank"])) == 1
    return meta


def test_two_processes_match_one_process_with_the_same_global_batch(synthetic_data, tmp_path):
    common = dict(data=synthetic_data, iterations=4, size=32, batch=4, base_width=4, labels=["blob"],
                  device="cpu", precision="fp32", val_every=2)
    run_training(TrainRequest(out=tmp_path / "single", **common))
    proc = _torchrun(["--data", str(synthetic_data), "--out", "ddp", "--iterations", "4", "--size", "32",
                      "--batch", "4", "--base-width", "4", "--labels", "blob", "--device", "cpu",
                      "--precision", "fp32", "--val-every", "2", "--sync-batchnorm"], tmp_path)
    ddp = tmp_path / "ddp"
    # both ranks finished (rc 0 for the job) and held the same weights; only rank 0 wrote and spoke
    meta = _assert_identical_replicas(ddp, buffers=True)
    assert meta["distributed"]["per_rank_batch"] == 2 and meta["distributed"]["sync_batchnorm"]
    assert sorted(p.name for p in ddp.iterdir()) == ["metrics.json", "model.json", "model.safetensors", "train.log"]
    assert len((ddp / "train.log").read_text().splitlines()) == 4
    assert proc.stderr.count("finished after 4 iterations") == 1 and proc.stderr.count("training samples") == 1
    _assert_same_curve(_history(ddp), _history(tmp_path / "single"))
    _assert_close_weights(ddp, tmp_path / "single")


def test_two_processes_resume_a_run_and_accumulate_gradients(tmp_path):
    """Three domains at 2 slots per rank (some rank lacks a domain every step: empty per-domain
    SyncBatchNorm calls), gradient accumulation (no_sync), and a resume across world sizes."""
    data = make_synthetic_domains(tmp_path / "data3", domains=("siteA", "siteB", "siteC"), cases=3, size=40)
    common = dict(data=data, iterations=4, size=32, batch=4, base_width=4, labels=["blob"], device="cpu",
                  precision="fp32", val_every=2, grad_accumulation=2)
    run_training(TrainRequest(out=tmp_path / "full", **common))
    stops = iter([False, False, True])
    partial = run_training(TrainRequest(out=tmp_path / "part", **common), should_stop=lambda: next(stops))
    assert partial.stopped and (tmp_path / "part" / "resume.json").exists()
    _torchrun(["--data", str(data), "--resume", "part", "--device", "cpu", "--sync-batchnorm", "--quiet"], tmp_path)
    part = tmp_path / "part"
    meta = _assert_identical_replicas(part, buffers=True)
    assert meta["metrics"]["iterations_done"] == 4 and meta["metrics"]["status"] == "complete"
    assert not (part / "resume.json").exists() and not (part / "resume.safetensors").exists()
    _assert_same_curve(_history(part), _history(tmp_path / "full"))
    _assert_close_weights(part, tmp_path / "full")


@pytest.mark.slow
def test_two_processes_without_sync_batchnorm_one_slot_each(tmp_path):
    """Plain per-rank BatchNorm and a per-rank batch of 1 with 3 domains: runs, and replicas agree."""
    data = make_synthetic_domains(tmp_path / "data3", domains=("siteA", "siteB", "siteC"), cases=3, size=40)
    _torchrun(["--data", str(data), "--out", "ddp", "--iterations", "3", "--size", "32", "--batch", "2",
               "--base-width", "4", "--labels", "blob", "--device", "cpu", "--val-every", "3", "--quiet"], tmp_path)
    meta = _assert_identical_replicas(tmp_path / "ddp", buffers=False)
    assert meta["distributed"]["per_rank_batch"] == 1 and not meta["distributed"]["sync_batchnorm"]
