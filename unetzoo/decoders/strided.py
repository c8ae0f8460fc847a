"""``unet-strided``: the strided-convolution tutorial U-Net (qiaofengsheng/pytorch-UNet).

Each level has two reflect-padded 3x3 convolutions (no bias) with batch norm, ``Dropout2d``
and LeakyReLU(0.01); the way down is a stride-2 reflect-padded 3x3 convolution that keeps the
channels; the way up is nearest x2 followed by a 1x1 convolution that halves the channels and
``cat([up, skip])``; the head is a 3x3 convolution, followed by a sigmoid in the first version
of that project (shared/reference/SEED_SYSTEMS.md §5).

The original needs sides that are multiples of 16; unetzoo zero-pads other sizes at the
bottom/right and crops the output back, and equals the original on the sizes it accepts.

Module layout (the keys of the state dict)::

    encoder.0.block.conv{1,2}.{0: conv, 1: bn}          (2: Dropout2d, 3: LeakyReLU)
    encoder.{1..4}.down.{0: conv, 1: bn}                stride-2 conv down
    encoder.{1..4}.block.conv{1,2}.{0,1}
    decoder.{0..3}.up.conv.{weight,bias}                1x1 conv after nearest x2
    decoder.{0..3}.block.conv{1,2}.{0,1}
    head.{weight,bias}                                  3x3 conv (+ sigmoid)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from unetzoo.model import UnetZooModel

__all__ = ["StridedUNet", "build_strided"]

SEED_DROPOUT = (0.3, 0.4)


def _conv3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, padding_mode="reflect", bias=bias)


class ConvBlock(nn.Module):
    """2 x (reflect 3x3 conv -> BN -> Dropout2d -> LeakyReLU), with dropout rates ``p1``, ``p2``."""

    def __init__(self, cin: int, cout: int, dropout: tuple[float, float]) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(_conv3(cin, cout), nn.BatchNorm2d(cout), nn.Dropout2d(dropout[0]), nn.LeakyReLU())
        self.conv2 = nn.Sequential(_conv3(cout, cout), nn.BatchNorm2d(cout), nn.Dropout2d(dropout[1]), nn.LeakyReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UpCat(nn.Module):
    """Nearest x2 -> 1x1 conv halving the channels -> ``cat([up, skip])`` -> ConvBlock."""

    def __init__(self, cin: int, cout: int, dropout: tuple[float, float]) -> None:
        super().__init__()
        self.up = nn.Sequential(
            OrderedDict(upsample=nn.Upsample(scale_factor=2, mode="nearest"), conv=nn.Conv2d(cin, cin // 2, 1))
        )
        self.block = ConvBlock(cin, cout, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


def _stage(cin: int, cout: int, dropout: tuple[float, float], down: bool) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if down:
        layers["down"] = nn.Sequential(_conv3(cin, cin, stride=2), nn.BatchNorm2d(cin), nn.LeakyReLU())
    layers["block"] = ConvBlock(cin, cout, dropout)
    return nn.Sequential(layers)


def _dropout_pair(dropout: float | Sequence[float]) -> tuple[float, float]:
    pair = (float(dropout),) * 2 if isinstance(dropout, (int, float)) else tuple(float(p) for p in dropout)
    if len(pair) != 2 or not all(0.0 <= p < 1.0 for p in pair):
        raise ValueError(
            f"dropout must be a rate in [0, 1) or a pair of rates (first conv, second conv), got {dropout!r}"
        )
    return pair  # type: ignore[return-value]


class StridedUNet(UnetZooModel):
    """The strided-conv tutorial U-Net (32,085,699 parameters with 3 outputs).

    Args:
        num_classes: output channels (3 in the seed: an RGB mask).
        in_chans: input channels.
        dropout: ``Dropout2d`` rates after the first and second conv of every level (the
            seed's 0.3 and 0.4); one number sets both. Active in training mode only.
        sigmoid: end with a sigmoid (the seed, trained with BCE). ``False`` returns logits,
            as in that project's later CrossEntropy version.
    """

    pad_multiple = 16
    output_stride = 16  # four stride-2 convs; unetzoo.predict aligns its tiles to this grid
    min_input_size = 17  # check_input's limit: unetzoo.predict makes its windows at least this big

    def __init__(
        self,
        num_classes: int = 3,
        in_chans: int = 3,
        *,
        dropout: float | Sequence[float] = SEED_DROPOUT,
        sigmoid: bool = True,
    ) -> None:
        super().__init__()
        rates = _dropout_pair(dropout)
        self.in_chans = in_chans
        self.num_classes = num_classes
        widths = [64 * 2**i for i in range(5)]
        self.encoder = nn.ModuleList(
            _stage(cin, cout, rates, down=i > 0) for i, (cin, cout) in enumerate(zip([in_chans, *widths[:4]], widths))
        )
        self.decoder = nn.ModuleList(UpCat(widths[i], widths[i - 1], rates) for i in range(4, 0, -1))
        self.head = nn.Conv2d(widths[0], num_classes, 3, padding=1)
        self.activation = nn.Sigmoid() if sigmoid else nn.Identity()

    def encoder_stages(self) -> list[nn.Module]:
        return list(self.encoder)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if min(x.shape[-2:]) <= 16:
            h, w = x.shape[-2:]
            raise ValueError(
                f"input {h}x{w} is too small for unet-strided: both sides must be larger than 16 "
                "(the reflect padding of the deepest level needs at least 2x2 pixels there)"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x, h, w = self._pad(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return self._crop(self.activation(self.head(x)), h, w).contiguous()


def build_strided(
    encoder: None = None,
    *,
    num_classes: int = 3,
    in_chans: int = 3,
    dropout: float | Sequence[float] = SEED_DROPOUT,
    sigmoid: bool = True,
) -> StridedUNet:
    """Builder of ``unet-strided`` (see :class:`StridedUNet`).

    Example:
        >>> model = unetzoo.create("unet-strided", num_classes=1)
        >>> model.eval()(torch.randn(1, 3, 256, 256)).shape
        torch.Size([1, 1, 256, 256])
    """
    if encoder is not None:
        raise ValueError(f"unet-strided has its own encoder; got encoder={encoder!r}")
    return StridedUNet(num_classes, in_chans, dropout=dropout, sigmoid=sigmoid)
