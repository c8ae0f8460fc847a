"""``unet-classic``: the DoubleConv / Down / Up U-Net with batch norm.

This is the network of milesial/Pytorch-UNet and of WZMIAOMIAO's pytorch_segmentation/unet
(shared/reference/SEED_SYSTEMS.md §2, §3): two 3x3 convolutions with batch norm and ReLU per
level, max-pool down, transposed-convolution or bilinear (``align_corners=True``) up, the
upsampled map zero-padded to the skip's size and concatenated after it, a 1x1 head.

Any input size works, exactly as in those projects: a level whose size is odd loses a row or
column to the max-pool, and the upsampled map is padded back (centred) before the
concatenation. So the outputs equal theirs on every size, not only on multiples of 16.

Module layout (the keys of the state dict)::

    encoder.0.block.conv{1,2}.{0: conv, 1: bn}      the first DoubleConv
    encoder.{1..4}.block.conv{1,2}.{0,1}            max-pool + DoubleConv ("Down")
    decoder.{0..3}.up.{weight,bias}                 ConvTranspose2d (bilinear=False only)
    decoder.{0..3}.block.conv{1,2}.{0,1}            DoubleConv after the concatenation
    head.{weight,bias}                              1x1 conv to the classes

``unetzoo.convert`` maps the milesial and WZMIAOMIAO checkpoint keys onto this layout.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from unetzoo.model import UnetZooModel

__all__ = ["ClassicUNet", "DoubleConv", "build_classic"]

#: the smallest side the four max-pools can take (each level must keep at least one pixel)
MIN_SIZE = 16


def _conv_bn_relu(cin: int, cout: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class DoubleConv(nn.Module):
    """(3x3 conv -> BN -> ReLU) x 2; the first conv maps to ``mid`` channels (default ``cout``)."""

    def __init__(self, cin: int, cout: int, mid: int | None = None, *, bias: bool = False) -> None:
        super().__init__()
        mid = cout if mid is None else mid
        self.conv1 = _conv_bn_relu(cin, mid, bias)
        self.conv2 = _conv_bn_relu(mid, cout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


def _down(cin: int, cout: int, bias: bool, pool: bool) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if pool:
        layers["pool"] = nn.MaxPool2d(2)
    layers["block"] = DoubleConv(cin, cout, bias=bias)
    return nn.Sequential(layers)


class Up(nn.Module):
    """Upsample x2, pad to the skip's size (centred), ``cat([skip, up])``, DoubleConv.

    Args:
        cin: channels of the deeper input; the skip has ``cin // 2`` channels.
        cout: output channels.
        bilinear: bilinear (``align_corners=True``) upsampling, which keeps the channels,
            instead of a 2x2 stride-2 transposed convolution that halves them.
        bias: conv biases in the DoubleConv.
    """

    def __init__(self, cin: int, cout: int, *, bilinear: bool, bias: bool) -> None:
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.block = DoubleConv(cin, cout, mid=cin // 2, bias=bias)
        else:
            self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
            self.block = DoubleConv(cin, cout, bias=bias)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dy = skip.shape[-2] - x.shape[-2]
        dx = skip.shape[-1] - x.shape[-1]
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or dy or dx:  # traced graphs: general path
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.block(torch.cat([skip, x], dim=1))


class ClassicUNet(UnetZooModel):
    """The classic U-Net with batch norm (milesial/Pytorch-UNet, WZMIAOMIAO).

    Args:
        num_classes: output channels (logits, no activation).
        in_chans: input channels.
        bilinear: bilinear upsampling (and a bottleneck of ``8 * base_c`` channels) instead of
            transposed convolutions (bottleneck ``16 * base_c``).
        base_c: width of the first level; level ``i`` has ``base_c * 2**i`` channels.
        bias: biases in the 3x3 convolutions (milesial v2.0 checkpoints have them; they are
            redundant before batch norm, so later versions dropped them).
    """

    output_stride = 16  # four 2x2 pools; unetzoo.predict aligns its tiles to this grid

    def __init__(
        self, num_classes: int = 2, in_chans: int = 3, *, bilinear: bool = False, base_c: int = 64, bias: bool = False
    ) -> None:
        super().__init__()
        if base_c < 1:
            raise ValueError(f"base_c must be at least 1, got {base_c}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.pad_multiple = None  # any size works natively (see the module docstring)
        self.bilinear = bilinear
        factor = 2 if bilinear else 1
        widths = [base_c * 2**i for i in range(5)]  # 64, 128, 256, 512, 1024
        outs = [*widths[:4], widths[4] // factor]
        self.encoder = nn.ModuleList(
            _down(cin, cout, bias, pool=i > 0) for i, (cin, cout) in enumerate(zip([in_chans, *outs[:4]], outs))
        )
        self.decoder = nn.ModuleList(
            Up(widths[i], widths[i - 1] // (factor if i > 1 else 1), bilinear=bilinear, bias=bias)
            for i in range(4, 0, -1)
        )
        self.head = nn.Conv2d(base_c, num_classes, 1)

    def encoder_stages(self) -> list[nn.Module]:
        return list(self.encoder)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if min(x.shape[-2:]) < MIN_SIZE:
            h, w = x.shape[-2:]
            raise ValueError(
                f"input {h}x{w} is too small for unet-classic: both sides must be at least {MIN_SIZE} "
                "(four 2x2 max-pools); pad the image"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x).contiguous()  # NCHW logits for a channels-last model too, as every model


def build_classic(
    encoder: None = None,
    *,
    num_classes: int = 2,
    in_chans: int = 3,
    bilinear: bool = False,
    base_c: int = 64,
    bias: bool = False,
) -> ClassicUNet:
    """Builder of ``unet-classic`` (see :class:`ClassicUNet` for the options).

    The defaults are milesial/Pytorch-UNet v3 (transposed, no conv bias, 31,037,698 parameters
    for 2 classes); ``bilinear=True, base_c=32`` is WZMIAOMIAO's DRIVE network.

    Example:
        >>> model = unetzoo.create("unet-classic", bilinear=True, base_c=32)
        >>> model(torch.randn(1, 3, 100, 75)).shape
        torch.Size([1, 2, 100, 75])
    """
    if encoder is not None:
        raise ValueError(f"unet-classic has its own encoder; got encoder={encoder!r}")
    return ClassicUNet(num_classes, in_chans, bilinear=bilinear, base_c=base_c, bias=bias)
