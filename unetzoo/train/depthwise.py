"""Depthwise convolutions trained under CPU bfloat16 autocast, computed in float32.

PyTorch's CPU backward pass of a depthwise convolution (``groups == in_channels ==
out_channels``) is several times slower in bfloat16 than in float32, while its forward pass is
fast in both. In the demo's ``unet-efficientnet_lite0`` training step the depthwise backward
passes took over a third of the time. :func:`float32_depthwise` switches a model's depthwise
convolutions to subclasses of their own classes that, while autograd records them under CPU
autocast, step out of autocast for that one convolution: the input goes up to float32 and the
output comes back in autocast's dtype. Calls it does not record (validation, inference, a
frozen encoder) keep the bfloat16 kernel. Weights, checkpoint keys, ``isinstance`` checks and
other devices are unchanged; :func:`restore_depthwise` undoes it.
``benchmarks/bench_cpu_bf16_training.py`` measures the effect on the demo's training step.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["float32_depthwise", "restore_depthwise", "is_depthwise"]


class _Float32Depthwise:
    """Mixin placed before a convolution class: float32 computation under CPU autocast with grad."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
                and torch.is_autocast_enabled("cpu") and self.weight.dtype == torch.float32):
            dtype = torch.get_autocast_dtype("cpu")
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float()).to(dtype)
        return super().forward(x)


_SUBCLASSES: dict[type, type] = {}


def is_depthwise(module: nn.Module) -> bool:
    """A 2-d convolution with one filter per input channel (and as many outputs as inputs)."""
    return (isinstance(module, nn.Conv2d) and module.groups > 1
            and module.groups == module.in_channels == module.out_channels)


def _subclass(cls: type) -> type:
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"Float32{cls.__name__}", (_Float32Depthwise, cls), {"__module__": __name__})
    return _SUBCLASSES[cls]


def float32_depthwise(model: nn.Module) -> int:
    """Switch ``model``'s depthwise convolutions to float32 computation under CPU autocast with
    gradients (see the module docstring); returns how many were switched."""
    count = 0
    for module in model.modules():
        if is_depthwise(module) and not isinstance(module, _Float32Depthwise):
            module.__class__ = _subclass(type(module))
            count += 1
    return count


def restore_depthwise(model: nn.Module) -> int:
    """Undo :func:`float32_depthwise`; returns how many convolutions were switched back."""
    count = 0
    for module in model.modules():
        if isinstance(module, _Float32Depthwise):
            module.__class__ = type(module).__bases__[1]  # _subclass built it as (mixin, original)
            count += 1
    return count
