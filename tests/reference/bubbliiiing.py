"""bubbliiiing/unet-pytorch ``Unet`` (VGG16 / ResNet50), keys ``vgg.*`` / ``resnet.*``, ``up_concat*``, ``final``."""

from __future__ import annotations

import torch
from torch import nn

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        layers, c = [], in_channels
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        f = self.features
        feat1 = f[:4](x)
        feat2 = f[4:9](feat1)
        feat3 = f[9:16](feat2)
        feat4 = f[16:23](feat3)
        feat5 = f[23:-1](feat4)
        return [feat1, feat2, feat3, feat4, feat5]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)  # the project's quirk
        self.layer1 = self._layer(64, 3)
        self.layer2 = self._layer(128, 4, stride=2)
        self.layer3 = self._layer(256, 6, stride=2)
        self.layer4 = self._layer(512, 3, stride=2)

    def _layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        feat1 = self.relu(self.bn1(self.conv1(x)))
        feat2 = self.layer1(self.maxpool(feat1))
        feat3 = self.layer2(feat2)
        feat4 = self.layer3(feat3)
        feat5 = self.layer4(feat4)
        return [feat1, feat2, feat3, feat4, feat5]


class unetUp(nn.Module):  # noqa: N801  (the original's name)
    def __init__(self, in_size: int, out_size: int, relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_size, out_size, 3, padding=1)
        self.conv2 = nn.Conv2d(out_size, out_size, 3, padding=1)
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()  # pre-Aug-2021: no ReLU

    def forward(self, inputs1, inputs2):
        outputs = torch.cat([inputs1, self.up(inputs2)], 1)
        return self.act(self.conv2(self.act(self.conv1(outputs))))


class Unet(nn.Module):
    def __init__(self, num_classes: int = 21, backbone: str = "vgg", relu: bool = True, in_channels: int = 3) -> None:
        super().__init__()
        if backbone == "vgg":
            self.vgg = VGG(in_channels)
            in_filters = [192, 384, 768, 1024]
        else:
            self.resnet = ResNet50(in_channels)
            in_filters = [192, 512, 1024, 3072]
        out_filters = [64, 128, 256, 512]
        self.up_concat4 = unetUp(in_filters[3], out_filters[3], relu)
        self.up_concat3 = unetUp(in_filters[2], out_filters[2], relu)
        self.up_concat2 = unetUp(in_filters[1], out_filters[1], relu)
        self.up_concat1 = unetUp(in_filters[0], out_filters[0], relu)
        if backbone == "resnet50":
            self.up_conv = nn.Sequential(
                nn.UpsamplingBilinear2d(scale_factor=2),
                nn.Conv2d(out_filters[0], out_filters[0], 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(out_filters[0], out_filters[0], 3, padding=1),
                nn.ReLU(),
            )
        else:
            self.up_conv = None
        self.final = nn.Conv2d(out_filters[0], num_classes, 1)
        self.backbone = backbone

    def forward(self, inputs):
        net = self.vgg if self.backbone == "vgg" else self.resnet
        feat1, feat2, feat3, feat4, feat5 = net(inputs)
        up4 = self.up_concat4(feat4, feat5)
        up3 = self.up_concat3(feat3, up4)
        up2 = self.up_concat2(feat2, up3)
        up1 = self.up_concat1(feat1, up2)
        if self.up_conv is not None:
            up1 = self.up_conv(up1)
        return self.final(up1)
