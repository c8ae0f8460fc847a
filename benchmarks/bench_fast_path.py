"""The measurements behind unetzoo's CPU speed-ups: ``ConcatConv2d``, the oneDNN-fused fast
path, the allocator tuning and the lerp upsampling.

Five tables, each timed as the median of 5 calls after 2 warm-up calls, with denormals flushed
as in the harness (table 4 in child processes, the others in this one):

1. oneDNN's convolution weight gradient (bf16, channels-last, batch 8, 16x16, 3x3 -> 512
   channels) against the number of input channels: why ``ConcatConv2d`` cuts its parts to at
   most 1024 channels;
2. a bf16 training step of unet-resnet50 (batch 8, 256x256, channels-last autocast, fused
   AdamW) with the decoder's split first convolution and with it forced back to
   ``torch.cat`` + one convolution;
3. ``optimize_for_inference`` at 512x512 batch 1 with ``mkldnn=False`` / ``True``: bfloat16
   for unet-resnet50 and unet-vgg16, float32 for unet-resnet50 (why it is on for bf16 only);
4. glibc's allocator as it comes against :mod:`unetzoo.cpu_memory`'s tuning (freed memory kept
   for reuse), for the bf16 fast path (512x512 b1) and a bf16 training step (256x256 b8) of
   unet-resnet50 and unet-vgg16. The setting is process-wide, so each column runs in its own
   child process (``UNETZOO_CPU_ALLOCATOR=default`` / ``tuned``; 3 of each, alternating,
   medians reported), plus cloning a 32 MiB tensor
   (which allocates) against copying into an existing one;
5. ATen's bf16 bilinear 2x upsampling against ``upsample2x_bilinear`` at the seed decoder's
   shapes and inside unet-resnet50's fast path.

Tables 1-3 and 5 run with the tuned allocator (unetzoo's default on CPUs).

    python benchmarks/bench_fast_path.py > benchmarks/results/fast_path.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys

import torch
import torch.nn.functional as F

CL = torch.channels_last


def _ms(fn, warmup: int = 2, repeats: int = 5) -> float:
    from unetzoo.bench.measure import time_callable

    return 1e3 * time_callable(fn, warmup=warmup, repeats=repeats).median


def weight_grad_table() -> None:
    print("| input channels | weight-gradient ms | TFLOP/s |")
    print("|---:|---:|---:|")
    for cin in (512, 768, 1024, 1536, 2048, 3072):
        x = torch.randn(8, cin, 16, 16, dtype=torch.bfloat16).contiguous(memory_format=CL)
        w = torch.randn(512, cin, 3, 3, dtype=torch.bfloat16).contiguous(memory_format=CL)
        go = torch.randn(8, 512, 16, 16, dtype=torch.bfloat16).contiguous(memory_format=CL)
        ms = _ms(lambda: torch.ops.aten.convolution_backward(
            go, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]))
        print(f"| {cin} | {ms:.1f} | {2 * 8 * 16 * 16 * 512 * cin * 9 / ms / 1e9:.2f} |")


@contextlib.contextmanager
def _concatenating_decoder():
    """``ConcatConv2d`` as a plain convolution over ``torch.cat`` (what the decoder did before)."""
    from unetzoo.decoders.unet import ConcatConv2d

    split = ConcatConv2d.forward
    ConcatConv2d.forward = lambda self, inputs: torch.nn.Conv2d.forward(
        self, inputs if isinstance(inputs, torch.Tensor) else torch.cat(list(inputs), 1))
    try:
        yield
    finally:
        ConcatConv2d.forward = split


def _train_step(model: torch.nn.Module):
    model = model.to(memory_format=CL).train()
    x = torch.randn(8, 3, 256, 256).contiguous(memory_format=CL)
    y = torch.randint(0, 2, (8, 256, 256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def train_step_table() -> None:
    import unetzoo

    torch.manual_seed(0)
    step = _train_step(unetzoo.create("unet-resnet50", num_classes=2))

    split = _ms(step)
    with _concatenating_decoder():
        cat = _ms(step)
    print("| unet-resnet50 bf16 training step (b8, 256x256) | ms |")
    print("|---|---:|")
    print(f"| decoder concatenates (torch.cat + conv) | {cat:.0f} |")
    print(f"| ConcatConv2d split path (default) | {split:.0f} |")
    print(f"| speed-up | {cat / split:.2f}x |")


def fast_path_table() -> None:
    import unetzoo
    from unetzoo.fast import optimize_for_inference

    print("| model | dtype | mkldnn=False ms | mkldnn=True ms | speed-up |")
    print("|---|---|---:|---:|---:|")
    x = torch.randn(1, 3, 512, 512)
    for name, dtype in (("unet-resnet50", torch.bfloat16), ("unet-vgg16", torch.bfloat16),
                        ("unet-resnet50", torch.float32)):
        ms = {}
        for mkldnn in (False, True):
            torch.manual_seed(0)
            fast = optimize_for_inference(unetzoo.create(name, num_classes=2), dtype=dtype, mkldnn=mkldnn)
            with torch.inference_mode():
                ms[mkldnn] = _ms(lambda: fast(x))
        print(f"| {name} | {str(dtype).removeprefix('torch.')} | {ms[False]:.0f} | {ms[True]:.0f} | "
              f"{ms[False] / ms[True]:.2f}x |")


def _big_tensor_timings() -> dict[str, float]:
    """A fresh 32 MiB allocation against a copy into memory that already exists (freed on return)."""
    big = torch.randn(1, 64, 512, 512, dtype=torch.bfloat16)  # 32 MiB: glibc's largest mmap threshold
    into = torch.empty_like(big)
    # a millisecond each: more calls, and the tuned heap takes a few calls to settle
    return {
        "clone of a 32 MiB tensor (allocates)": _ms(lambda: big.clone(), warmup=10, repeats=21),
        "copy into an existing 32 MiB tensor": _ms(lambda: into.copy_(big), warmup=10, repeats=21),
    }


def allocator_child() -> None:
    """One column of table 4, in whatever allocator setting the environment asks for."""
    import unetzoo
    from unetzoo import cpu_memory
    from unetzoo.fast import optimize_for_inference

    tuned = cpu_memory.auto_tune_cpu_allocator()
    out: dict[str, float | bool] = {"tuned": tuned, **_big_tensor_timings()}
    x = torch.randn(1, 3, 512, 512)
    for name in ("unet-resnet50", "unet-vgg16"):
        torch.manual_seed(0)
        fast = optimize_for_inference(unetzoo.create(name, num_classes=2), dtype=torch.bfloat16)
        with torch.inference_mode():
            out[f"{name} inference"] = _ms(lambda: fast(x))
        torch.manual_seed(0)
        out[f"{name} training step"] = _ms(_train_step(unetzoo.create(name, num_classes=2)))
    print(json.dumps(out))


def allocator_table(rounds: int = 3) -> None:
    runs: dict[str, list[dict]] = {"default": [], "tuned": []}
    for _ in range(rounds):  # alternating fresh processes: page-fault costs vary from run to run
        for setting in runs:
            env = {**os.environ, "UNETZOO_CPU_ALLOCATOR": setting}
            proc = subprocess.run([sys.executable, __file__, "--allocator-child"], env=env, check=True,
                                  capture_output=True, text=True)
            runs[setting].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if not runs["tuned"][0]["tuned"]:
        print("(the allocator tuning is glibc-only; this C library was left alone)")
        return
    print(f"| bf16, ms (median of {rounds} processes each) | glibc default | freed memory kept (unetzoo) | speed-up |")
    print("|---|---:|---:|---:|")
    for key in (k for k in runs["default"][0] if k != "tuned"):
        a, b = (statistics.median(r[key] for r in runs[setting]) for setting in ("default", "tuned"))
        print(f"| {key} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")


def upsample_table() -> None:
    """ATen's bilinear 2x kernel against ``upsample2x_bilinear`` (bf16, channels-last), alone at
    the seed decoder's shapes and inside unet-resnet50's fast path (toggled back and forth)."""
    import unetzoo
    from unetzoo.decoders.unet import UpBlock, upsample2x_bilinear
    from unetzoo.fast import optimize_for_inference

    print("| bf16 2x bilinear upsampling (align_corners=True) | ATen ms | lerp ms | speed-up |")
    print("|---|---:|---:|---:|")
    for c, h in ((64, 256), (128, 128), (256, 64), (512, 32)):
        x = torch.randn(1, c, h, h, dtype=torch.bfloat16).contiguous(memory_format=CL)
        aten = _ms(lambda: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
        lerp = _ms(lambda: upsample2x_bilinear(x, True))
        print(f"| {c} channels, {h}->{2 * h} | {aten:.2f} | {lerp:.2f} | {aten / lerp:.2f}x |")
    torch.manual_seed(0)
    fast = optimize_for_inference(unetzoo.create("unet-resnet50", num_classes=2), dtype=torch.bfloat16)
    blocks = [m for m in fast.modules() if isinstance(m, UpBlock)]
    x = torch.randn(1, 3, 512, 512)
    ms: dict[bool, list[float]] = {True: [], False: []}
    with torch.inference_mode():
        for _ in range(3):  # alternate, so a drift of the machine's speed hits both alike
            for on in (True, False):
                for b in blocks:
                    b.lerp_upsample = on
                ms[on].append(_ms(lambda: fast(x)))
    aten, lerp = sorted(ms[False])[1], sorted(ms[True])[1]
    print(f"| unet-resnet50 fast path 512x512 b1 (median of 3 alternations) | {aten:.1f} | {lerp:.1f} | "
          f"{aten / lerp:.2f}x |")


def main() -> None:
    from unetzoo import cpu_memory
    from unetzoo.bench.hardware import cpu_line
    from unetzoo.fast import native_bf16_supported

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allocator-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    if args.allocator_child:
        allocator_child()
        return
    tuned = cpu_memory.auto_tune_cpu_allocator()
    print("# CPU fast-path measurements\n")
    print(f"Command: `python benchmarks/bench_fast_path.py`, run on {datetime.date.today()}; {cpu_line()}, "
          f"native bf16: {native_bf16_supported('cpu')}, allocator tuned: {tuned}. "
          "Median of 5 calls after 2 warm-up calls.\n")
    weight_grad_table()
    print()
    train_step_table()
    print()
    fast_path_table()
    print()
    allocator_table()
    print()
    upsample_table()


if __name__ == "__main__":
    main()
