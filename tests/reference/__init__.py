"""Independent re-implementations of the reference U-Nets, in their ORIGINAL key layouts.

Written from the facts in shared/reference/SEED_SYSTEMS.md, without unetzoo code, so that the
parity tests compare unetzoo against a second, separate implementation: a checkpoint saved
from one of these networks must load into unetzoo and give the same outputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Signal-preserving random weights and non-trivial BatchNorm statistics.

    Convolutions get He-normal weights and random biases (so deep nets give outputs of order
    one, and a wrong layer shows up as a large difference); BatchNorm gets random affine
    parameters and running statistics far from (0, 1).
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.in_channels
            m.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
            if m.bias is not None:
                m.bias.normal_(0.0, 0.1, generator=gen)
        elif isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=gen))
            m.bias.copy_(0.1 * torch.randn(n, generator=gen))
            m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.num_batches_tracked.fill_(7)
    return model.eval()
