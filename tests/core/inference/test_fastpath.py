"""The folded inference copy (same logits as the eval-mode network, original model untouched), and
channels_last training (same gradients as NCHW)."""

import copy

import pytest
import torch
from torch import nn

from napari_ramseg.core.config import ModelConfig, TrainConfig
from napari_ramseg.core.labels import OPTIC_DISC_CUP
from napari_ramseg.core.inference.fastpath import (
    CompiledModule,
    FoldedSegNet,
    build_fast_model,
    fold_conv_bn,
    fold_sequential,
    use_channels_last,
)
from napari_ramseg.core.method.losses import SegmentationLoss
from napari_ramseg.core.method.model import RamSegNet


def _randomised_net(seed=0, base_width=4, depth=4):
    """A tiny net whose BatchNorms have non-trivial statistics and affine terms (negative ones too)."""
    torch.manual_seed(seed)
    net = RamSegNet(ModelConfig(base_width=base_width, depth=depth), OPTIC_DISC_CUP, num_domains=2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.2, 2.0)
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


def test_fold_conv_bn_matches_conv_then_bn():
    torch.manual_seed(1)
    conv, bn = nn.Conv2d(5, 7, 3, padding=1, bias=True), nn.BatchNorm2d(7)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.1, 3)
        bn.weight.normal_()
        bn.bias.normal_()
    bn.eval()
    x = torch.randn(2, 5, 11, 13)
    fused = fold_conv_bn(conv, bn)
    torch.testing.assert_close(fused(x), bn(conv(x)), rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in fused.parameters())


def test_fold_sequential_refuses_unknown_layers():
    with pytest.raises(ValueError):
        fold_sequential(nn.Sequential(nn.BatchNorm2d(3)))
    with pytest.raises(ValueError):
        fold_sequential(nn.Sequential(nn.Conv2d(3, 3, 1), nn.Dropout()))


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (3, 3, 48, 64)])
def test_folded_net_equals_eval_network(shape):
    net = _randomised_net()
    before = copy.deepcopy(net.state_dict())
    folded = FoldedSegNet(net)
    x = torch.randn(*shape)
    with torch.inference_mode():
        ref = net(x)
        out = folded(x)
        out_cl = build_fast_model(net, torch.device("cpu"))(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-4)
    # no BatchNorm left, and the original model is untouched (layout, mode and weights)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.encoder[0][0].weight.is_contiguous()
    assert folded.stride == net.stride


def test_folded_net_is_inference_only():
    folded = FoldedSegNet(_randomised_net())
    with pytest.raises(RuntimeError):
        folded.train()
    folded.eval()  # allowed


def test_fast_path_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("RAMSEG_FAST", "0")
    assert build_fast_model(_randomised_net(), torch.device("cpu")) is None


def test_unknown_model_layout_gives_none():
    assert build_fast_model(nn.Conv2d(3, 1, 1), torch.device("cpu")) is None


def test_compiled_module_falls_back_to_eager(monkeypatch):
    module = nn.Conv2d(3, 2, 1)

    def broken(*_args, **_kwargs):
        def call(_x):
            raise RuntimeError("no compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    wrapped = CompiledModule(module)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), module(x))
        assert wrapped.failed and "no compiler" in wrapped.failed
        torch.testing.assert_close(wrapped(x), module(x))  # stays eager, no retry


def test_allocator_tuning_is_once_and_can_be_refused(monkeypatch):
    from napari_ramseg.core.inference import fastpath

    monkeypatch.setattr(fastpath, "_ALLOCATOR_TUNED", None)
    monkeypatch.setenv("RAMSEG_MALLOC_TUNE", "0")
    assert fastpath.tune_cpu_allocator() is False
    assert fastpath.tune_cpu_allocator() is False  # remembered
    monkeypatch.setattr(fastpath, "_ALLOCATOR_TUNED", None)
    monkeypatch.delenv("RAMSEG_MALLOC_TUNE")
    result = fastpath.tune_cpu_allocator()
    import platform
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert result is True


def test_channels_last_training_step_matches_nchw():
    torch.manual_seed(0)
    config = TrainConfig(model=ModelConfig(base_width=4, depth=3))
    a = RamSegNet(config.model, config.labels)
    b = RamSegNet(config.model, config.labels)
    b.load_state_dict(a.state_dict())
    use_channels_last(b)
    assert b.encoder[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    loss = SegmentationLoss(config.labels)
    x, m = torch.randn(2, 3, 32, 32), (torch.rand(2, 32, 32) > 0.7).long()
    grads = []
    for net in (a, b):
        net.train()
        loss(net(x), m).backward()
        grads.append(net.encoder[0][0].weight.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)
    # checkpoint writers make tensors contiguous; the values are unchanged
    for k, v in b.state_dict().items():
        torch.testing.assert_close(v.contiguous(), a.state_dict()[k])
