"""CPU bfloat16 training: the two kernels unetzoo routes around, and what that gives the demo.

PyTorch's CPU kernels are slow in two places of a bfloat16-autocast, channels-last training
step of the demo's model (``unet-efficientnet_lite0``, GroupNorm decoder 128-64-32-16):

* group norm on channels-last tensors. unetzoo's ``GroupNorm`` (what ``decoder_norm="gn"``
  builds) runs it in the default layout and converts the result back;
* the backward pass of depthwise convolutions in bfloat16. The trainer computes them in float32
  (``unetzoo.train.depthwise.float32_depthwise``).

This times, side by side in one run, forward + backward of each such layer at the demo's shapes
(batch 4 of 128x128 crops) with torch's kernel and with unetzoo's route, then the demo's whole
training step (forward, loss, backward, AdamW step) with neither, with the group norm only, and
with both, and what each keeps for the backward pass. Times are the fastest of interleaved calls
(the least disturbed on a shared machine).

    python benchmarks/bench_cpu_bf16_training.py > benchmarks/results/cpu_bf16_training.md
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import unetzoo
from unetzoo.bench.hardware import machine_info
from unetzoo.bench.measure import fastest_interleaved, saved_activation_bytes
from unetzoo.decoders.unet import GroupNorm
from unetzoo.train.depthwise import float32_depthwise

CL = torch.channels_last
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)
# (channels, side) of the demo decoder's group norms for 128x128 crops, deepest first
DEMO_SHAPES = [(128, 8), (64, 16), (32, 32), (16, 64), (16, 128)]
# (channels, input side, kernel, stride) of depthwise convolutions in the demo's encoder
DEPTHWISE_SHAPES = [(32, 64, 3, 1), (96, 64, 3, 2), (144, 32, 5, 2), (240, 16, 5, 1), (672, 8, 5, 1), (1152, 4, 5, 1)]


def _layer_step(layer: nn.Module, x: torch.Tensor):
    def step():
        x.grad = None
        with torch.autocast(**BF16):
            y = layer(x)
        y.float().sum().backward()
    return step


def _input(batch: int, channels: int, side: int) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(batch, channels, side, side, dtype=torch.bfloat16).contiguous(memory_format=CL)
    return x.requires_grad_(True)


def norm_rows(batch: int, rounds: int) -> list[tuple]:
    rows = []
    for channels, side in DEMO_SHAPES:
        x = _input(batch, channels, side)
        groups = min(32, channels)
        best = fastest_interleaved({"torch": _layer_step(nn.GroupNorm(groups, channels), x),
                                    "unetzoo": _layer_step(GroupNorm(groups, channels), x)}, rounds)
        rows.append((channels, side, best["torch"] * 1e3, best["unetzoo"] * 1e3))
    return rows


def depthwise_rows(batch: int, rounds: int) -> list[tuple]:
    rows = []
    for channels, side, kernel, stride in DEPTHWISE_SHAPES:
        x = _input(batch, channels, side)
        convs = []
        for _ in range(2):
            torch.manual_seed(0)
            convs.append(nn.Conv2d(channels, channels, kernel, stride, kernel // 2, groups=channels, bias=False)
                         .to(memory_format=CL))
        float32_depthwise(convs[1])
        best = fastest_interleaved({"bf16": _layer_step(convs[0], x), "fp32": _layer_step(convs[1], x)}, rounds)
        rows.append((channels, side, kernel, stride, best["bf16"] * 1e3, best["fp32"] * 1e3))
    return rows


def _with_torch_group_norm(model: nn.Module) -> nn.Module:
    """The same model with every unetzoo ``GroupNorm`` replaced by ``torch.nn.GroupNorm`` (same weights)."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, GroupNorm):
                plain = nn.GroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
                plain.load_state_dict(child.state_dict())
                setattr(module, child_name, plain)
    return model


VARIANTS = {
    "torch's kernels": dict(group_norm=False, depthwise=False),
    "+ unetzoo GroupNorm": dict(group_norm=True, depthwise=False),
    "+ float32 depthwise (the trainer)": dict(group_norm=True, depthwise=True),
}


def train_step_times(batch: int, size: int, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds per training step and MiB of saved activations, per variant."""
    steps, saved = {}, {}
    for label, how in VARIANTS.items():
        torch.manual_seed(0)
        model = unetzoo.create("unet-efficientnet_lite0", num_classes=2, decoder_channels=[128, 64, 32, 16],
                               decoder_norm="gn", align_corners=False)
        if not how["group_norm"]:
            _with_torch_group_norm(model)
        if how["depthwise"]:
            float32_depthwise(model)
        model = model.train().to(memory_format=CL)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(batch, 3, size, size).contiguous(memory_format=CL)
        y = torch.randint(0, 2, (batch, size, size))

        def forward_backward(model=model, x=x, y=y):
            with torch.autocast(**BF16):
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()

        def step(model=model, opt=opt, forward_backward=forward_backward):
            opt.zero_grad(set_to_none=True)
            forward_backward()
            opt.step()
        steps[label] = step
        saved[label] = saved_activation_bytes(model, forward_backward) / 2**20
        model.zero_grad(set_to_none=True)
    return {k: v * 1e3 for k, v in fastest_interleaved(steps, rounds).items()}, saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="training crop side")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved calls per variant (layers)")
    parser.add_argument("--step-rounds", type=int, default=8, help="interleaved training steps per variant")
    args = parser.parse_args(argv)
    info = machine_info()
    print("# CPU bfloat16 training: group norm and depthwise convolutions\n")
    print(f"Command: `python benchmarks/bench_cpu_bf16_training.py` — {info['date']}, {info['cpu']} "
          f"({info['cpu_cores']} cores, {info['cpu_flags']}), torch {info['torch']}, {info['torch_threads']} "
          "threads. Fastest of interleaved calls.\n")
    print(f"Group norm, forward + backward, batch {args.batch}, bfloat16 autocast, channels-last input:\n")
    print("| channels | side | torch.nn.GroupNorm ms | unetzoo GroupNorm ms | speed-up |")
    print("|---|---|---|---|---|")
    for channels, side, plain, ours in norm_rows(args.batch, args.rounds):
        print(f"| {channels} | {side} | {plain:.2f} | {ours:.2f} | {plain / ours:.2f}x |")
    print(f"\nDepthwise convolution, forward + backward, batch {args.batch}, bfloat16 autocast, channels-last:\n")
    print("| channels | side | kernel | stride | bf16 ms | float32 inside ms | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for channels, side, kernel, stride, bf16, fp32 in depthwise_rows(args.batch, args.rounds):
        print(f"| {channels} | {side} | {kernel} | {stride} | {bf16:.2f} | {fp32:.2f} | {bf16 / fp32:.2f}x |")
    times, saved = train_step_times(args.batch, args.size, args.step_rounds)
    print(f"\nThe demo's training step (unet-efficientnet_lite0, batch {args.batch}, {args.size}x{args.size}, "
          "bfloat16 autocast, channels-last, AdamW):\n")
    print("| kernels | ms per step | speed-up | saved activations MiB |")
    print("|---|---|---|---|")
    base = times["torch's kernels"]
    for label, ms in times.items():
        print(f"| {label} | {ms:.1f} | {base / ms:.2f}x | {saved[label]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
