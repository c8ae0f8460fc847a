"""Stitching tile predictions into one result, with memory bounded by what is returned.

* :class:`ScoreCanvas` accumulates ``(C, H, W)`` float32 scores (logits or probabilities):
  the result itself is that large, so it is preallocated once and tiles are added in place.
* :class:`LabelBand` produces an ``(H, W)`` class map while holding scores only for a band
  of rows one tile high: tile rows arrive top to bottom, and rows above the current tile row
  are final, so they are turned into labels and the band moves down. For an 8192x8192 image
  with 2 classes and 512 px tiles that is 32 MB of scores instead of 512 MB.

Blending weights are separable, so their per-pixel sum is the outer product of two 1-D sums
(:func:`coverage`) and never takes a full-size array.
"""

from __future__ import annotations

import numpy as np
import torch

from unetzoo.inference.tiling import AxisPlan

__all__ = ["ScoreCanvas", "LabelBand", "coverage", "scores_to_labels"]


def coverage(plan: AxisPlan) -> torch.Tensor:
    """Sum of the blending weights along one axis (ones where tiles are not blended)."""
    total = np.zeros(plan.length) if plan.weights is not None else np.ones(plan.length)
    for i, w in enumerate(plan.weights or ()):
        s = plan.out_start(i)
        total[s : s + len(w)] += w
    return torch.as_tensor(total, dtype=torch.float32)


def scores_to_labels(scores: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """Class map ``(H, W)`` from probabilities ``(C, H, W)``: argmax, or ``p > 0.5`` for one class.

    Works band by band over rows, so no full-size temporary is made; the result is uint8 for up
    to 256 classes, int64 otherwise.
    """
    c, h, w = scores.shape
    out = torch.empty(h, w, dtype=torch.uint8 if c <= 256 else torch.int64, device=scores.device)
    for r in range(0, h, rows):
        band = scores[:, r : r + rows]
        out[r : r + rows] = (band[0] > 0.5) if c == 1 else band.argmax(0)
    return out


class _Stitcher:
    def __init__(self, py: AxisPlan, px: AxisPlan, device: torch.device) -> None:
        self.py, self.px, self.device = py, px, device
        self.cov_y, self.cov_x = coverage(py).to(device), coverage(px).to(device)

    def _tile_part(self, y: torch.Tensor, i: int, j: int) -> tuple[torch.Tensor, int, int]:
        """The kept, weighted part of tile ``(i, j)``'s output, and where it goes."""
        (ky, ny), (kx, nx) = self.py.keep[i], self.px.keep[j]
        part = y[:, ky : ky + ny, kx : kx + nx]
        if self.py.weights is not None:
            wy = torch.as_tensor(self.py.weights[i], dtype=part.dtype, device=part.device)
            wx = torch.as_tensor(self.px.weights[j], dtype=part.dtype, device=part.device)
            part = part * (wy[:, None] * wx[None, :])
        return part, self.py.out_start(i), self.px.out_start(j)

    def _place(self, region: torch.Tensor, part: torch.Tensor) -> None:
        if self.py.weights is None:
            region.copy_(part)  # overlap-tile: every pixel comes from exactly one tile
        else:
            region.add_(part)


class ScoreCanvas(_Stitcher):
    """Accumulates weighted tile scores into a preallocated ``(C, H, W)`` float32 tensor."""

    def __init__(self, py: AxisPlan, px: AxisPlan, device: torch.device) -> None:
        super().__init__(py, px, device)
        self.acc: torch.Tensor | None = None

    def add(self, y: torch.Tensor, i: int, j: int) -> None:
        if self.acc is None:
            self.acc = torch.zeros(y.shape[0], self.py.length, self.px.length, device=self.device)
        part, y0, x0 = self._tile_part(y, i, j)
        self._place(self.acc[:, y0 : y0 + part.shape[1], x0 : x0 + part.shape[2]], part)

    def finish(self) -> torch.Tensor:
        if self.py.weights is not None:
            self.acc.div_(self.cov_y.view(1, -1, 1)).div_(self.cov_x.view(1, 1, -1))
        return self.acc


class LabelBand(_Stitcher):
    """Turns tile scores (probabilities) into an ``(H, W)`` class map, one band of rows at a time.

    Tiles must arrive tile row by tile row, top to bottom (any order within a row).
    """

    def __init__(self, py: AxisPlan, px: AxisPlan, device: torch.device) -> None:
        super().__init__(py, px, device)
        self.band: torch.Tensor | None = None  # scores of image rows [top, top + window)
        self.top = 0
        self.row = 0
        self.labels: torch.Tensor | None = None

    def add(self, y: torch.Tensor, i: int, j: int) -> None:
        if self.band is None:
            self.band = torch.zeros(y.shape[0], self.py.window, self.px.length, device=self.device)
            dtype = torch.uint8 if y.shape[0] <= 256 else torch.int64
            self.labels = torch.empty(self.py.length, self.px.length, dtype=dtype, device=self.device)
        if i != self.row:
            self._advance(self.py.out_start(i))
            self.row = i
        part, y0, x0 = self._tile_part(y, i, j)
        r = y0 - self.top
        self._place(self.band[:, r : r + part.shape[1], x0 : x0 + part.shape[2]], part)

    def _advance(self, new_top: int) -> None:
        """Rows above ``new_top`` are final: label them and move the band down to ``new_top``."""
        done = new_top - self.top
        self._emit(done)
        carry = self.band.shape[1] - done
        self.band[:, :carry] = self.band[:, done:].clone()
        self.band[:, carry:] = 0
        self.top = new_top

    def _emit(self, n: int) -> None:
        rows = slice(self.top, self.top + n)
        scores = self.band[:, :n] / (self.cov_y[rows].view(1, -1, 1) * self.cov_x.view(1, 1, -1))
        self.labels[rows] = scores_to_labels(scores)

    def finish(self) -> torch.Tensor:
        self._emit(self.py.length - self.top)
        return self.labels
