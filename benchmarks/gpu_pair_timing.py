"""A unetzoo U-Net and smp's ``Unet`` with the same encoder, timed alternately on a GPU.

``unetzoo bench`` times each case once, in turn; on a GPU its short cases (about 10 ms per call)
are at the mercy of clock changes between cases. This script times the two networks back to back
in several rounds, with 50 calls each, and lists the CUDA kernels of each (same count and same
kernels = the same computation).

    python benchmarks/gpu_pair_timing.py unet-efficientnet_lite0 --batch 8 --size 512
"""

from __future__ import annotations

import argparse
import time

import torch


def timed(model, x, dtype: str, calls: int) -> float:
    """Milliseconds per call (after 5 warm-up calls)."""
    ctx = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    with torch.inference_mode(), ctx:
        for _ in range(5):
            model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            model(x)
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1000


def kernels(model, x) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        model(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(x)
            torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a unet-<encoder> name, e.g. unet-efficientnet_lite0")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=50)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_pair_timing.py needs a CUDA GPU")

    import segmentation_models_pytorch as smp

    import unetzoo
    from unetzoo.bench.cases import smp_like_options
    from unetzoo.bench.suite import smp_name

    ours = unetzoo.create(args.model, num_classes=2, **smp_like_options(args.model)).cuda().eval()
    theirs = smp.Unet(smp_name(args.model), encoder_weights=None, classes=2).cuda().eval()
    x = torch.randn(args.batch, 3, args.size, args.size, device="cuda")
    print(f"{args.model} vs smp {smp_name(args.model)}, batch {args.batch}, {args.size}x{args.size}, "
          f"{torch.cuda.get_device_name()}")
    for dtype in ("float32", "bfloat16"):
        for r in range(args.rounds):
            a, b = timed(ours, x, dtype, args.calls), timed(theirs, x, dtype, args.calls)
            print(f"{dtype:8s} round {r}: unetzoo {a:.2f} ms, smp {b:.2f} ms per call (smp/unetzoo {b / a:.3f})")
    ka, kb = kernels(ours, x), kernels(theirs, x)
    print(f"bfloat16 CUDA kernels per call: unetzoo {len(ka)}, smp {len(kb)}; same sequence: {ka == kb}")


if __name__ == "__main__":
    main()
