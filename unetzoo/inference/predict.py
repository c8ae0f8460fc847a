"""``unetzoo.predict``: tiled inference on images of any size."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import torch
from torch import nn

from unetzoo._modes import evaluating, fixed_input_size, param_dtype
from unetzoo.inference.source import ImageSource, as_sources
from unetzoo.inference.stitch import LabelBand, ScoreCanvas
from unetzoo.inference.tiling import AxisPlan, plan_padded_axis, plan_valid_axis

__all__ = ["predict", "plan_tiles", "DEFAULT_TILE", "DEFAULT_VALID_TILE"]

Output = Literal["logits", "probs", "labels"]
TileSize = int | tuple[int, int]

#: default tile of padded-convolution networks
DEFAULT_TILE = 512
#: default tile of valid-convolution networks: the 2015 paper's 572x572 (388x388 out)
DEFAULT_VALID_TILE = 572
# flips averaged by test-time augmentation: none, horizontal, vertical, both
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def flip_averaged(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, flips: tuple[tuple[int, ...], ...] = TTA_FLIPS
) -> torch.Tensor:
    """The mean over ``flips`` of ``forward`` on the flipped ``x``, each output flipped back (float32).

    ``forward`` maps an ``N x C x H x W`` batch to outputs of the same height and width; with the
    single flip ``()`` this is ``forward(x).float()``.
    """
    total = None
    for dims in flips:
        y = forward(x.flip(dims) if dims else x).float()
        y = y.flip(dims) if dims else y
        total = y if total is None else total.add_(y)
    return total / len(flips) if len(flips) > 1 else total


def predict(
    model: nn.Module,
    image: np.ndarray | torch.Tensor,
    *,
    tile: TileSize | None = None,
    overlap: int | None = None,
    batch_size: int = 2,
    output: Output = "logits",
    tta: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray | torch.Tensor:
    """Segment an image of any size tile by tile; memory is bounded by the tile, not the image.

    Memory: the result (``C x H x W`` float32 scores, or ``H x W`` labels), the caller's image
    (never converted as a whole) and one batch of tiles. Labels are made band by band, without
    ever holding the whole image's scores.

    Valid-convolution networks (``model.border > 0``, e.g. ``unet-original``) use the 2015
    paper's overlap-tile strategy: the missing context at the image border is mirrored, and
    the output tiles tile the image exactly. Tiles are placed on the network's pooling grid,
    so the result *equals* one run of the network over the whole mirror-padded image (each
    572 px tile contributes 384 of its 388 output pixels to stay on the 16 px grid).

    Padded-convolution networks use overlapping tiles whose predictions are cross-faded with a
    raised-cosine ramp over the overlap. With an overlap at least as large as the distance over
    which zero padding at a tile edge disturbs the prediction, the result matches whole-image
    inference closely (see tests/test_inference.py for the measured tolerance). ``unet-classic``
    is the exception at sizes that are not multiples of 16: like milesial's network it pads each
    upsampled map back to its skip's size, centred, which shifts the whole decoder map by a
    pixel in a way tiles of another size cannot reproduce (logits differ by up to about 1e-2
    at odd sizes, about 2e-4 at even ones).

    Input conventions: numpy arrays are ``HxW`` or ``HxWxC``, tensors ``CxHxW`` or
    ``NxCxHxW``. Integer images (uint8, uint16) are scaled to ``[0, 1]`` and normalised with
    :func:`unetzoo.transforms_for` (the statistics saved with the model, else its pretrained
    weights', else ImageNet's); floating-point images are used as they are (already normalised;
    ``unetzoo predict`` normalises float TIFFs read from disk, taking them as ``[0, 1]`` intensities).

    Args:
        model: a unetzoo network (any module mapping ``(N, C, h, w)`` to class scores).
        image: the image, see above.
        tile: network input size, an int or ``(h, w)``. Default 512 (padded networks, a
            multiple of ``model.pad_multiple``) or 572 (valid networks; must be a valid input size).
        overlap: minimum overlap of neighbouring tiles (padded networks only); default tile // 4 (at most
            tile less the output stride, which windows aligned to the stride can keep).
        batch_size: tiles per forward pass.
        output: ``"logits"`` (blended logits), ``"probs"`` (blended softmax, or sigmoid for one
            class) or ``"labels"`` (argmax of the blended probabilities; uint8 up to 256 classes).
        tta: average over horizontal, vertical and both flips (4 passes per tile).
        device: where the network runs; the model is moved there. Default: the model's device.
        dtype: autocast dtype for the forward passes (``torch.bfloat16`` is several times faster
            than float32 on CPUs with AMX/AVX-512-BF16); accumulation is always float32. Faster
            still: pass ``unetzoo.optimize_for_inference(model)`` and leave ``dtype`` None (its
            weights are already bf16 where that is fast; 62 s instead of 277 s for an 8192² image
            through unet-resnet50 on the 2-core AMX CPU, ``benchmarks/bench_tiled.py``).
        progress: show a tqdm progress bar over tiles.

    Returns:
        The same kind as the input: numpy for numpy, a tensor (on the input's device) for a
        tensor. Scores are channels-first: ``(C, H, W)``, or ``(N, C, H, W)`` for a batch;
        labels are ``(H, W)`` or ``(N, H, W)``.

    Example:
        >>> model = unetzoo.create("unet-resnet18", num_classes=3)
        >>> labels = unetzoo.predict(model, np.zeros((1500, 2100, 3), np.uint8), output="labels")
        >>> labels.shape, labels.dtype
        ((1500, 2100), dtype('uint8'))
    """
    if output not in ("logits", "probs", "labels"):
        raise ValueError(f"output must be 'logits', 'probs' or 'labels', got {output!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sources, layout = as_sources(image, model)
    run_device = _run_device(model, device)
    plans = [plan_tiles(model, s.height, s.width, tile=tile, overlap=overlap) for s in sources]
    activation = None if output == "logits" else _activation(model)
    forward = _Forward(model, run_device, dtype, tta, activation)
    from tqdm.auto import tqdm

    with evaluating(model):  # each submodule's own mode back afterwards (a hand-frozen norm stays so)
        # no_grad, not inference_mode: the results are ordinary tensors (soft targets for a
        # loss, edited in place) for every input layout
        with torch.no_grad(), tqdm(
            total=sum(len(py) * len(px) for py, px in plans), unit="tile", desc="predict", disable=not progress
        ) as bar:
            results = [
                _predict_one(forward, s, py, px, batch_size, output == "labels", bar.update)
                for s, (py, px) in zip(sources, plans)
            ]
    return _finish(results, layout)


def _tile_size(tile: TileSize | None) -> tuple[int | None, int | None]:
    """``tile`` as (height, width): one whole number for a square, or two."""
    if tile is None:
        return None, None
    try:
        return (operator.index(tile),) * 2  # numpy integers too
    except TypeError:
        pass
    try:
        th, tw = (operator.index(t) for t in tile)
    except (TypeError, ValueError):
        raise ValueError(f"tile must be a whole number or (height, width), e.g. tile=512, got {tile!r}") from None
    return th, tw


def plan_tiles(
    model: nn.Module, height: int, width: int, *, tile: TileSize | None = None, overlap: int | None = None
) -> tuple[AxisPlan, AxisPlan]:
    """The tile grid :func:`predict` uses for a ``height`` x ``width`` image (rows, columns)."""
    th, tw = _tile_size(tile)
    if any(t is not None and t <= 0 for t in (th, tw)):
        raise ValueError(f"tile must be a positive size, got {tile}")
    border = int(getattr(model, "border", 0) or 0)
    if border > 0:
        if overlap:
            raise ValueError(
                f"overlap does not apply to valid-convolution networks (border={border}): neighbouring input tiles "
                f"already overlap by 2 * border = {2 * border} px of context; leave overlap=None"
            )
        align = _downsampling(model)
        th, tw = th or DEFAULT_VALID_TILE, tw or DEFAULT_VALID_TILE
        for t in dict.fromkeys((th, tw)):
            _check_valid_tile(model, t, border, align)
        return plan_valid_axis(height, th, border, align), plan_valid_axis(width, tw, border, align)
    multiple = int(getattr(model, "pad_multiple", None) or 1)
    align = int(getattr(model, "output_stride", None) or multiple)
    fixed = fixed_input_size(model)  # ViT, Swin: one input size
    if fixed is not None:
        if (th, tw) not in ((None, None), tuple(fixed)):
            raise ValueError(f"this model's backbone only accepts {fixed[0]}x{fixed[1]} inputs, so its tiles must be "
                             f"that size; use tile={fixed[0] if fixed[0] == fixed[1] else tuple(fixed)} or leave it unset")
        th, tw = fixed
    th, tw = th or DEFAULT_TILE, tw or DEFAULT_TILE
    # the default overlap, a quarter of the tile, as far as the alignment grid lets windows overlap
    oh, ow = (min(th // 4, th - align), min(tw // 4, tw - align)) if overlap is None else (overlap, overlap)
    exact, smallest = fixed is not None, int(getattr(model, "min_input_size", 1) or 1)
    return (plan_padded_axis(height, th, oh, multiple, align, fixed=exact, smallest=smallest),
            plan_padded_axis(width, tw, ow, multiple, align, fixed=exact, smallest=smallest))


def _check_valid_tile(model: nn.Module, tile: int, border: int, align: int) -> None:
    """A tile the network accepts (``model.output_size`` names the nearest valid sizes) and whose
    output covers at least one step of the pooling grid; the error names the smallest such tile."""
    accepts = getattr(model, "output_size", None)
    if accepts is not None:
        accepts(tile)  # raises ValueError with the nearest valid sizes
    if tile - 2 * border >= align:
        return
    smallest = 2 * border + align
    if accepts is not None:
        smallest = next((t for t in range(smallest, smallest + 64 * align) if _accepts(accepts, t)), smallest)
    raise ValueError(
        f"tile {tile} is too small for this network: it outputs {tile - 2 * border} px per tile, fewer than "
        f"its down-sampling factor {align}; the smallest tile that works is {smallest}"
    )


def _accepts(output_size, n: int) -> bool:
    try:
        output_size(n)
    except ValueError:
        return False
    return True


def _downsampling(model: nn.Module) -> int:
    """Total down-sampling factor of a valid-convolution network (tile positions align to it)."""
    factor = getattr(model, "output_stride", None) or getattr(model, "pad_multiple", None)
    if not factor:
        raise ValueError(
            f"{type(model).__name__} has border={model.border} but declares no output_stride (its total "
            "down-sampling factor, e.g. 16 for four 2x2 poolings); tiled inference needs it to keep the "
            "tiles on the network's pooling grid"
        )
    return int(factor)


def _run_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        device = torch.device(device)
        model.to(device)
        return device
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _activation(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Scores -> probabilities: softmax, sigmoid for one class, nothing if the network ends in one."""
    if isinstance(getattr(model, "activation", None), (nn.Sigmoid, nn.Softmax)):
        return lambda y: y  # e.g. unet-strided with sigmoid=True already outputs probabilities
    if getattr(model, "num_classes", None) == 1:
        return torch.sigmoid
    return lambda y: torch.softmax(y, dim=1)


class _Forward:
    """One batch of tiles through the network: autocast, optional flip TTA, activation."""

    def __init__(self, model, device, dtype, tta: bool, activation) -> None:
        self.model, self.device, self.activation = model, device, activation
        self.flips = TTA_FLIPS if tta else ((),)
        use_autocast = dtype is not None and dtype != torch.float32
        self.autocast = (
            (lambda: torch.autocast(device.type, dtype=dtype)) if use_autocast else contextlib.nullcontext
        )
        # a model kept in bfloat16/float16 (from_pretrained restores the saved dtype) takes its own
        # dtype; an optimize_for_inference model casts its inputs itself, and autocast casts them too
        own = param_dtype(model)
        plain = getattr(model, "inference_options", None) is None and not use_autocast
        self.input_dtype = own if plain and own != torch.float32 else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return flip_averaged(self._one, x.to(self.device, self.input_dtype, non_blocking=True), self.flips)

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            y = self.model(x)
        y = y.float()
        return self.activation(y) if self.activation is not None else y


def _batches(py: AxisPlan, px: AxisPlan, size: int) -> Iterator[list[tuple[int, int]]]:
    tiles = [(i, j) for i in range(len(py)) for j in range(len(px))]
    for k in range(0, len(tiles), size):
        yield tiles[k : k + size]


def _predict_one(
    forward: _Forward, src: ImageSource, py: AxisPlan, px: AxisPlan, batch_size: int, labels: bool, update
) -> torch.Tensor:
    """Scores (C, H, W) or labels (H, W) of one image, stitched tile batch by tile batch."""
    sink = (LabelBand if labels else ScoreCanvas)(py, px, src.device)
    expected = (py.window - 2 * py.border, px.window - 2 * px.border)
    for batch in _batches(py, px, batch_size):
        x = torch.stack([src.tile(py.indices(i), px.indices(j), (py.window, px.window)) for i, j in batch])
        y = forward(x)
        if tuple(y.shape[-2:]) != expected:
            raise RuntimeError(
                f"the network turned {py.window}x{px.window} tiles into {tuple(y.shape[-2:])} outputs, expected "
                f"{expected} (border={py.border}); check the model's border attribute"
            )
        for (i, j), yt in zip(batch, y.to(src.device)):
            sink.add(yt, i, j)
        update(len(batch))
    return sink.finish()


def _finish(scores: list[torch.Tensor], layout: str) -> np.ndarray | torch.Tensor:
    if layout == "nchw":
        return torch.stack(scores)
    return scores[0].numpy() if layout == "numpy" else scores[0]
