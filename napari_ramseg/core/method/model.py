"""The paper's 2D U-Net with a segmentation head and a restoration decoder with per-domain BatchNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..labels import LabelScheme


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class ConvBlock(nn.Sequential):
    """Two 3x3 conv + BatchNorm + ReLU layers."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(*_conv_bn_relu(in_ch, out_ch), *_conv_bn_relu(out_ch, out_ch))


class UpBlock(nn.Module):
    """Bilinear x2, 1x1 conv to halve the channels, concatenate the skip, then a ConvBlock."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.reduce = nn.Conv2d(in_ch, out_ch, 1)
        self.conv = ConvBlock(2 * out_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([self.reduce(x), skip], dim=1))


class DomainBatchNorm2d(nn.Module):
    """One BatchNorm per source domain; the caller says which domain a (sub-)batch comes from."""

    def __init__(self, channels: int, num_domains: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(num_domains))

    def forward(self, x: torch.Tensor, domain: int) -> torch.Tensor:
        return self.norms[domain](x)


class RestorationDecoder(nn.Module):
    """DSIR: decodes the 1/16 bottleneck alone (no skips) back to an image in [-1, 1].

    Convolution weights are shared by all domains; every BatchNorm is domain-specific.
    """

    def __init__(self, widths: list[int], num_domains: int, out_channels: int = 3):
        super().__init__()
        # widths run from the bottleneck outwards, e.g. [256, 128, 64, 32, 16]
        self.convs = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], 3, padding=1, bias=False) for i in range(len(widths) - 1)
        )
        self.norms = nn.ModuleList(DomainBatchNorm2d(w, num_domains) for w in widths[1:])
        self.out = nn.Conv2d(widths[-1], out_channels, 1)

    def forward(self, bottleneck: torch.Tensor, domain: int, size: tuple[int, int] | None = None) -> torch.Tensor:
        x = bottleneck
        for conv, norm in zip(self.convs, self.norms):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = F.relu(norm(conv(x), domain), inplace=True)
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return torch.tanh(self.out(x))


def encoder_features(blocks: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """Run the encoder ``blocks`` (2x2 max-pooling between levels); every level's features, finest first."""
    features = []
    for i, block in enumerate(blocks):
        if i > 0:
            x = F.max_pool2d(x, 2)
        x = block(x)
        features.append(x)
    return features


class RamSegNet(nn.Module):
    """Encoder + segmentation decoder (used at inference) and the training-only restoration decoder."""

    def __init__(self, config: ModelConfig, labels: LabelScheme, num_domains: int = 1):
        super().__init__()
        widths = [config.base_width * 2**i for i in range(config.depth)]
        self.config = config
        self.labels = labels
        self.num_domains = num_domains
        self.encoder = nn.ModuleList(
            ConvBlock(config.in_channels if i == 0 else widths[i - 1], widths[i]) for i in range(config.depth)
        )
        self.decoder = nn.ModuleList(UpBlock(widths[i], widths[i - 1]) for i in range(config.depth - 1, 0, -1))
        self.head = nn.Conv2d(widths[0], labels.out_channels, 1)
        self.restoration = RestorationDecoder(widths[::-1], num_domains, config.in_channels)

    @property
    def stride(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (self.config.depth - 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every level, finest first; the last one is the bottleneck."""
        return encoder_features(self.encoder, x)

    def decode_features(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The segmentation decoder's last feature map (the head's input), at the input resolution."""
        x = features[-1]
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            x = block(x, skip)
        return x

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Segmentation logits at the input resolution."""
        return self.head(self.decode_features(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def restore(self, bottleneck: torch.Tensor, domain: int, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The DSIR decoder's image for a sub-batch from one source domain."""
        return self.restoration(bottleneck, domain, size)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Encoder, segmentation decoder (with head) and restoration decoder, for per-part learning rates."""
        return {
            "encoder": list(self.encoder.parameters()),
            "decoder": list(self.decoder.parameters()) + list(self.head.parameters()),
            "restoration": list(self.restoration.parameters()),
        }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
