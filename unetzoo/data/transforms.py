"""Joint image/mask augmentation with torchvision.transforms.v2.

The datasets hand ``tv_tensors.Image`` and ``tv_tensors.Mask`` to the transform, so every
geometric step moves image and mask together: images are interpolated bilinearly, masks with
nearest neighbour (v2 does this for ``Mask`` by itself), and pixels that padding or rotation
invent get ``ignore_index`` in the mask so they count in neither loss nor metrics.

Randomness comes from torch's global generator: ``torch.manual_seed(s)`` (or a seeded
DataLoader, whose workers are seeded from it) makes the augmentation reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["Normalize", "RandomTranspose", "build_transforms"]

_BILINEAR = v2.InterpolationMode.BILINEAR  # images; v2 always resamples masks with nearest
# torchvision's legacy NEAREST resize picks source pixel floor(i * scale): half a pixel up and left of
# where the bilinear (pixel-centre) resize of the image puts it. NEAREST_EXACT picks by pixel centres.
_NEAREST_EXACT = v2.InterpolationMode.NEAREST_EXACT


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
                hint = " (or read the images with channels=3)" if len(mean) == 3 else ""
                raise ValueError(
                    f"normalisation has {len(mean)} values but the image has {channels} channel(s); "
                    f"pass 1 value or {channels}, one per channel{hint}"
                )
        m = torch.tensor(mean, dtype=inpt.dtype, device=inpt.device).view(-1, 1, 1)
        s = torch.tensor(std, dtype=inpt.dtype, device=inpt.device).view(-1, 1, 1)
        return tv_tensors.wrap((inpt - m) / s, like=inpt)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


class RandomTranspose(v2.Transform):
    """Swap height and width (a reflection about the main diagonal) with probability ``p``.

    With horizontal and vertical flips at probability 0.5 each, a transpose at 0.5 makes every
    one of the square's 8 symmetries (the 90-degree rotations and the reflections) equally
    likely: lossless rotation augmentation for data with no preferred orientation, such as
    microscopy. Images and masks move together; boxes and key points are refused, since
    swapping their tensor axes would not transpose them.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p}")
        self.p = p

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        for inpt in flat_inputs:
            if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.KeyPoints)):
                raise TypeError(f"RandomTranspose handles images and masks only, not {type(inpt).__name__}")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"apply": bool(torch.rand(()) < self.p)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"] or not isinstance(inpt, torch.Tensor):
            return inpt
        out = inpt.transpose(-1, -2).contiguous()
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    def extra_repr(self) -> str:
        return f"p={self.p}"


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
    transpose: float = 0.0,
    rotation: float = 0.0,
    elastic: float = 0.0,
    elastic_alpha: float = 30.0,
    elastic_sigma: float = 5.0,
    color_jitter: float = 0.0,
    blur: float = 0.0,
    blur_sigma: tuple[float, float] = (0.3, 1.0),
    ignore_index: int = 255,
) -> v2.Compose:
    """The joint image/mask pipeline for training or evaluation.

    Training, in order: an elastic deformation of the whole image (with probability
    ``elastic``), transpose, random scale (with ``size``: the image is resized by a factor drawn
    from ``scale``, relative to its own size, then rotated by up to ``rotation`` degrees, and a
    ``size`` crop is taken, padding with 0 / ``ignore_index`` where needed; without ``size``:
    a random zoom by ``scale`` and the rotation, keeping the canvas), flips, colour jitter,
    Gaussian blur of the image alone (with probability ``blur``), normalisation.
    Evaluation: resize to ``size`` when given (else untouched), normalisation.

    Args:
        train: training (random) or evaluation (deterministic) pipeline.
        mean: normalisation means, e.g. ``unetzoo.transforms_for(model).mean``; ``None``
            (with ``std=None``) leaves images in [0, 1] (the seed projects' ``image / 255``).
        std: normalisation standard deviations.
        size: training crop / evaluation resize, an int or ``(h, w)``; ``None`` keeps sizes.
        scale: ``(min, max)`` of the random scale factor, relative to the image's own size
            (evaluation runs at that size, 1.0); ``None`` disables scaling.
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        transpose: probability of swapping height and width (:class:`RandomTranspose`; with
            both flips at 0.5 and this at 0.5, all 8 symmetries of the square are equally likely).
        rotation: maximum rotation in degrees (0 disables it).
        elastic: probability of an elastic deformation (the original U-Net paper's main
            augmentation; ``v2.ElasticTransform``, pixels pulled in from outside the image get
            0 / ``ignore_index``).
        elastic_alpha: its displacement strength (``v2.ElasticTransform``'s ``alpha``).
        elastic_sigma: its smoothness, the Gaussian's standard deviation in pixels.
        color_jitter: strength of brightness/contrast/saturation jitter (0 disables it).
        blur: probability of blurring the image (not the mask) with a Gaussian whose standard
            deviation is drawn from ``blur_sigma``: out-of-focus microscopy images, say.
        blur_sigma: the ``(min, max)`` range of that standard deviation, in pixels.
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
        if elastic > 0:
            deform = _Elastic(alpha=elastic_alpha, sigma=elastic_sigma, interpolation=_BILINEAR, fill=fill)
            steps.append(v2.RandomApply([deform], p=elastic))
        if transpose > 0:  # before the crop, so that a non-square crop keeps its (h, w)
            steps.append(RandomTranspose(transpose))
        steps += _geometric(size, scale, rotation, fill)
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(hflip))
        if vflip > 0:
            steps.append(v2.RandomVerticalFlip(vflip))
        if color_jitter > 0:
            steps.append(_UnitRange("color_jitter"))
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
        if blur > 0:
            steps.append(v2.RandomApply([_gaussian_blur(blur_sigma)], p=blur))
    elif size is not None:
        steps.append(_Resize(_pair(size), antialias=True))
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ValueError("give both mean and std, or neither")
        steps.append(Normalize(mean, std))
    return _Joint(steps)


class _Joint(v2.Compose):
    """``v2.Compose`` that treats a plain ``(image, mask)`` pair as one: v2 transforms only the
    first plain tensor of a call, so a custom dataset passing two tensors would flip the image
    and not its mask. Such a pair is wrapped as ``tv_tensors.Image`` / ``tv_tensors.Mask``."""

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) == 2 and not any(isinstance(x, tv_tensors.TVTensor) for x in inputs):
            image, mask = inputs
            if not (isinstance(image, torch.Tensor) and isinstance(mask, torch.Tensor)):
                raise TypeError(
                    f"the transform takes (image, mask) as torch tensors (C x H x W and H x W) or tv_tensors, got "
                    f"({type(image).__name__}, {type(mask).__name__}); convert numpy arrays with "
                    "torch.from_numpy (an H x W x C image with .permute(2, 0, 1))"
                )
            inputs = (tv_tensors.Image(image), tv_tensors.Mask(mask))
        return super().forward(*inputs)


class _Resize(v2.Resize):
    """``v2.Resize`` that resamples masks by pixel centres, as the image's bilinear resize does."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return v2.functional.resize(inpt, self.size, interpolation=_NEAREST_EXACT, max_size=self.max_size)
        return super().transform(inpt, params)


class _RandomScale(v2.Transform):
    """Resize image and mask by one factor drawn uniformly from ``scale_range``, relative to the
    image's own size (1.0 keeps it); masks are resampled by pixel centres, as the image's
    bilinear resize does. (``v2.ScaleJitter`` scales relative to a target size instead: with
    the crop size as target, every image shrank to about the crop, while evaluation ran at the
    images' own scale.)"""

    def __init__(self, scale_range: Sequence[float]) -> None:
        super().__init__()
        low, high = (float(s) for s in scale_range)
        self.scale_range = (low, high)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        low, high = self.scale_range
        factor = low + float(torch.rand(())) * (high - low)
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return v2.functional.resize(inpt, params["size"], interpolation=_NEAREST_EXACT)
        if isinstance(inpt, (tv_tensors.Image, torch.Tensor)):
            return v2.functional.resize(inpt, params["size"], interpolation=_BILINEAR, antialias=True)
        return inpt

    def extra_repr(self) -> str:
        return f"scale_range={self.scale_range}"


class _UnitRange(v2.Transform):
    """Refuse images outside [0, 1] before a step that would clip them (training only, so
    training and inference would see different pixels): float TIFFs of raw intensities, say."""

    def __init__(self, step: str) -> None:
        super().__init__()
        self.step = step

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # a little slack: interpolation may overshoot [0, 1] by a few ulps
        if isinstance(inpt, tv_tensors.Image) and inpt.numel() and (inpt.min() < -0.01 or inpt.max() > 1.01):
            raise ValueError(
                f"{self.step} needs images in [0, 1], but one spans [{float(inpt.min()):.4g}, "
                f"{float(inpt.max()):.4g}] (a float image of raw values?); scale the images to [0, 1] or set "
                f"data.transforms.{self.step}=0"
            )
        return inpt


class _Elastic(v2.ElasticTransform):
    """``v2.ElasticTransform`` that also takes images no bigger than about 4 sigma a side.

    torchvision smooths the displacement field with a Gaussian kernel of ``8 * sigma + 1``
    pixels and reflect padding, which fails on a side of ``4 * sigma`` pixels or less (20 px at
    the default sigma of 5). Such images get the largest sigma they can take instead: the same
    random numbers are drawn, so the size does not change what later samples get.
    """

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        limit = (min(height, width) - 1) / 4.0  # the kernel's half-width 4 * sigma stays under the side
        sigma = self.sigma
        if max(sigma) <= limit:
            return super().make_params(flat_inputs)
        self.sigma = [min(s, limit) for s in sigma]
        try:
            return super().make_params(flat_inputs)
        finally:
            self.sigma = sigma


def _gaussian_blur(sigma: Sequence[float]) -> v2.GaussianBlur:
    if len(sigma) != 2 or not 0 < sigma[0] <= sigma[1]:
        raise ValueError(f"blur_sigma must be (min, max) with 0 < min <= max, got {tuple(sigma)}")
    low, high = float(sigma[0]), float(sigma[1])
    radius = max(1, math.ceil(3 * high))  # the kernel reaches 3 standard deviations
    return v2.GaussianBlur(2 * radius + 1, sigma=(low, high))  # images only: v2 passes masks through


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
        steps.append(_RandomScale(scale))
    if rotation > 0:
        steps.append(v2.RandomRotation(rotation, interpolation=_BILINEAR, fill=fill))
    steps.append(v2.RandomCrop(crop, pad_if_needed=True, fill=fill))
    return steps
