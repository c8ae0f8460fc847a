"""Is the decoder's ``cat([upsample(x), skip])`` worth avoiding? Measure the alternatives.

For each U-Net decoder block of unet-resnet50 at 512x512 (smp-like widths, nearest x2, and the
seed's widths, bilinear x2) this times, in channels-last float32 on the CPU:

* ``interp+cat``   — what unetzoo (and smp, and the seed) do: ``F.interpolate`` then ``torch.cat``;
* ``prealloc``     — one channels-last buffer; nearest x2 written straight into its first
  channels by a single strided copy, the skip copied into the rest (one pass less over the
  upsampled tensor); bilinear: ``F.interpolate`` then a copy into the buffer;
* ``split-conv``   — no concatenation at all: ``conv(cat(a, b)) = conv_a(a) + conv_b(b)``
  (two convolutions on the split weight), timed with the block's first convolution included
  (the other two variants get the same convolution on the concatenated tensor).

A second table times what training does with the block's first convolution: forward and
backward (input and weight gradients) under bfloat16 autocast, channels-last, batch 8 at 256x256,
for ``torch.cat`` + one ``nn.Conv2d`` against :class:`unetzoo.decoders.unet.ConcatConv2d`'s
split path (per-part convolutions on slices of the same weight, parts cut to at most 1024
input channels) — the measurement behind ``ConcatConv2d``.

Times are the fastest of many interleaved calls (the least disturbed on a shared machine).

    python benchmarks/bench_decoder_copies.py > benchmarks/results/decoder_copies.md
"""

from __future__ import annotations

import argparse
import datetime as dt

import torch
import torch.nn.functional as F

from unetzoo.bench.hardware import cpu_line
from unetzoo.bench.measure import fastest_interleaved

CL = torch.channels_last
# (channels of x, channels of the skip, side of the skip, out channels) for 512x512 inputs
SMP_BLOCKS = [(2048, 1024, 32, 256), (256, 512, 64, 128), (128, 256, 128, 64), (64, 64, 256, 32)]
SEED_BLOCKS = [(2048, 1024, 32, 512), (512, 512, 64, 256), (256, 256, 128, 128), (128, 64, 256, 64)]


def interp_cat(x, skip, mode):
    up = F.interpolate(x, size=skip.shape[-2:], mode=mode, **({"align_corners": True} if mode == "bilinear" else {}))
    return torch.cat([up, skip], 1)


def prealloc(x, skip, mode):
    n, c, h, w = x.shape
    out = torch.empty((n, c + skip.shape[1], 2 * h, 2 * w), dtype=x.dtype, memory_format=CL)
    if mode == "nearest":
        dst = out[:, :c].unflatten(2, (h, 2)).unflatten(4, (w, 2))  # (n, c, h, 2, w, 2) view
        dst.copy_(x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2))
    else:
        out[:, :c].copy_(F.interpolate(x, scale_factor=2, mode=mode, align_corners=True))
    out[:, c:].copy_(skip)
    return out


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    print(f"`python benchmarks/bench_decoder_copies.py` on {cpu_line()}, "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Each figure is the fastest of interleaved calls.\n")
    print("| decoder | block (x -> skip) | interp+cat ms | prealloc ms | with conv: cat ms | split-conv ms |")
    print("|---|---|---|---|---|---|")
    for name, blocks, mode in (("smp-like", SMP_BLOCKS, "nearest"), ("seed", SEED_BLOCKS, "bilinear")):
        for cx, cs, side, cout in blocks:
            x = torch.randn(1, cx, side // 2, side // 2).contiguous(memory_format=CL)
            skip = torch.randn(1, cs, side, side).contiguous(memory_format=CL)
            conv = torch.nn.Conv2d(cx + cs, cout, 3, padding=1).to(memory_format=CL).eval()
            conv_a = torch.nn.Conv2d(cx, cout, 3, padding=1).to(memory_format=CL).eval()
            conv_b = torch.nn.Conv2d(cs, cout, 3, padding=1, bias=False).to(memory_format=CL).eval()
            with torch.no_grad():
                conv_a.weight.copy_(conv.weight[:, :cx])
                conv_b.weight.copy_(conv.weight[:, cx:])
                conv_a.bias.copy_(conv.bias)
                ref, alt = interp_cat(x, skip, mode), prealloc(x, skip, mode)
                assert torch.equal(ref, alt), "prealloc must give the same tensor"
                def up(x=x, skip=skip, mode=mode):
                    return F.interpolate(x, size=skip.shape[-2:], mode=mode,
                                         **({"align_corners": True} if mode == "bilinear" else {}))

                copies = fastest_interleaved({"cat": lambda: interp_cat(x, skip, mode),
                                              "pre": lambda: prealloc(x, skip, mode)}, 40)
                convs = fastest_interleaved({"cat": lambda: conv(interp_cat(x, skip, mode)),
                                             "split": lambda: conv_a(up()) + conv_b(skip)}, 10)
                t_cat, t_pre, t_conv, t_split = copies["cat"], copies["pre"], convs["cat"], convs["split"]
            print(f"| {name} | {cx}@{side // 2} -> {cs}@{side} | {1e3 * t_cat:.2f} | {1e3 * t_pre:.2f} | "
                  f"{1e3 * t_conv:.1f} | {1e3 * t_split:.1f} |")


def train_table() -> None:
    from unetzoo.decoders.unet import ConcatConv2d

    print()
    print("| decoder (batch 8, 256x256, bf16 autocast) | block (x -> skip) | cat + conv fwd+bwd ms | split fwd+bwd ms | speed-up |")
    print("|---|---|---|---|---|")
    for name, blocks, mode in (("smp-like", SMP_BLOCKS, "nearest"), ("seed", SEED_BLOCKS, "bilinear")):
        for cx, cs, side, cout in blocks:
            side //= 2  # the blocks above are for 512x512 inputs
            x = torch.randn(8, cx, side, side).contiguous(memory_format=CL)
            skip = torch.randn(8, cs, side, side).contiguous(memory_format=CL)
            split = ConcatConv2d((cx, cs), cout, 3).to(memory_format=CL)
            conv = torch.nn.Conv2d(cx + cs, cout, 3, padding=1).to(memory_format=CL)
            conv.load_state_dict(split.state_dict())

            def step(fn):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = fn()
                out.float().sum().backward()

            # both inputs need their gradient, as in training (the skip comes from the encoder)
            x.requires_grad_(True)
            skip.requires_grad_(True)
            best = fastest_interleaved({"cat": lambda: step(lambda: conv(torch.cat([x, skip], 1))),
                                        "split": lambda: step(lambda: split([x, skip]))}, 5)
            print(f"| {name} | {cx}@{side} -> {cs}@{side} | {1e3 * best['cat']:.1f} | {1e3 * best['split']:.1f} | "
                  f"{best['cat'] / best['split']:.2f}x |")


if __name__ == "__main__":
    main()
    train_table()
