"""The U-Net decoder ("unetUp" design) for any encoder, and the ``unet-*`` builder.

The decoder knows only the encoder's channel and reduction lists. Each block upsamples the
deeper feature to the skip's size, concatenates the skip, and applies two 3x3 convolutions.
When the shallowest feature is below full resolution (ResNet: stride 2), extra blocks without
a skip upsample by 2 until the output is at the input's resolution (the seed's ``up_conv``).

With the defaults (bilinear x2 with ``align_corners=True``, ``cat([skip, up])``, ReLU, no
norm, widths 512-256-128-64, a 1x1 head) this is exactly the bubbliiiing/unet-pytorch
decoder; ``decoder_channels=(256, 128, 64, 32, 16), decoder_norm="bn", upsample="nearest",
skip_first=False, head_kernel=3`` is smp's ``Unet`` decoder.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UnetDecoder", "ConcatConv2d", "GroupNorm", "build_unet", "upsample2x_bilinear", "SEED_DECODER_CHANNELS"]

SEED_DECODER_CHANNELS = (512, 256, 128, 64)
Upsample = Literal["bilinear", "nearest", "transpose"]


def _act(name: str | None) -> nn.Module | None:
    if name is None or name == "none":
        return None
    table = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU, "silu": lambda: nn.SiLU(inplace=True)}
    if name not in table:
        raise ValueError(f"decoder_act={name!r} is not supported; choose one of {sorted(table)} or None")
    return table[name]()


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that trains on a channels-last CPU input in the default layout.

    PyTorch's CPU group norm backward pass is several times slower on channels-last tensors
    than on contiguous ones: for the demo decoder's last block (batch 4, 16 channels, 128x128,
    bfloat16 autocast) forward and backward take 16 ms, against 2.3 ms with the two layout
    copies this adds (``benchmarks/bench_cpu_bf16_training.py``). The output keeps the input's
    layout, so the convolutions around it stay channels-last. Without gradients (validation,
    inference), where torch's channels-last forward pass is the fast one, and on other devices
    and layouts it is ``nn.GroupNorm`` as it is.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dim() == 4 and torch.is_grad_enabled()
                and (x.requires_grad or (self.affine and self.weight.requires_grad))
                and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def _norm(name: str | None, channels: int) -> nn.Module | None:
    if name is None or name == "none":
        return None
    if name in ("bn", "batchnorm"):
        return nn.BatchNorm2d(channels)
    if name in ("gn", "groupnorm"):
        # 32 groups where the width allows, else the most that divide it (a group per channel up to 32)
        return GroupNorm(channels if channels <= 32 else math.gcd(32, channels), channels)
    raise ValueError(f"decoder_norm={name!r} is not supported; choose 'bn', 'gn' or None")


#: input channels per partial convolution of :class:`ConcatConv2d` (see there)
CONCAT_CHUNK = 1024


def _chunks(channels: int, limit: int) -> list[int]:
    """``channels`` cut into the fewest near-equal pieces of at most ``limit``."""
    pieces = -(-channels // limit)
    base, extra = divmod(channels, pieces)
    return [base + (i < extra) for i in range(pieces)]


class ConcatConv2d(nn.Conv2d):
    """A convolution over the channel concatenation of its inputs.

    ``ConcatConv2d(splits, cout, k)(parts)`` equals ``nn.Conv2d(sum(splits), cout, k)(torch.cat(parts, 1))``
    with the same weight (so checkpoints are unchanged). When autograd records, it is computed
    without concatenating: ``conv(cat(a, b)) = conv(a; W[:, :Ca]) + conv(b; W[:, Ca:])``, with every
    part further cut to at most :data:`CONCAT_CHUNK` input channels. That saves the concatenated
    tensor (one copy forward, and its memory held for the backward pass), and on CPUs it avoids
    oneDNN's weight-gradient kernel, which is several times slower above ~1500 input channels
    (unet-resnet50's first decoder conv has 3072; ``benchmarks/bench_fast_path.py`` and
    ``benchmarks/bench_decoder_copies.py`` measure it). Without autograd (inference, export) the
    inputs are concatenated and one convolution runs. The two differ only by float rounding.

    Args:
        in_splits: channels of each input, in concatenation order.
        out_channels, kernel_size, padding, bias: as for :class:`torch.nn.Conv2d`.
    """

    def __init__(self, in_splits: Sequence[int], out_channels: int, kernel_size: int = 3, *,
                 padding: int = 1, bias: bool = True) -> None:
        super().__init__(sum(in_splits), out_channels, kernel_size, padding=padding, bias=bias)
        self.in_splits = tuple(int(c) for c in in_splits)

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            return super().forward(inputs)
        channels = tuple(int(t.shape[1]) for t in inputs)
        if channels != self.in_splits:
            raise ValueError(f"{type(self).__name__} expects inputs with {list(self.in_splits)} channels, got {list(channels)}")
        if not self._records_autograd(inputs):
            return super().forward(torch.cat(list(inputs), dim=1))
        pieces, widths = [], []
        for t in inputs:
            sizes = _chunks(t.shape[1], CONCAT_CHUNK)
            pieces += list(t.split(sizes, dim=1)) if len(sizes) > 1 else [t]
            widths += sizes
        weights = self.weight.split(widths, dim=1)
        out = None
        for i, (piece, weight) in enumerate(zip(pieces, weights)):
            y = F.conv2d(piece, weight, self.bias if i == 0 else None, self.stride, self.padding, self.dilation)
            out = y if out is None else out.add_(y)
        return out

    def _records_autograd(self, inputs: Sequence[torch.Tensor]) -> bool:
        """Whether this call builds a backward graph (eager only: tracers and compilers get one conv)."""
        if torch.compiler.is_compiling() or torch.jit.is_scripting() or torch.jit.is_tracing():
            return False
        return torch.is_grad_enabled() and (self.weight.requires_grad or any(t.requires_grad for t in inputs))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, in_splits={list(self.in_splits)}"


class ConvNormAct(nn.Sequential):
    """3x3 conv (bias only without a norm) -> optional norm -> optional activation.

    With ``in_splits`` the convolution is a :class:`ConcatConv2d` and the block takes the list
    of tensors to concatenate.
    """

    def __init__(self, cin: int, cout: int, norm: str | None, act: str | None,
                 in_splits: Sequence[int] | None = None) -> None:
        norm_layer = _norm(norm, cout)
        bias = norm_layer is None
        conv = (ConcatConv2d(in_splits, cout, 3, padding=1, bias=bias) if in_splits and len(in_splits) > 1
                else nn.Conv2d(cin, cout, 3, padding=1, bias=bias))
        layers: list[nn.Module] = [conv]
        for extra in (norm_layer, _act(act)):
            if extra is not None:
                layers.append(extra)
        super().__init__(*layers)


def _lerp_weights(n: int, align_corners: bool, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of the neighbours of output rows ``2k`` (towards input ``k - 1``) and ``2k + 1``
    (towards ``k + 1``) of an exact 2x bilinear upsampling of ``n`` rows."""
    k = torch.arange(n, dtype=torch.float64, device=device)
    if align_corners:  # source position of output o is o (n - 1) / (2n - 1)
        even, odd = k / (2 * n - 1), (n - 1 - k) / (2 * n - 1)
    else:  # half-pixel centres: a quarter of the way to the neighbour on either side
        even, odd = torch.full_like(k, 0.25), torch.full_like(k, 0.25)
    return even.to(dtype), odd.to(dtype)


def _upsample2x_rows(x: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """``x`` of shape ``(B, n, R...)`` -> ``(B, 2n, R...)``, bilinear along dim 1."""
    n = x.shape[1]
    even, odd = (w.view(1, n, *[1] * (x.dim() - 2)) for w in _lerp_weights(n, align_corners, x.dtype, x.device))
    out = x.new_empty(x.shape[0], n, 2, *x.shape[2:])
    out[:, 0, 0] = x[:, 0]
    torch.lerp(x[:, 1:], x[:, :-1], even[:, 1:], out=out[:, 1:, 0])
    torch.lerp(x[:, :-1], x[:, 1:], odd[:, :-1], out=out[:, :-1, 1])
    out[:, -1, 1] = x[:, -1]
    return out.view(x.shape[0], 2 * n, *x.shape[2:])


def upsample2x_bilinear(x: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=...)`` for a
    channels-last ``NxCxHxW`` tensor, as two separable passes of shifted-slice ``lerp``s.

    Each output row ``2k`` / ``2k + 1`` mixes input row ``k`` with one neighbour, so every pass is
    a few element-wise kernels over contiguous channel vectors, with no index gathering. In
    bfloat16 on CPU it ran 1.1-1.4x faster than ATen's kernel at 64-256 channels and slower at
    512 (``benchmarks/bench_fast_path.py``, table 5), a few percent of unet-resnet50's fast path
    at 512x512; it rounds once per pass, so it differs from
    ``F.interpolate`` by up to about one bfloat16 ulp more. Returns a channels-last tensor.
    """
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"upsample2x_bilinear wants a 4-D channels-last tensor, got shape {tuple(x.shape)} "
                         f"with strides {x.stride()}")
    rows = x.permute(0, 2, 3, 1)  # N H W C, contiguous
    rows = _upsample2x_rows(rows, align_corners)  # N 2H W C
    n, h2, w, c = rows.shape
    cols = _upsample2x_rows(rows.reshape(n * h2, w, c), align_corners)  # (N 2H) 2W C
    return cols.view(n, h2, 2 * w, c).permute(0, 3, 1, 2)


class UpBlock(nn.Module):
    """Upsample ``x`` to the skip's size, concatenate the skip (if any), two 3x3 convs.

    Args:
        upsample: ``"bilinear"``, ``"nearest"`` or ``"transpose"`` (a learned 2x2 stride-2
            transposed convolution, resized bilinearly where the skip is not exactly twice as big).
        align_corners: the bilinear resize's ``align_corners``; nearest upsampling ignores it.
        skip_first: concatenate ``[skip, up]`` (the seed's order) rather than ``[up, skip]``.
        norm, act: the norm and activation after each 3x3 convolution.

    ``lerp_upsample`` (set by the inference fast path for bfloat16 on CPUs) computes an exact 2x
    bilinear upsampling of a channels-last input with :func:`upsample2x_bilinear`.
    """

    lerp_upsample = False

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        upsample: Upsample = "bilinear",
        align_corners: bool = True,
        skip_first: bool = True,
        norm: str | None = None,
        act: str | None = "relu",
    ) -> None:
        super().__init__()
        if upsample not in ("bilinear", "nearest", "transpose"):
            raise ValueError(f"upsample={upsample!r} is not supported; choose 'bilinear', 'nearest' or 'transpose'")
        self.mode = upsample
        self.align_corners = align_corners
        self.skip_first = skip_first
        self.up = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2) if upsample == "transpose" else None
        splits = (skip_channels, in_channels) if skip_first else (in_channels, skip_channels)
        self.conv1 = ConvNormAct(in_channels + skip_channels, out_channels, norm, act,
                                 in_splits=splits if skip_channels else None)
        self.conv2 = ConvNormAct(out_channels, out_channels, norm, act)

    def _upsample(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x)
            if tuple(x.shape[-2:]) == tuple(size):
                return x
        if self.mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        if (self.lerp_upsample and tuple(size) == (2 * x.shape[-2], 2 * x.shape[-1])
                and x.is_contiguous(memory_format=torch.channels_last)):
            return upsample2x_bilinear(x, self.align_corners)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is None:
            x = self._upsample(x, (x.shape[-2] * 2, x.shape[-1] * 2))
        else:
            x = self._upsample(x, skip.shape[-2:])
            x = [skip, x] if self.skip_first else [x, skip]  # concatenated by conv1 (ConcatConv2d)
        return self.conv2(self.conv1(x))


def default_decoder_channels(num_blocks: int) -> tuple[int, ...]:
    """The seed's widths (512, 256, 128, 64) fitted to ``num_blocks`` skip blocks."""
    if num_blocks <= len(SEED_DECODER_CHANNELS):
        return SEED_DECODER_CHANNELS[len(SEED_DECODER_CHANNELS) - num_blocks :]
    return (512,) * (num_blocks - len(SEED_DECODER_CHANNELS)) + SEED_DECODER_CHANNELS


def _positive_ints(values: object) -> bool:
    return (isinstance(values, Sequence) and not isinstance(values, str)
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in values))


class UnetDecoder(nn.Module):
    """U-Net decoder built from an encoder's channel and reduction lists.

    Args:
        encoder_channels: channels of each encoder feature, shallowest first.
        encoder_reductions: stride of each feature, shallowest first.
        decoder_channels: output widths, deepest block first: one per skip block, then
            optionally one per extra (skip-less) upsampling block; missing extra widths
            repeat the last one. ``None`` = the seed's 512-256-128-64.
        upsample, align_corners, skip_first, norm, act: see :class:`UpBlock`.
        center: two 3x3 conv-norm-act layers on the deepest feature first (smp's VGG ``Unet``).
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_reductions: Sequence[int],
        decoder_channels: Sequence[int] | None = None,
        *,
        upsample: Upsample = "bilinear",
        align_corners: bool = True,
        skip_first: bool = True,
        norm: str | None = None,
        act: str | None = "relu",
        center: bool = False,
    ) -> None:
        super().__init__()
        if len(encoder_channels) != len(encoder_reductions) or len(encoder_channels) < 2:
            raise ValueError(
                f"need at least two encoder features with matching channels/reductions, got "
                f"{list(encoder_channels)} / {list(encoder_reductions)}"
            )
        num_skip = len(encoder_channels) - 1
        first = encoder_reductions[0]
        if first < 1:
            raise ValueError(f"the shallowest feature's stride must be >= 1, got {first}")
        # 2x steps up to full resolution; a stride that is no power of 2 (patch-14 ViTs, ConvMixer)
        # is rounded up, and the model resizes the slightly larger logits to the input
        num_extra = math.ceil(math.log2(first) - 1e-9)
        if decoder_channels is not None and not _positive_ints(decoder_channels):
            raise ValueError(
                f"decoder_channels must be a list of positive widths, deepest block first, e.g. [256, 128, 64, 32], "
                f"got {decoder_channels!r}"
            )
        widths = list(decoder_channels) if decoder_channels is not None else list(default_decoder_channels(num_skip))
        if not num_skip <= len(widths) <= num_skip + num_extra:
            raise ValueError(
                f"decoder_channels has {len(widths)} entries; this encoder needs {num_skip} "
                f"(one per skip block) to {num_skip + num_extra} (plus {num_extra} extra upsampling blocks)"
            )
        widths += [widths[-1]] * (num_skip + num_extra - len(widths))
        kw = dict(upsample=upsample, align_corners=align_corners, skip_first=skip_first, norm=norm, act=act)
        blocks, cin = [], encoder_channels[-1]
        for i in range(num_skip):
            skip = encoder_channels[-2 - i]
            blocks.append(UpBlock(cin, skip, widths[i], **kw))
            cin = widths[i]
        extra = []
        for w in widths[num_skip:]:
            extra.append(UpBlock(cin, 0, w, **kw))
            cin = w
        deepest = encoder_channels[-1]
        self.center = (
            nn.Sequential(ConvNormAct(deepest, deepest, norm, act), ConvNormAct(deepest, deepest, norm, act))
            if center
            else None
        )
        self.blocks = nn.ModuleList(blocks)
        self.extra = nn.ModuleList(extra)
        self.out_channels = cin
        self.widths = tuple(widths)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1] if self.center is None else self.center(features[-1])
        skips = features[-2::-1]
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip)
        for block in self.extra:
            x = block(x)
        return x


def build_unet(
    encoder,
    *,
    num_classes: int = 21,
    in_chans: int = 3,
    decoder_channels: Sequence[int] | None = None,
    upsample: Upsample = "bilinear",
    align_corners: bool = True,
    skip_first: bool = True,
    decoder_norm: str | None = None,
    decoder_act: str | None = "relu",
    head_kernel: int = 1,
    maxpool_quirk: bool = False,
    vgg_taps: str = "seed",
    decoder_center: bool = False,
    out_indices: Sequence[int] | None = None,
    drop_path_rate: float | None = None,
):
    """Builder of every ``unet-<encoder>`` model (see :class:`UnetDecoder` for the options).

    Args:
        encoder: the :class:`~unetzoo.registry.EncoderSpec` to build.
        num_classes: output channels (logits).
        in_chans: input channels.
        head_kernel: kernel of the final convolution (1 as in the seed, 3 as in smp).
        maxpool_quirk: torchvision ResNet only; see
            :class:`~unetzoo.encoders.torchvision.ResNetEncoder`.
        vgg_taps: torchvision VGG only: ``"seed"`` or ``"smp"`` (smp's feature taps); see
            :class:`~unetzoo.encoders.torchvision.VGGEncoder`.
        decoder_center: two 3x3 conv-norm-act layers on the deepest feature before the first
            block (smp's ``Unet`` adds this "center" block for VGG encoders).
        out_indices: timm only: which feature levels to tap.
        drop_path_rate: timm only: stochastic depth in the encoder.
    """
    from unetzoo.encoders import create_encoder
    from unetzoo.model import SegmentationModel

    options = {}
    if maxpool_quirk:
        if encoder.source != "torchvision" or encoder.name.startswith("vgg"):
            raise ValueError(
                f"maxpool_quirk=True applies only to torchvision ResNet encoders (unet-resnet50), not "
                f"{encoder.source} {encoder.name!r}; drop maxpool_quirk"
            )
        options["maxpool_quirk"] = True
    if vgg_taps != "seed":
        if encoder.source != "torchvision" or not encoder.name.startswith("vgg"):
            raise ValueError(
                f"vgg_taps applies only to torchvision VGG encoders (unet-vgg16), not {encoder.source} "
                f"{encoder.name!r}; drop vgg_taps, or use out_indices to pick a timm encoder's feature taps"
            )
        options["taps"] = vgg_taps
    for key, value in (("out_indices", out_indices), ("drop_path_rate", drop_path_rate)):
        if value is not None:
            if encoder.source != "timm":
                raise ValueError(f"{key} applies only to timm encoders, not {encoder.source} {encoder.name!r}")
            options[key] = value
    enc = create_encoder(encoder, in_chans=in_chans, **options)
    decoder = UnetDecoder(
        enc.channels,
        enc.reductions,
        decoder_channels,
        upsample=upsample,
        align_corners=align_corners,
        skip_first=skip_first,
        norm=decoder_norm,
        act=decoder_act,
        center=decoder_center,
    )
    if head_kernel < 1 or head_kernel % 2 == 0:  # an even kernel would shift the logits by half a pixel
        raise ValueError(f"head_kernel must be a positive odd number (1, 3, ...), got {head_kernel}")
    head = nn.Conv2d(decoder.out_channels, num_classes, head_kernel, padding=head_kernel // 2)
    return SegmentationModel(enc, decoder, head)
