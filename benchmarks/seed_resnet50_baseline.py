"""A plain eager re-implementation of the seed's ``Unet(backbone="resnet50")`` (bubbliiiing/unet-pytorch).

Written from the facts in shared/reference/SEED_SYSTEMS.md §1, with nothing borrowed from
unetzoo, so the benchmark has an independent baseline: the network as people run it today.
Its module names are the seed checkpoint's (``resnet.*``, ``up_concat{1..4}``, ``up_conv``,
``final``), so a seed ``.pth`` loads with ``load_state_dict`` as it is.

    python benchmarks/seed_resnet50_baseline.py      # prints the parameter count (43,934,101)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SeedUnet"]


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (stride here) -> 1x1 (x4), BN after each, residual."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """The seed's ResNet-50 trunk; note its max-pool: padding 0, ``ceil_mode=True``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)
        cin = 64
        for i, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=1):
            layers = []
            for j in range(blocks):
                layers.append(Bottleneck(cin, width, stride if j == 0 else 1))
                cin = width * Bottleneck.expansion
            setattr(self, f"layer{i}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feat1 = self.relu(self.bn1(self.conv1(x)))
        feat2 = self.layer1(self.maxpool(feat1))
        feat3 = self.layer2(feat2)
        feat4 = self.layer3(feat3)
        feat5 = self.layer4(feat4)
        return [feat1, feat2, feat3, feat4, feat5]


class UnetUp(nn.Module):
    """``cat([skip, bilinear_x2(x)])`` -> conv3 -> ReLU -> conv3 -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([skip, self.up(x)], 1)
        return self.relu(self.conv2(self.relu(self.conv1(out))))


class SeedUnet(nn.Module):
    """``Unet(num_classes, backbone="resnet50")`` of the seed project; input sides multiple of 32."""

    def __init__(self, num_classes: int = 21) -> None:
        super().__init__()
        self.resnet = ResNet50()
        in_filters, out_filters = [192, 512, 1024, 3072], [64, 128, 256, 512]
        self.up_concat4 = UnetUp(in_filters[3], out_filters[3])
        self.up_concat3 = UnetUp(in_filters[2], out_filters[2])
        self.up_concat2 = UnetUp(in_filters[1], out_filters[1])
        self.up_concat1 = UnetUp(in_filters[0], out_filters[0])
        self.up_conv = nn.Sequential(
            nn.UpsamplingBilinear2d(scale_factor=2),
            nn.Conv2d(out_filters[0], out_filters[0], 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(out_filters[0], out_filters[0], 3, padding=1),
            nn.ReLU(),
        )
        self.final = nn.Conv2d(out_filters[0], num_classes, 1)
        self.in_chans = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat1, feat2, feat3, feat4, feat5 = self.resnet(x)
        up4 = self.up_concat4(feat4, feat5)
        up3 = self.up_concat3(feat3, up4)
        up2 = self.up_concat2(feat2, up3)
        up1 = self.up_concat1(feat1, up2)
        return self.final(self.up_conv(up1))


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    net = SeedUnet(21)
    print(f"SeedUnet(resnet50, 21 classes): {sum(p.numel() for p in net.parameters()):,} parameters")
