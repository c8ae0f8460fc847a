"""Encoders built from torchvision backbones (VGG and ResNet families).

Each encoder keeps torchvision's own module names, so torchvision's pretrained state dicts
load as they are (classifier keys are reported as unused). The feature taps are the
seed's (shared/reference/SEED_SYSTEMS.md §1): VGG taps the output of each block before its
max-pool (pool5 is not used); ResNet taps the stem activation and every layer.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers as vgg_make_layers

from unetzoo.encoders.base import Encoder, backbone_keys

__all__ = ["VGGEncoder", "ResNetEncoder", "create_torchvision_encoder"]


class VGGEncoder(Encoder):
    """VGG features split before each max-pool: five features at strides 1..16.

    Args:
        taps: ``"seed"`` (the default): the five blocks' outputs, strides 1..16. ``"smp"``:
            segmentation_models_pytorch's taps, the blocks at strides 2..16 plus the last
            max-pool (stride 32); smp's decoder never uses the stride-1 block as a skip.
    """

    first_conv = "features.0"

    def __init__(self, name: str = "vgg16", *, in_chans: int = 3, taps: str = "seed") -> None:
        super().__init__()
        if taps not in ("seed", "smp"):
            raise ValueError(f"vgg taps={taps!r} is not supported; choose 'seed' or 'smp'")
        features = _vgg_features(name, in_chans)
        self.name = name
        self.features = features
        self.in_chans = in_chans
        self.taps = taps
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        # stage i spans from pool i-1 (inclusive) to pool i (exclusive); the last pool is unused
        self._bounds = list(zip([0, *pools[:-1]], pools))
        if taps == "smp":  # first two blocks as one stage (stride 2), then pool5 alone (stride 32)
            self._bounds = [(0, pools[1]), *self._bounds[2:], (pools[-1], pools[-1] + 1)]
        convs = [self._last_conv(features[a:b]).out_channels for a, b in self._bounds if b - a > 1]
        self.channels = tuple(convs + convs[-1:] * (len(self._bounds) - len(convs)))
        first = 2 if taps == "smp" else 1
        self.reductions = tuple(first * 2**i for i in range(len(self._bounds)))

    def native_keys(self) -> frozenset[str] | None:
        return _native_keys(self.name)

    @staticmethod
    def _last_conv(block: nn.Sequential) -> nn.Conv2d:
        return [m for m in block if isinstance(m, nn.Conv2d)][-1]

    def stages(self) -> list[nn.Module]:
        return [self.features[a:b] for a, b in self._bounds]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages():
            x = stage(x)
            out.append(x)
        return out


def _native_keys(name: str) -> frozenset[str] | None:
    """The keys of torchvision's model ``name`` and of timm's port of it (timm/vgg16.tv_in1k: the
    same features, its classifier under other names): weights in either layout are this backbone's."""
    keys = [k for k in (backbone_keys("torchvision", name), backbone_keys("timm", name)) if k is not None]
    return frozenset().union(*keys) if keys else None


_VGG_CONFIGS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def _vgg_features(name: str, in_chans: int) -> nn.Sequential:
    """torchvision's VGG ``features`` (same layers, keys and init) without the 120M-parameter
    classifier that building the whole model would allocate only to throw away."""
    base = name.removesuffix("_bn")
    if base not in _VGG_CONFIGS:
        raise ValueError(f"unknown VGG {name!r}; choose one of {sorted(_VGG_CONFIGS)} (optionally with _bn)")
    features = vgg_make_layers(vgg_cfgs[_VGG_CONFIGS[base]], batch_norm=name.endswith("_bn"))
    if in_chans != 3:
        conv = features[0]
        features[0] = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    for m in features.modules():  # torchvision VGG's initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return features


class ResNetEncoder(Encoder):
    """torchvision ResNet taps: stem (stride 2), layer1..layer4 (strides 4..32).

    Args:
        maxpool_quirk: use ``MaxPool2d(3, 2, padding=0, ceil_mode=True)`` as in the
            bubbliiiing/unet-pytorch ResNet50 (same shapes for even sizes, different values).
            Needed for exact parity with that project's checkpoints; leave it off for
            ImageNet weights from torchvision or timm, which were trained with padding 1.
    """

    first_conv = "conv1"

    def __init__(self, name: str = "resnet50", *, in_chans: int = 3, maxpool_quirk: bool = False) -> None:
        super().__init__()
        net = torchvision.models.get_model(name, weights=None)
        self.name = name
        self.conv1 = net.conv1 if in_chans == 3 else nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1, self.relu = net.bn1, net.relu
        self.maxpool = nn.MaxPool2d(3, 2, padding=0, ceil_mode=True) if maxpool_quirk else net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.in_chans = in_chans
        self.maxpool_quirk = maxpool_quirk
        widths = [self._out_channels(layer) for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]
        self.channels = (64, *widths)
        self.reductions = (2, 4, 8, 16, 32)

    def native_keys(self) -> frozenset[str] | None:
        return _native_keys(self.name)

    @staticmethod
    def _out_channels(layer: nn.Sequential) -> int:
        block = layer[-1]
        last = block.bn3 if hasattr(block, "bn3") else block.bn2
        return last.num_features

    def stages(self) -> list[nn.Module]:
        return [
            nn.ModuleList([self.conv1, self.bn1]),
            nn.ModuleList([self.maxpool, self.layer1]),
            self.layer2,
            self.layer3,
            self.layer4,
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.relu(self.bn1(self.conv1(x)))
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        f5 = self.layer4(f4)
        return [f1, f2, f3, f4, f5]


def create_torchvision_encoder(name: str, *, in_chans: int = 3, **options) -> Encoder:
    """Build the torchvision encoder ``name`` (``"vgg16"``, ``"resnet50"``, ...)."""
    if name.startswith("vgg"):
        unknown = sorted(set(options) - {"taps"})
        if unknown:
            raise TypeError(f"VGG encoders take only the option taps, got {unknown}")
        return VGGEncoder(name, in_chans=in_chans, **options)
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return ResNetEncoder(name, in_chans=in_chans, **options)
    raise ValueError(f"no torchvision encoder for {name!r}; torchvision encoders: vgg*, resnet*")
