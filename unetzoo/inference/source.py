"""Turning user images into network input, one tile at a time.

An :class:`ImageSource` wraps the caller's array without converting it as a whole: a
uint8 8192x8192 RGB image stays 200 MB instead of becoming an 800 MB float copy. Each tile is
cut out (mirrored or zero-filled outside the image), converted to float and normalised on
its own.

Input conventions (see :func:`unetzoo.predict`):

* numpy ``HxW`` or ``HxWxC`` (channels last);
* torch ``CxHxW`` or ``NxCxHxW`` (channels first);
* integer images (uint8, uint16, ...) are scaled to ``[0, 1]`` by their dtype's maximum and
  normalised with :func:`unetzoo.transforms_for` (the statistics recorded with a saved model,
  else those of its pretrained weights, else ImageNet's); floating-point images are used as
  they are (already normalised).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ImageSource", "as_sources", "normalization_for"]


def normalization_for(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std for integer images: :func:`unetzoo.transforms_for`, the library's one source.

    That is the preprocessing recorded with a saved model, else its pretrained weights' statistics,
    else ImageNet's, adapted to ``model.in_chans``: the same normalisation the training pipeline uses.
    """
    from unetzoo.weights import transforms_for

    pre = transforms_for(model)
    return tuple(pre.mean), tuple(pre.std)


def _fit_channels(values: Sequence[float], channels: int) -> tuple[float, ...]:
    """Per-channel statistics for ``channels`` channels (averaged for grey, cycled otherwise)."""
    values = tuple(values)
    if len(values) == channels:
        return values
    if channels == 1:
        return (sum(values) / len(values),)
    return tuple(values[i % len(values)] for i in range(channels))


class ImageSource:
    """One image (numpy HxW[xC] or torch CxHxW) that hands out normalised float tiles.

    Args:
        data: the image; numpy arrays are channels-last, tensors channels-first.
        norm: ``(mean, std)`` applied after scaling integer images to ``[0, 1]``.
    """

    def __init__(self, data: np.ndarray | torch.Tensor, norm: tuple[Sequence[float], Sequence[float]] | None) -> None:
        self.data = data
        self.channels_last = isinstance(data, np.ndarray)
        if self.channels_last:
            self.height, self.width = data.shape[:2]
            self.channels = 1 if data.ndim == 2 else data.shape[2]
            integer = np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_
            self.scale = float(np.iinfo(data.dtype).max) if np.issubdtype(data.dtype, np.integer) else 1.0
        else:
            self.channels, self.height, self.width = data.shape
            integer = not data.is_floating_point()
            self.scale = float(torch.iinfo(data.dtype).max) if integer and data.dtype != torch.bool else 1.0
        self.integer = integer
        self.norm = None
        if integer and norm is not None:
            mean, std = (_fit_channels(v, self.channels) for v in norm)
            self.norm = (torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if self.channels_last else self.data.device

    def tile(self, rows: np.ndarray, cols: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """The float (C, h, w) tile at image ``rows`` x ``cols``, zero-filled to ``size``.

        ``rows`` and ``cols`` are image indices (already mirrored where needed); when they are
        shorter than ``size`` the tile is padded with zeros at the bottom/right, after
        normalisation, as the network itself pads a whole image.
        """
        t = self._take(rows, cols)
        t = t.float()
        if self.integer:
            t = t / self.scale
            if self.norm is not None:
                mean, std = self.norm
                t = (t - mean.to(t.device)) / std.to(t.device)
        ph, pw = size[0] - t.shape[-2], size[1] - t.shape[-1]
        if ph or pw:
            t = F.pad(t, (0, pw, 0, ph))
        return t

    def _take(self, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
        if self.channels_last:
            a = _index(_index(self.data, rows, 0), cols, 1)
            a = np.ascontiguousarray(a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0))
            if not a.dtype.isnative:  # e.g. big-endian '>u2' from FITS files: torch takes native order only
                return torch.from_numpy(a.astype(a.dtype.newbyteorder("=")))
            return torch.from_numpy(a if a.flags.writeable else a.copy())  # e.g. a view of a PIL buffer
        t = _index(_index(self.data, rows, 1), cols, 2)
        return t.contiguous()


def _index(a, idx: np.ndarray, axis: int):
    """``a`` indexed by ``idx`` along ``axis``: a view for contiguous runs, a gather otherwise."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1 and np.all(np.diff(idx) == 1):
        sl = [slice(None)] * a.ndim
        sl[axis] = slice(int(idx[0]), int(idx[-1]) + 1)
        return a[tuple(sl)]
    if isinstance(a, np.ndarray):
        return np.take(a, idx, axis=axis)
    return a.index_select(axis, torch.as_tensor(idx, device=a.device))


def _is_integer(image: np.ndarray | torch.Tensor) -> bool:
    if isinstance(image, np.ndarray):
        return not np.issubdtype(image.dtype, np.floating)
    return isinstance(image, torch.Tensor) and not image.is_floating_point()


def as_sources(image: np.ndarray | torch.Tensor, model: torch.nn.Module) -> tuple[list[ImageSource], str]:
    """Wrap ``image`` as a list of sources and say how to shape the result.

    Returns:
        the sources and the layout of the input: ``"numpy"`` (one image), ``"chw"`` (one
        image as a 3-d tensor) or ``"nchw"`` (a batch).

    Raises:
        ValueError: on shapes or channel counts the model cannot take, naming the fix.
    """
    in_chans = getattr(model, "in_chans", None)
    norm = normalization_for(model) if _is_integer(image) else None
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"expected a numpy image HxW or HxWxC, got shape {image.shape}")
        sources, layout = [ImageSource(image, norm)], "numpy"
    elif isinstance(image, torch.Tensor):
        if image.ndim == 3:
            sources, layout = [ImageSource(image, norm)], "chw"
        elif image.ndim == 4:
            sources, layout = [ImageSource(x, norm) for x in image], "nchw"
        else:
            raise ValueError(f"expected a tensor CxHxW or NxCxHxW, got shape {tuple(image.shape)}")
    else:
        raise TypeError(f"expected a numpy array or a torch.Tensor, got {type(image).__name__}")
    for s in sources:
        if in_chans is not None and s.channels != in_chans:
            where = "HxWxC (channels last)" if layout == "numpy" else "CxHxW (channels first)"
            raise ValueError(
                f"the image has {s.channels} channel(s) but the model takes {in_chans}; numpy images are read as "
                f"{where}: convert the image (e.g. to {'grey' if in_chans == 1 else 'RGB'}) or build the model "
                f"with in_chans={s.channels}"
            )
    return sources, layout
