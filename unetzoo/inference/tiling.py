"""Tile geometry: where the tiles go and how their predictions are weighted.

Tiles form a regular grid, the Cartesian product of a plan per axis (:class:`AxisPlan`), so
everything here is one-dimensional. Two strategies:

* **overlap-tile** (:func:`plan_valid_axis`) for valid-convolution networks such as the 2015
  U-Net, whose output is the input minus ``border`` pixels per side. Input windows reach
  ``border`` pixels past the image (supplied by mirroring), and each tile keeps the first
  ``stride`` pixels of its output, where ``stride`` is the output size rounded down to a
  multiple of the network's total down-sampling factor. The kept blocks tile the image
  exactly, and every tile is aligned with the pooling grid of one network run over the whole
  mirror-padded image, so the stitched result *equals* that run.
* **blended** (:func:`plan_padded_axis`) for padded-convolution networks (same-size output):
  overlapping tiles whose predictions are cross-faded with a raised-cosine ramp over the
  overlap; pixels covered by a single tile take that tile's prediction unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["AxisPlan", "plan_valid_axis", "plan_padded_axis", "reflect_indices", "cosine_ramp"]


@dataclass(frozen=True)
class AxisPlan:
    """The tiles along one axis.

    Attributes:
        length: the image length along this axis.
        window: length of every input window (the network's input size along this axis).
        starts: start of each input window in image coordinates; positions outside
            ``[0, length)`` are filled by mirroring (``pad="reflect"``) or zeros (``pad="zeros"``).
        border: pixels the network loses on each side (output = window - 2 * border).
        keep: ``(first, count)`` per tile: the slice of the tile's output that is used.
        weights: per-tile blending weights over the kept slice; ``None`` = every kept pixel is
            written by exactly one tile (no blending).
        pad: how out-of-image input pixels are filled.
    """

    length: int
    window: int
    starts: tuple[int, ...]
    border: int
    keep: tuple[tuple[int, int], ...]
    weights: tuple[np.ndarray, ...] | None
    pad: str

    def __len__(self) -> int:
        return len(self.starts)

    def out_start(self, i: int) -> int:
        """Image coordinate of the first kept output pixel of tile ``i``."""
        return self.starts[i] + self.border + self.keep[i][0]

    def indices(self, i: int) -> np.ndarray:
        """Image indices of the input window of tile ``i``, mirrored (reflect) or clipped (zeros)."""
        idx = np.arange(self.starts[i], self.starts[i] + self.window)
        if self.pad == "reflect":
            return reflect_indices(idx, self.length)
        return idx[(idx >= 0) & (idx < self.length)]


def reflect_indices(idx: np.ndarray, n: int) -> np.ndarray:
    """Map indices to ``[0, n)`` by mirroring without repeating the edge (``numpy.pad`` "reflect").

    Indices any distance outside are folded repeatedly, so windows may be larger than the image.
    """
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def cosine_ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp of ``n`` strictly positive weights rising towards 1.

    ``ramp + ramp[::-1] == 1``, so two tiles that cross-fade over the same ``n`` pixels sum to 1.
    """
    k = np.arange(n, dtype=np.float64) + 0.5
    return 0.5 - 0.5 * np.cos(np.pi * k / n)


def plan_valid_axis(length: int, tile: int, border: int, align: int) -> AxisPlan:
    """Overlap-tile plan for a valid-convolution network.

    Args:
        length: image length.
        tile: network input size (must be a valid input size of the network).
        border: pixels lost per side; the network outputs ``tile - 2 * border``.
        align: total down-sampling factor of the network (16 for the 2015 U-Net); tile
            positions are multiples of it so that every tile sees the pooling grid of a single
            whole-image run.

    Raises:
        ValueError: if the output of one tile is smaller than ``align``.
    """
    out = tile - 2 * border
    stride = out - out % align
    if stride <= 0:
        raise ValueError(
            f"tile {tile} is too small for this network: it outputs {out} px per tile, fewer than its "
            f"down-sampling factor {align}; use a tile of at least {2 * border + align} px that the network accepts"
        )
    n = math.ceil(length / stride)
    starts = tuple(i * stride - border for i in range(n))
    keep = tuple((0, min(stride, length - i * stride)) for i in range(n))
    return AxisPlan(length, tile, starts, border, keep, None, "reflect")


def plan_padded_axis(length: int, tile: int, overlap: int, multiple: int = 1, align: int | None = None,
                     *, fixed: bool = False, smallest: int = 1) -> AxisPlan:
    """Blended plan for a padded-convolution network (output size = input size).

    The image is virtually extended with zeros to a multiple of ``multiple`` (as the network
    itself pads a whole image), windows start at multiples of ``align`` (so each tile sees the
    same pooling grid as a whole-image run; the last window may end flush with the image
    instead) and neighbours overlap by at least ``overlap``.

    Args:
        length: image length.
        tile: window length, a multiple of ``multiple``; images shorter than it use one window
            of the (extended) image's length, but at least ``align``.
        overlap: minimum overlap between neighbouring windows; predictions are cross-faded over
            the actual overlap with :func:`cosine_ramp`.
        multiple: the multiple the network pads its input to (``model.pad_multiple``).
        align: the network's total down-sampling factor; default ``multiple``.
        fixed: every window is exactly ``tile`` long, zero-padded past a shorter image (backbones
            built for one input size, such as ViT and Swin).
        smallest: the shortest input the network runs (``model.min_input_size``): a shorter
            image gets a zero-padded window of at least this length, on the ``multiple`` grid.
    """
    align = align or multiple
    if tile % multiple:
        lo = max(multiple, tile - tile % multiple)
        raise ValueError(
            f"tile {tile} is not a multiple of the network's down-sampling factor {multiple}; "
            f"use {lo} or {lo + multiple}"
        )
    if tile < align:  # windows would step further than they reach: gaps between tiles
        raise ValueError(f"tile {tile} is smaller than the network's down-sampling factor {align}; "
                         f"use a tile of at least {align}")
    least = math.ceil(smallest / multiple) * multiple
    if tile < least:
        raise ValueError(f"tile {tile} is smaller than the smallest input the network runs ({smallest} px); use a "
                         f"tile of at least {least}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be between 0 and tile - 1 = {tile - 1}, got {overlap}")
    if overlap > tile - align:  # windows start on the align grid: they cannot overlap by more
        raise ValueError(f"overlap {overlap} is more than tile {tile} less one down-sampling step ({align}) allows; "
                         f"use an overlap of at most {tile - align}, or a larger tile")
    extended = math.ceil(length / multiple) * multiple
    # images smaller than one pooling cell (or than the one size a fixed-size backbone takes) are zero-padded
    window = tile if fixed else min(tile, max(extended, align, least))
    step = max(align, (window - overlap) // align * align)
    n = 1 if extended <= window else math.ceil((extended - window) / step) + 1
    starts = tuple(max(0, min(i * step, extended - window)) for i in range(n))
    keep, weights = [], []
    for i, s in enumerate(starts):
        count = min(window, length - s)  # the zero extension is never kept
        w = np.ones(count)
        if i > 0:
            ov = starts[i - 1] + window - s
            w[:ov] = cosine_ramp(ov)
        if i < n - 1:
            ov = min(s + window - starts[i + 1], count)
            w[count - ov :] *= cosine_ramp(ov)[::-1]
        keep.append((0, count))
        weights.append(w)
    return AxisPlan(length, window, starts, 0, tuple(keep), tuple(weights), "zeros")
