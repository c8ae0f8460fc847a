"""The preprocessing pretrained weights expect: ``Preprocessing`` and ``transforms_for``.

A :class:`Preprocessing` is a small frozen record (mean, std, input size) that is also a
callable: it turns a ``uint8`` or ``[0, 1]`` float image into the normalised float tensor the
network was trained on. Data pipelines and :func:`unetzoo.predict` use it; checkpoints saved
with :func:`unetzoo.hub.save_pretrained` record it, so a reloaded model normalises its inputs
exactly as the model it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unetzoo.registry import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import torch
    from torch import nn

    from unetzoo.registry import WeightsSpec

__all__ = ["Preprocessing", "transforms_for"]


@dataclass(frozen=True)
class Preprocessing:
    """Per-channel normalisation, ``(x - mean) / std`` on images scaled to ``[0, 1]``.

    Attributes:
        mean, std: one value per input channel.
        input_size: ``(C, H, W)`` the weights were trained at (a hint for resizing; inputs
            of any size are accepted).

    Example:
        >>> pre = unetzoo.transforms_for("unet-efficientnet_lite0")
        >>> x = pre(torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8))  # float, normalised
        >>> batch = pre.normalize(images_in_0_1)                              # (N, C, H, W)
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_size: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean and std need one value per channel, got mean={self.mean} std={self.std}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")

    @property
    def num_channels(self) -> int:
        return len(self.mean)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a float tensor in ``[0, 1]`` with channels at dim -3 (``CxHxW`` or ``NxCxHxW``)."""
        import torch

        if not x.is_floating_point():
            raise TypeError(f"normalize() expects a float tensor in [0, 1], got {x.dtype}; call the object instead")
        if x.ndim < 3 or x.shape[-3] != self.num_channels:
            raise ValueError(
                f"expected {self.num_channels} channels at dim -3 (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}"
            )
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Scale a ``uint8`` (or 16-bit) image to ``[0, 1]`` and normalise; float images are taken
        as already scaled. 16-bit images are divided by 65535, as the training readers and
        :func:`unetzoo.predict` read 16-bit files."""
        import torch

        if image.dtype == torch.uint8:
            image = image.float().div_(255.0)
        elif image.dtype == getattr(torch, "uint16", None):  # torchvision.io reads 16-bit PNGs so
            image = image.float().div_(65535.0)
        elif not image.is_floating_point():
            raise TypeError(f"expected a uint8, 16-bit or float image tensor, got {image.dtype}; convert it with "
                            ".float() / its maximum value")
        return self.normalize(image)

    def for_channels(self, in_chans: int) -> Preprocessing:
        """The same statistics for ``in_chans`` inputs, matching how first convolutions are adapted.

        One channel gets the average of the statistics (a grey image); more channels repeat
        them cyclically, as :func:`unetzoo.encoders.base.adapt_input_conv` repeats kernels.
        """
        n = self.num_channels
        if in_chans == n:
            return self
        if in_chans == 1:
            mean, std = (sum(self.mean) / n,), (sum(self.std) / n,)
        else:
            mean = tuple(self.mean[i % n] for i in range(in_chans))
            std = tuple(self.std[i % n] for i in range(in_chans))
        size = None if self.input_size is None else (in_chans, *self.input_size[1:])
        return Preprocessing(mean, std, size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": None if self.input_size is None else list(self.input_size),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        size = data.get("input_size")
        return cls(tuple(data["mean"]), tuple(data["std"]), None if size is None else tuple(size))

    @classmethod
    def from_weights(cls, weights: WeightsSpec) -> Preprocessing:
        return cls(tuple(weights.mean), tuple(weights.std), tuple(weights.input_size))


def _for_name(name: str) -> Preprocessing:
    from unetzoo.registry import get_spec, parse_name

    spec = get_spec(name)
    _, tag = parse_name(name)
    in_chans = int(spec.defaults.get("in_chans", 3))
    default = Preprocessing().for_channels(in_chans)
    timm_backbone = spec.encoder is not None and spec.encoder.source == "timm"
    if tag is None and spec.default_tag is None and not timm_backbone:
        return default
    if (tag is None and spec.default_tag is not None) or tag in spec.tags:
        weights = spec.weights_for(tag)
    else:  # timm's tag, or for any timm backbone the weights pretrained=True loads (timm's default
        from unetzoo.weights.loader import resolve_weights  # tag: 0.5/0.5 for many ViTs)

        try:
            weights = resolve_weights(spec, tag)
        except ValueError:
            if tag is not None:
                raise
            return default  # a timm backbone without pretrained weights
    return Preprocessing.from_weights(weights).for_channels(in_chans)


def transforms_for(model_or_name: nn.Module | str) -> Preprocessing:
    """The preprocessing that matches a model or a model name.

    A model reloaded with :func:`unetzoo.from_pretrained` uses the preprocessing recorded in
    its ``config.json``; a model built with pretrained weights uses the weights' mean and std;
    a name uses the weights its tag (or the model's default tag) selects; anything else gets
    the ImageNet statistics. The statistics are adapted to the model's ``in_chans``.

    Args:
        model_or_name: a unetzoo model, or a name such as ``"unet-efficientnet_lite0"``.

    Returns:
        A :class:`Preprocessing`; call it on a ``CxHxW`` image, or use ``.normalize`` on batches.
    """
    if isinstance(model_or_name, str):
        return _for_name(model_or_name)
    recorded = getattr(model_or_name, "preprocessing", None)
    in_chans = int(getattr(model_or_name, "in_chans", 3))
    if isinstance(recorded, Preprocessing):
        return recorded.for_channels(in_chans)
    weights = getattr(model_or_name, "weights_spec", None)
    base = Preprocessing.from_weights(weights) if weights is not None else Preprocessing()
    return base.for_channels(in_chans)
