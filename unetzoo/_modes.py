"""Run a module in eval mode for a while and leave every submodule's mode as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
