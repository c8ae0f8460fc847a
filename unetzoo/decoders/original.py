"""``unet-original``: the valid-convolution U-Net of Ronneberger et al. (2015).

Unpadded 3x3 convolutions with ReLU (no batch norm), 2x2 max-pools, 2x2 stride-2 transposed
convolutions that halve the channels, the skip centre-cropped to the upsampled size and
concatenated as ``cat([up, skip])``, a 1x1 head (shared/reference/SEED_SYSTEMS.md §4).

Every 3x3 convolution loses a pixel per side, so the output is smaller than the input: a
572x572 tile gives 388x388 logits for its centre, :attr:`OriginalUNet.border` = 92 pixels in
from each side. Every max-pool must see an even size, so only sizes ``16 k + 124`` (k >= 4)
are valid; :func:`valid_input_sizes` lists them and other sizes raise a ``ValueError`` that
names the nearest valid ones. Large images are segmented tile by tile with mirrored borders
(the paper's overlap-tile strategy, :func:`unetzoo.predict`).

``padding=True`` is jvanvugt/pytorch-unet's ``UNet(padding=True)``: the same layers and weights with
zero-padded 3x3 convolutions, so the output has the input's size (any size: it is padded to a
multiple of 16 and the output cropped back; on multiples of 16 that is jvanvugt's network exactly).

Module layout (the keys of the state dict)::

    encoder.{0..4}.block.conv{1,2}.0.{weight,bias}    (max-pool +) two valid 3x3 convs
    decoder.{0..3}.up.{weight,bias}                   ConvTranspose2d 2x2, stride 2
    decoder.{0..3}.block.conv{1,2}.0.{weight,bias}
    head.{weight,bias}

``unetzoo.convert`` maps the jvanvugt/pytorch-unet keys onto this layout.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from unetzoo.model import UnetZooModel

__all__ = ["OriginalUNet", "build_original", "original_output_size", "valid_input_sizes"]

DEPTH = 5  # levels, i.e. four max-pools
#: pixels lost per side: 2 per conv pair on the way down and up, scaled by each level's stride
BORDER = sum(2 * 2**i for i in range(DEPTH)) + sum(2 * 2**i for i in range(DEPTH - 1))  # 92
_STEP = 2 ** (DEPTH - 1)  # 16: valid sizes are spaced by the total stride
_MIN_SIZE = 2 * BORDER + 4  # 188: the smallest input whose output is non-empty (4x4)
_OFFSET = _MIN_SIZE % _STEP  # valid sizes are the n >= 188 with n = _OFFSET (mod 16)


def valid_input_sizes(lo: int = _MIN_SIZE, hi: int = 1024) -> list[int]:
    """Input sides ``n`` in ``[lo, hi]`` that unet-original accepts (``n = 16 k + 124``, ``k >= 4``).

    >>> valid_input_sizes(500, 600)
    [508, 524, 540, 556, 572, 588]
    """
    first = max(lo, _MIN_SIZE)
    first += (_OFFSET - first) % _STEP
    return list(range(first, hi + 1, _STEP))


def _is_valid(n: int) -> bool:
    return n >= _MIN_SIZE and (n - _OFFSET) % _STEP == 0


def _nearest_valid(n: int) -> list[int]:
    if n < _MIN_SIZE:
        return [_MIN_SIZE]
    below = n - (n - _OFFSET) % _STEP
    return [m for m in (below, below + _STEP) if m >= _MIN_SIZE]


def original_output_size(n: int) -> int:
    """The output side of unet-original for an input side ``n`` (``n - 184``).

    Raises:
        ValueError: if ``n`` is not a valid input size; the message names the nearest ones.

    >>> original_output_size(572)
    388
    """
    if not _is_valid(n):
        near = ", ".join(map(str, _nearest_valid(n)))
        raise ValueError(f"input size {n} is not valid for unet-original; nearest valid sizes: {near}")
    return n - 2 * BORDER


def _check_size(h: int, w: int) -> None:
    bad = list(dict.fromkeys(n for n in (h, w) if not _is_valid(n)))  # hash only invalid (concrete) sizes
    if not bad:
        return
    if len(bad) == 1:
        near = ", ".join(map(str, _nearest_valid(bad[0])))
    else:
        near = "; ".join(f"{n} -> {' or '.join(map(str, _nearest_valid(n)))}" for n in bad)
    raise ValueError(
        f"input {h}x{w} is not valid for unet-original; nearest valid sizes: {near} "
        f"(sides must be 16k+124, k>=4; or segment any size with unetzoo.predict, which tiles it)"
    )


def _conv_relu(cin: int, cout: int, padding: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=padding), nn.ReLU(inplace=True))


class ValidDoubleConv(nn.Module):
    """Two unpadded 3x3 convolutions with ReLU (each loses one pixel per side); ``padding=1``
    zero-pads them instead (jvanvugt's ``padding=True``)."""

    def __init__(self, cin: int, cout: int, padding: int = 0) -> None:
        super().__init__()
        self.conv1 = _conv_relu(cin, cout, padding)
        self.conv2 = _conv_relu(cout, cout, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UpCrop(nn.Module):
    """Transposed conv x2 (halving channels), centre-crop the skip, ``cat([up, skip])``, convs."""

    def __init__(self, cin: int, cout: int, padding: int = 0) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.block = ValidDoubleConv(cin, cout, padding)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        h, w = x.shape[-2:]
        top, left = (skip.shape[-2] - h) // 2, (skip.shape[-1] - w) // 2
        return self.block(torch.cat([x, skip[..., top : top + h, left : left + w]], dim=1))


class OriginalUNet(UnetZooModel):
    """The 2015 paper's U-Net: 572x572 input -> 388x388 output (31,030,658 parameters).

    Args:
        num_classes: output channels (logits).
        in_chans: input channels (1 in the paper).
        dropout: rate of the dropout at the end of the contracting path (after the deepest
            level); the paper uses dropout there as implicit data augmentation. 0 = off.
        padding: zero-padded convolutions (jvanvugt's ``UNet(padding=True)``): the output has the
            input's size and any size is accepted; ``border`` is then 0.
    """

    border = BORDER
    output_stride = _STEP  # total down-sampling: unetzoo.predict keeps its tiles on this grid

    def __init__(self, num_classes: int = 2, in_chans: int = 1, *, dropout: float = 0.0, padding: bool = False) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not isinstance(padding, bool):
            raise ValueError(f"padding must be True or False, got {padding!r}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.padding = padding
        if padding:  # same-size network: padded to the stride like every other one
            self.border, self.pad_multiple = 0, _STEP
        else:
            self.pad_multiple = None  # valid convolutions: sizes are checked, never padded
        widths = [64 * 2**i for i in range(DEPTH)]
        stages = []
        for i, (cin, cout) in enumerate(zip([in_chans, *widths[:-1]], widths)):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            if i:
                layers["pool"] = nn.MaxPool2d(2)
            layers["block"] = ValidDoubleConv(cin, cout, int(padding))
            stages.append(nn.Sequential(layers))
        self.encoder = nn.ModuleList(stages)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.decoder = nn.ModuleList(UpCrop(widths[i], widths[i - 1], int(padding)) for i in range(DEPTH - 1, 0, -1))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: weights ~ N(0, sqrt(2 / N)), N = inputs of one unit; zero biases.

        For a k x k convolution N = 9 C_in (k = 3) or C_in (k = 1); for the 2x2 stride-2
        transposed convolution each output pixel sees one kernel tap per input channel, so N = C_in.
        """
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.weight.is_meta:
                continue  # nothing to initialise (and meta-device normal_ would import torch._refs)
            if isinstance(m, nn.ConvTranspose2d):
                fan_in = m.in_channels
            elif isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * math.prod(m.kernel_size)
            else:
                continue
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
            nn.init.zeros_(m.bias)

    def encoder_stages(self) -> list[nn.Module]:
        return list(self.encoder)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if not self.padding:
            _check_size(*x.shape[-2:])

    def output_size(self, n: int) -> int:
        """Output side for an input side ``n``; see :func:`original_output_size` (``n`` itself
        with ``padding=True``)."""
        return n if self.padding else original_output_size(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.padding:
            x, h, w = self._pad(x)
            return self._crop(self._forward(x), h, w).contiguous()
        return self._forward(x).contiguous()  # NCHW logits for a channels-last model too

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = self.dropout(skips.pop())
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)


def build_original(
    encoder: None = None, *, num_classes: int = 2, in_chans: int = 1, dropout: float = 0.0, padding: bool = False
) -> OriginalUNet:
    """Builder of ``unet-original`` (see :class:`OriginalUNet`).

    Example:
        >>> model = unetzoo.create("unet-original")
        >>> model(torch.randn(1, 1, 572, 572)).shape
        torch.Size([1, 2, 388, 388])
    """
    if encoder is not None:
        raise ValueError(f"unet-original has its own encoder; got encoder={encoder!r}")
    return OriginalUNet(num_classes, in_chans, dropout=dropout, padding=padding)

