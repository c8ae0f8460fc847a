"""Joint image/mask augmentation with torchvision.transforms.v2.

The datasets hand ``tv_tensors.Image`` and ``tv_tensors.Mask`` to the transform, so every
geometric step moves image and mask together: images are interpolated bilinearly, masks with
nearest neighbour (v2 does this for ``Mask`` by itself), and pixels that padding or rotation
invent get ``ignore_index`` in the mask so they count in neither loss nor metrics.

Randomness comes from torch's global generator: ``torch.manual_seed(s)`` (or a seeded
DataLoader, whose workers are seeded from it) makes the augmentation reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["Normalize", "build_transforms"]

_BILINEAR = v2.InterpolationMode.BILINEAR  # images; v2 always resamples masks with nearest


class Normalize(v2.Transform):
    """``(image - mean) / std`` on images only, checked against the number of channels.

    Unlike ``v2.Normalize`` this refuses 3-value statistics on a 1-channel image (broadcasting
    would silently turn it into 3 channels) unless ``grey_from_rgb`` is set, which uses the
    average of the RGB statistics: right for encoders whose first conv was adapted to one
    channel by summing the RGB filters.

    Args:
        mean: per-channel means (1 value, or one per channel).
        std: per-channel standard deviations.
        grey_from_rgb: allow 3-value statistics on 1-channel images (averaged).
    """

    # images, and a lone plain tensor (which v2 treats as the image); never masks
    _transformed_types = (tv_tensors.Image, lambda x: type(x) is torch.Tensor)

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, grey_from_rgb: bool = True) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {list(mean)} vs {list(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be positive, got {list(std)}")
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.grey_from_rgb = grey_from_rgb

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        channels = inpt.shape[-3]
        mean, std = self.mean, self.std
        if len(mean) not in (1, channels):
            if channels == 1 and self.grey_from_rgb:
                mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
            else:
                raise ValueError(
                    f"normalisation has {len(mean)} values but the image has {channels} channel(s); "
                    "pass statistics with one value per channel (or read images with channels=3)"
                )
        m = torch.tensor(mean, dtype=inpt.dtype, device=inpt.device).view(-1, 1, 1)
        s = torch.tensor(std, dtype=inpt.dtype, device=inpt.device).view(-1, 1, 1)
        return tv_tensors.wrap((inpt - m) / s, like=inpt)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def build_transforms(
    train: bool,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    size: int | Sequence[int] | None = None,
    scale: tuple[float, float] | None = (0.5, 2.0),
    hflip: float = 0.5,
    vflip: float = 0.0,
    rotation: float = 0.0,
    color_jitter: float = 0.0,
    ignore_index: int = 255,
) -> v2.Compose:
    """The joint image/mask pipeline for training or evaluation.

    Training, in order: random scale (with ``size``: the image is resized to fit ``size``
    times a factor drawn from ``scale``, then a ``size`` crop is taken, padding with 0 /
    ``ignore_index`` where needed; without ``size``: a random zoom by ``scale`` keeping the
    canvas), rotation by up to ``rotation`` degrees, flips, colour jitter, normalisation.
    Evaluation: resize to ``size`` when given (else untouched), normalisation.

    Args:
        train: training (random) or evaluation (deterministic) pipeline.
        mean: normalisation means, e.g. ``unetzoo.transforms_for(model).mean``; ``None``
            (with ``std=None``) leaves images in [0, 1] (the seed projects' ``image / 255``).
        std: normalisation standard deviations.
        size: training crop / evaluation resize, an int or ``(h, w)``; ``None`` keeps sizes.
        scale: range of the random scale factor; ``None`` disables scaling.
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rotation: maximum rotation in degrees (0 disables it).
        color_jitter: strength of brightness/contrast/saturation jitter (0 disables it).
        ignore_index: mask value for pixels created by padding or rotation.

    Returns:
        A ``v2.Compose`` called as ``transform(image, mask)``.

    Example:
        >>> t = build_transforms(True, mean=(0.5,), std=(0.25,), size=128, rotation=15)
        >>> image, mask = SegmentationFolder("unetzoo/assets/nuclei", transform=t)[0]
    """
    fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: ignore_index}
    steps: list[v2.Transform] = [v2.ToDtype(torch.float32, scale=True)]  # images only; masks keep their dtype
    if train:
        steps += _geometric(size, scale, rotation, fill)
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(hflip))
        if vflip > 0:
            steps.append(v2.RandomVerticalFlip(vflip))
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    elif size is not None:
        steps.append(v2.Resize(_pair(size), antialias=True))
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ValueError("give both mean and std, or neither")
        steps.append(Normalize(mean, std))
    return v2.Compose(steps)


def _geometric(
    size: int | Sequence[int] | None,
    scale: tuple[float, float] | None,
    rotation: float,
    fill: dict[Any, Any],
) -> list[v2.Transform]:
    steps: list[v2.Transform] = []
    if size is None:
        if scale is not None or rotation > 0:
            steps.append(v2.RandomAffine(degrees=rotation, scale=scale, interpolation=_BILINEAR, fill=fill))
        return steps
    crop = _pair(size)
    if scale is not None:
        steps.append(v2.ScaleJitter(crop, scale_range=tuple(scale), antialias=True))
    if rotation > 0:
        steps.append(v2.RandomRotation(rotation, interpolation=_BILINEAR, fill=fill))
    steps.append(v2.RandomCrop(crop, pad_if_needed=True, fill=fill))
    return steps
