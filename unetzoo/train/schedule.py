"""Learning-rate schedules: linear warm-up, then cosine or polynomial decay, stepped per batch."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from unetzoo.train.config import ScheduleSection

__all__ = ["WarmupDecay", "build_scheduler"]


class WarmupDecay:
    """The learning-rate factor at optimizer step ``step`` (multiplies each group's base lr).

    Linear from ``warmup_start`` to 1 over ``warmup_steps``, then from 1 down to ``min_ratio``
    over the remaining steps: half a cosine (``"cosine"``), ``(1 - t) ** power`` (``"poly"``,
    the DeepLab schedule) or flat (``"constant"``).

    Only numbers and a name are stored, so ``LambdaLR.state_dict()`` (which saves this object's
    ``__dict__``) loads with ``torch.load(weights_only=True)``.
    """

    def __init__(
        self,
        total_steps: int,
        *,
        name: str = "cosine",
        warmup_steps: int = 0,
        warmup_start: float = 0.01,
        min_ratio: float = 0.0,
        power: float = 0.9,
    ) -> None:
        if name not in ("cosine", "poly", "constant"):
            raise ValueError(f"schedule {name!r} is not supported; choose 'cosine', 'poly' or 'constant'")
        self.name = name
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = min(max(int(warmup_steps), 0), self.total_steps)
        self.warmup_start = float(warmup_start)
        self.min_ratio = float(min_ratio)
        self.power = float(power)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            t = step / self.warmup_steps
            return self.warmup_start + (1.0 - self.warmup_start) * t
        if self.name == "constant":
            return 1.0
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        t = min((step - self.warmup_steps) / decay_steps, 1.0)
        if self.name == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * t))
        else:
            shape = (1.0 - t) ** self.power
        return self.min_ratio + (1.0 - self.min_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleSection, *, steps_per_epoch: int, epochs: int
) -> LambdaLR:
    """A per-step :class:`~torch.optim.lr_scheduler.LambdaLR` for ``epochs`` epochs.

    Example:
        >>> sched = build_scheduler(opt, ScheduleSection("cosine", warmup_epochs=1), steps_per_epoch=10, epochs=5)
        >>> for batch in loader: ...; opt.step(); sched.step()
    """
    factor = WarmupDecay(
        steps_per_epoch * epochs,
        name=cfg.name,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        warmup_start=cfg.warmup_start,
        min_ratio=cfg.min_lr_ratio,
        power=cfg.power,
    )
    return LambdaLR(optimizer, factor)
