"""The paper's U-Net and the DSIR restoration decoder."""

import torch

from napari_ramseg.core.config import ModelConfig
from napari_ramseg.core.labels import OPTIC_DISC_CUP, PROSTATE, VESSELS
from napari_ramseg.core.method.model import DomainBatchNorm2d, RamSegNet, count_parameters


def test_paper_network_size_and_output_shapes():
    net = RamSegNet(ModelConfig(), OPTIC_DISC_CUP, num_domains=3)
    seg_params = count_parameters(net.encoder) + count_parameters(net.decoder) + count_parameters(net.head)
    assert 1.7e6 < seg_params < 1.9e6  # base width 16, five levels 16..256
    x = torch.randn(2, 3, 64, 48)
    features = net.encode(x)
    assert [f.shape[1] for f in features] == [16, 32, 64, 128, 256]
    assert features[-1].shape[-2:] == (4, 3)  # 1/16 resolution bottleneck
    assert net.decode(features).shape == (2, 2, 64, 48)  # disc and cup sigmoid channels
    restored = net.restore(features[-1], domain=2)
    assert restored.shape == (2, 3, 64, 48)
    assert restored.abs().max() <= 1  # tanh


def test_heads_follow_the_label_scheme():
    x = torch.randn(1, 3, 32, 32)
    assert RamSegNet(ModelConfig(base_width=4), VESSELS)(x).shape[1] == 1
    assert RamSegNet(ModelConfig(base_width=4), PROSTATE)(x).shape[1] == 2  # background + prostate softmax


def test_restoration_batchnorm_is_per_domain_and_convolutions_shared():
    net = RamSegNet(ModelConfig(base_width=4), VESSELS, num_domains=2).train()
    bottleneck = torch.randn(4, 64, 2, 2)
    net.restore(bottleneck, 0)
    norms = [m for m in net.restoration.modules() if isinstance(m, DomainBatchNorm2d)]
    assert len(norms) == 4  # four upsampling blocks
    for norm in norms:
        assert norm.norms[0].num_batches_tracked == 1 and norm.norms[1].num_batches_tracked == 0
    # the same conv weights serve every domain
    assert len(list(net.restoration.convs.parameters())) == 4


def test_restoration_is_not_needed_for_inference():
    net = RamSegNet(ModelConfig(base_width=4), VESSELS, num_domains=2).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
        for p in net.restoration.parameters():
            p.add_(1.0)
        assert torch.equal(before, net(x))
