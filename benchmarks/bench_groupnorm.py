"""Group norm on channels-last CPU tensors: torch's kernel against unetzoo's ``GroupNorm``.

``unetzoo.decoders.unet.GroupNorm`` (what ``decoder_norm="gn"`` builds) hands a channels-last
CPU input to PyTorch's group norm in the default layout and converts the result back. This
measures why, side by side in one run:

* per decoder block of the demo's model (``unet-efficientnet_lite0``, decoder widths 128-64-32-16,
  batch 4 of 128x128 crops, bfloat16 autocast): forward + backward of one group norm, with
  ``torch.nn.GroupNorm`` and with unetzoo's;
* the demo's whole training step (forward, loss, backward, AdamW step) with every decoder
  group norm swapped for ``torch.nn.GroupNorm``, against the model as built.

Times are the fastest of interleaved calls (the least disturbed on a shared machine).

    python benchmarks/bench_groupnorm.py > benchmarks/results/groupnorm.md
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

import unetzoo
from unetzoo.bench.hardware import machine_info
from unetzoo.decoders.unet import GroupNorm

CL = torch.channels_last
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)
# (channels, side) of the demo decoder's group norms for 128x128 crops, deepest first
DEMO_SHAPES = [(128, 8), (64, 16), (32, 32), (16, 64), (16, 128)]


def _best(fns: dict, rounds: int) -> dict:
    """Fastest of ``rounds`` calls of each function, interleaved (so a busy spell hits all alike)."""
    best = {k: float("inf") for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def _norm_step(norm: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    def step():
        x.grad = None
        with torch.autocast(**BF16):
            y = norm(x)
        y.backward(grad)
    return step


def norm_rows(batch: int, rounds: int) -> list[tuple]:
    rows = []
    for channels, side in DEMO_SHAPES:
        torch.manual_seed(0)
        x = torch.randn(batch, channels, side, side, dtype=torch.bfloat16).contiguous(memory_format=CL)
        x.requires_grad_(True)
        grad = torch.randn_like(x)
        groups = min(32, channels)
        fns = {"torch": _norm_step(nn.GroupNorm(groups, channels), x, grad),
               "unetzoo": _norm_step(GroupNorm(groups, channels), x, grad)}
        best = _best(fns, rounds)
        rows.append((channels, side, best["torch"] * 1e3, best["unetzoo"] * 1e3))
    return rows


def _with_torch_group_norm(model: nn.Module) -> nn.Module:
    """The same model with every unetzoo ``GroupNorm`` replaced by ``torch.nn.GroupNorm`` (same weights)."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, GroupNorm):
                plain = nn.GroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
                plain.load_state_dict(child.state_dict())
                setattr(module, child_name, plain)
    return model


def train_step_times(batch: int, size: int, rounds: int) -> dict[str, float]:
    steps = {}
    for label in ("torch", "unetzoo"):
        torch.manual_seed(0)
        model = unetzoo.create("unet-efficientnet_lite0", num_classes=2, decoder_channels=[128, 64, 32, 16],
                               decoder_norm="gn", align_corners=False)
        if label == "torch":
            _with_torch_group_norm(model)
        model = model.train().to(memory_format=CL)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(batch, 3, size, size).contiguous(memory_format=CL)
        y = torch.randint(0, 2, (batch, size, size))

        def step(model=model, opt=opt, x=x, y=y):
            with torch.autocast(**BF16):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        steps[label] = step
    best = _best(steps, rounds)
    return {k: v * 1e3 for k, v in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="training crop side")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved calls per variant (norms)")
    parser.add_argument("--step-rounds", type=int, default=8, help="interleaved training steps per variant")
    args = parser.parse_args(argv)
    info = machine_info()
    print("# Group norm on channels-last CPU tensors\n")
    print(f"Command: `python benchmarks/bench_groupnorm.py` — {info['date']}, {info['cpu']} ({info['cpu_cores']} "
          f"cores, {info['cpu_flags']}), torch {info['torch']}, {info['torch_threads']} threads. "
          "Fastest of interleaved calls.\n")
    print(f"One group norm, forward + backward, batch {args.batch}, bfloat16 autocast, channels-last input:\n")
    print("| channels | side | torch.nn.GroupNorm ms | unetzoo GroupNorm ms | speed-up |")
    print("|---|---|---|---|---|")
    for channels, side, plain, ours in norm_rows(args.batch, args.rounds):
        print(f"| {channels} | {side} | {plain:.2f} | {ours:.2f} | {plain / ours:.2f}x |")
    times = train_step_times(args.batch, args.size, args.step_rounds)
    print(f"\nThe demo's training step (unet-efficientnet_lite0, batch {args.batch}, {args.size}x{args.size}, "
          "bfloat16 autocast, channels-last, AdamW):\n")
    print("| decoder group norm | ms per step |")
    print("|---|---|")
    print(f"| torch.nn.GroupNorm | {times['torch']:.1f} |")
    print(f"| unetzoo GroupNorm | {times['unetzoo']:.1f} |")
    print(f"\nspeed-up of the training step: {times['torch'] / times['unetzoo']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
