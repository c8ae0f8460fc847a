"""A bfloat16 training step on a CUDA GPU, three ways side by side, against the GPU's own peak.

The issue's GPU case (unet-resnet50, batch 16, 512x512, channels-last, bf16 autocast, fused
AdamW) as ``unetzoo bench`` runs it (``eager``), then with cuDNN's autotuner
(``torch.backends.cudnn.benchmark = True``: each convolution shape tries its algorithms once),
then with the model under ``torch.compile`` as well (norm, activation and element-wise kernels
fused into fewer passes over memory). FLOPs are counted once on the eager network (forward +
backward); % of peak is against the bf16 GEMM peak measured in the same run.

    python benchmarks/gpu_train_step.py                    # unet-resnet50, b16, 512x512
    python benchmarks/gpu_train_step.py --model unet-vgg16 --variants eager benchmark
"""

from __future__ import annotations

import argparse
import time

import torch

VARIANTS = ("eager", "benchmark", "compile")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="unet-resnet50")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_train_step.py needs a CUDA GPU")

    from unetzoo.bench.cases import Case, _prepare, _train_fn, build_network
    from unetzoo.bench.hardware import matmul_peak
    from unetzoo.bench.measure import count_flops, time_callable

    peak = matmul_peak(torch.bfloat16, "cuda", max_n=8192)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: measured bf16 GEMM peak "
          f"{peak.flops / 1e12:.0f} TFLOP/s", flush=True)
    case = Case(model=args.model, variant="cl", mode="train", dtype="bfloat16", batch=args.batch, size=args.size,
                device="cuda")
    flops = None
    for variant in args.variants:
        torch.manual_seed(0)
        torch.backends.cudnn.benchmark = variant != "eager"
        model, x, autocast = _prepare(build_network(case).cuda(), case, torch.randn(args.batch, 3, args.size,
                                                                                    args.size, device="cuda"))
        step, fwd_bwd = _train_fn(model, x, autocast, case.num_classes)
        if flops is None:
            flops = count_flops(fwd_bwd)
        if variant == "compile":
            compiled = torch.compile(model)
            step, _ = _train_fn(compiled, x, autocast, case.num_classes)
        started = time.perf_counter()
        step()  # the first call: autotuning / compilation
        torch.cuda.synchronize()
        first = time.perf_counter() - started
        torch.cuda.reset_peak_memory_stats()
        timing = time_callable(step, warmup=3, repeats=args.repeats, device="cuda")
        rate = flops / timing.median
        print(f"{args.model} {variant:9s}: {timing.median * 1e3:7.1f} ms/step ({timing.median * 1e3 / args.batch:.2f} "
              f"ms/img, spread {timing.spread:.0%}), {rate / 1e12:5.0f} TFLOP/s = {rate / peak.flops:4.0%} of peak; "
              f"first call {first:.1f} s; peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
        del model, step, fwd_bwd
        torch.cuda.empty_cache()
    print(f"GFLOPs per step (forward + backward, eager network): {flops / 1e9:.0f}")


if __name__ == "__main__":
    main()
