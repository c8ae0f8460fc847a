"""qiaofengsheng/pytorch-UNet (first version): keys ``c1..c9.layer.*``, ``d1..d4.layer.*``, ``u1..u4.layer``, ``out``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conv_Block(nn.Module):  # noqa: N801  (the original's names)
    def __init__(self, cin: int, cout: int, p1: float = 0.3, p2: float = 0.4) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 1, 1, padding_mode="reflect", bias=False),
            nn.BatchNorm2d(cout),
            nn.Dropout2d(p1),
            nn.LeakyReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, padding_mode="reflect", bias=False),
            nn.BatchNorm2d(cout),
            nn.Dropout2d(p2),
            nn.LeakyReLU(),
        )

    def forward(self, x):
        return self.layer(x)


class DownSample(nn.Module):
    def __init__(self, channel: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            nn.Conv2d(channel, channel, 3, 2, 1, padding_mode="reflect", bias=False),
            nn.BatchNorm2d(channel),
            nn.LeakyReLU(),
        )

    def forward(self, x):
        return self.layer(x)


class UpSample(nn.Module):
    def __init__(self, channel: int) -> None:
        super().__init__()
        self.layer = nn.Conv2d(channel, channel // 2, 1, 1)

    def forward(self, x, feature_map):
        out = self.layer(F.interpolate(x, scale_factor=2, mode="nearest"))
        return torch.cat((out, feature_map), dim=1)


class UNet(nn.Module):
    def __init__(self, num_classes: int = 3, sigmoid: bool = True) -> None:
        super().__init__()
        self.c1 = Conv_Block(3, 64)
        self.d1 = DownSample(64)
        self.c2 = Conv_Block(64, 128)
        self.d2 = DownSample(128)
        self.c3 = Conv_Block(128, 256)
        self.d3 = DownSample(256)
        self.c4 = Conv_Block(256, 512)
        self.d4 = DownSample(512)
        self.c5 = Conv_Block(512, 1024)
        self.u1 = UpSample(1024)
        self.c6 = Conv_Block(1024, 512)
        self.u2 = UpSample(512)
        self.c7 = Conv_Block(512, 256)
        self.u3 = UpSample(256)
        self.c8 = Conv_Block(256, 128)
        self.u4 = UpSample(128)
        self.c9 = Conv_Block(128, 64)
        self.out = nn.Conv2d(64, num_classes, 3, 1, 1)
        self.th = nn.Sigmoid() if sigmoid else nn.Identity()

    def forward(self, x):
        r1 = self.c1(x)
        r2 = self.c2(self.d1(r1))
        r3 = self.c3(self.d2(r2))
        r4 = self.c4(self.d3(r3))
        r5 = self.c5(self.d4(r4))
        o1 = self.c6(self.u1(r5, r4))
        o2 = self.c7(self.u2(o1, r3))
        o3 = self.c8(self.u3(o2, r2))
        o4 = self.c9(self.u4(o3, r1))
        return self.th(self.out(o4))
