"""WZMIAOMIAO pytorch_segmentation ``UNet``: flat Sequential keys, returns ``{"out": logits}``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def double_conv(cin: int, cout: int, mid: int | None = None) -> nn.Sequential:
    mid = mid or cout
    return nn.Sequential(
        nn.Conv2d(cin, mid, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.MaxPool2d(2, stride=2), double_conv(cin, cout))


class Up(nn.Module):
    def __init__(self, cin: int, cout: int, bilinear: bool = True) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = double_conv(cin, cout, cin // 2)
        else:
            self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
            self.conv = double_conv(cin, cout)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy = x2.size(2) - x1.size(2)
        dx = x2.size(3) - x1.size(3)
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2, bilinear: bool = True, base_c: int = 64) -> None:
        super().__init__()
        f = 2 if bilinear else 1
        c = base_c
        self.in_conv = double_conv(in_channels, c)
        self.down1 = down(c, c * 2)
        self.down2 = down(c * 2, c * 4)
        self.down3 = down(c * 4, c * 8)
        self.down4 = down(c * 8, c * 16 // f)
        self.up1 = Up(c * 16, c * 8 // f, bilinear)
        self.up2 = Up(c * 8, c * 4 // f, bilinear)
        self.up3 = Up(c * 4, c * 2 // f, bilinear)
        self.up4 = Up(c * 2, c, bilinear)
        self.out_conv = nn.Sequential(nn.Conv2d(c, num_classes, kernel_size=1))

    def forward(self, x):
        x1 = self.in_conv(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return {"out": self.out_conv(x)}
