"""jvanvugt/pytorch-unet ``UNet`` with its defaults (the 2015 paper's network).

Keys ``down_path.{i}.block.{0,2}``, ``up_path.{i}.up``, ``up_path.{i}.conv_block.block.{0,2}``, ``last``.
``wf`` (log2 of the first width) may be lowered for cheap shape tests; ``padding=True`` zero-pads the
3x3 convolutions (the project's option: same keys and shapes).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, padding: bool = False) -> None:
        super().__init__()
        p = int(padding)
        self.block = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=p), nn.ReLU(),
                                   nn.Conv2d(cout, cout, 3, padding=p), nn.ReLU())

    def forward(self, x):
        return self.block(x)


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, padding: bool = False) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        self.conv_block = ConvBlock(cin, cout, padding)

    def forward(self, x, bridge):
        up = self.up(x)
        th, tw = up.shape[2:]
        y0, x0 = (bridge.shape[2] - th) // 2, (bridge.shape[3] - tw) // 2
        crop = bridge[:, :, y0 : y0 + th, x0 : x0 + tw]
        return self.conv_block(torch.cat([up, crop], 1))


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, n_classes: int = 2, depth: int = 5, wf: int = 6,
                 padding: bool = False) -> None:
        super().__init__()
        prev = in_channels
        self.down_path = nn.ModuleList()
        for i in range(depth):
            self.down_path.append(ConvBlock(prev, 2 ** (wf + i), padding))
            prev = 2 ** (wf + i)
        self.up_path = nn.ModuleList()
        for i in reversed(range(depth - 1)):
            self.up_path.append(UpBlock(prev, 2 ** (wf + i), padding))
            prev = 2 ** (wf + i)
        self.last = nn.Conv2d(prev, n_classes, kernel_size=1)

    def forward(self, x):
        blocks = []
        for i, down in enumerate(self.down_path):
            x = down(x)
            if i != len(self.down_path) - 1:
                blocks.append(x)
                x = nn.functional.max_pool2d(x, 2)
        for i, up in enumerate(self.up_path):
            x = up(x, blocks[-i - 1])
        return self.last(x)
