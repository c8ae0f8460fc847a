"""An exponential moving average (EMA) of a model's weights, for evaluation and checkpoints.

Small data sets fine-tuned with small batches give noisy last-step weights; averaging the
weights of the last few hundred steps (Polyak averaging) smooths that noise away at no
training cost. :class:`WeightEMA` keeps an averaged copy of the model, updated after every
optimizer step; the trainer evaluates and saves the copy while it trains the original.

The decay warms up as ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates, so that the
average forgets the (random) initial decoder quickly in short runs. Floating-point buffers
(norm-layer running statistics) are averaged like the parameters; integer buffers
(``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["WeightEMA"]


class WeightEMA:
    """The running average ``avg <- decay * avg + (1 - decay) * weights`` of ``model``.

    Args:
        model: the model being trained; an independent copy is made (not trained, eval mode).
        decay: the average's decay per update, in [0, 1); 0.99 remembers about 100 steps.

    Example:
        >>> ema = WeightEMA(model, decay=0.99)
        >>> for batch in loader:
        ...     train_step(model, batch)
        ...     ema.update(model)
        >>> evaluate(ema.module, val_loader, num_classes=2)
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}; 0.99 averages about the last 100 steps")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @staticmethod
    def warmed_decay(decay: float, updates: int) -> float:
        """The decay used after ``updates`` updates: ``min(decay, (1 + t) / (10 + t))``."""
        return min(decay, (1.0 + updates) / (10.0 + updates))

    @staticmethod
    def warmup_steps(decay: float) -> int:
        """Updates after which the warm-up reaches ``decay`` ((1 + t) / (10 + t) >= decay)."""
        return max(0, math.ceil(round((10 * decay - 1) / (1 - decay), 6)))

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses (warmed up over the first updates)."""
        return self.warmed_decay(self.decay, self.updates)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights and buffers (same architecture)."""
        weight = 1.0 - self.current_decay()
        averaged, current = [], []
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            new = source[name]
            if value.is_floating_point():
                averaged.append(value)
                current.append(new.detach().to(value.dtype))
            else:
                value.copy_(new)
        if averaged:
            torch._foreach_lerp_(averaged, current, weight)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """Tensors and numbers only (loads with ``torch.load(weights_only=True)``)."""
        return {
            "decay": self.decay,
            "updates": self.updates,
            "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])
