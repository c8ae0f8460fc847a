"""The state a model runs in: eval mode for a while (every submodule's mode restored after), its dtype,
the one input size of a backbone built for one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block; afterwards each submodule gets back its own
    ``training`` flag (not ``module.train(mode)``, which would wake frozen stages that a
    model keeps in eval mode)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes.items():
            m.training = mode


def param_dtype(module: nn.Module, default: torch.dtype | None = torch.float32) -> torch.dtype | None:
    """The dtype of ``module``'s first floating-point parameter, or ``default`` if it has none."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), default)


def fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The one input size ``(h, w)`` of a model whose backbone takes only that (timm's ViT, Swin,
    DeiT: ``encoder.fixed_input_size``), else ``None``."""
    return getattr(getattr(model, "encoder", None), "fixed_input_size", None)
