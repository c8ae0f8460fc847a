"""Batching samples of different sizes (e.g. whole validation images)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pad_collate"]


def pad_collate(
    batch: Sequence[tuple[Tensor, Tensor]], *, ignore_index: int = 255, multiple: int = 1, sizes: bool = False
) -> tuple[Tensor, ...]:
    """Stack ``(image, mask)`` samples of different sizes by padding at the bottom and right.

    Images are padded with 0 and masks with ``ignore_index``, so the padding counts in neither
    loss nor metrics. (The network still sees the zeros next to a smaller image, so its
    predictions there can change: evaluation asks for ``sizes`` and runs each size on its own.)

    Args:
        batch: samples ``(C x H x W image, H x W mask)``.
        ignore_index: mask value of the padding.
        multiple: round the padded size up to a multiple of this (e.g. 32 for a 5-stage encoder).
        sizes: also return each sample's ``(H, W)`` before padding, as an ``N x 2`` long tensor.

    Returns:
        ``(N x C x H x W images, N x H x W masks)``, plus the sizes if asked for.

    Example:
        >>> # evaluation: with the sizes, each image runs at its own size (scores do not depend on the batch)
        >>> loader = DataLoader(val, batch_size=4, collate_fn=functools.partial(pad_collate, sizes=True))
        >>> # training: one padded size per batch
        >>> loader = DataLoader(train, batch_size=4, collate_fn=functools.partial(pad_collate, multiple=32))
    """
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    height, width = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    images, masks = [], []
    for image, mask in batch:
        pad = (0, width - image.shape[-1], 0, height - image.shape[-2])
        images.append(F.pad(image, pad, value=0.0))
        masks.append(F.pad(mask, pad, value=ignore_index))
    if sizes:
        extents = torch.tensor([tuple(image.shape[-2:]) for image, _ in batch], dtype=torch.long)
        return torch.stack(images), torch.stack(masks), extents
    return torch.stack(images), torch.stack(masks)
