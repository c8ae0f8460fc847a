"""``unetzoo bench``: parameters, FLOPs, latency, throughput, memory and % of peak per model."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from unetzoo.cli.options import positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark models: FLOPs, latency, throughput, training step, memory, %% of the measured peak",
        description="Measure every model x mode x dtype x variant x batch x size (each case in a fresh process), "
        "relate it to the GEMM peak measured in the same run, optionally side by side with "
        "segmentation_models_pytorch and with a short fine-tune for accuracy; write CSV + markdown (+ PNG).",
    )
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="registry names (default: curated U-Nets + a few timm families)")
    p.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    p.add_argument("--variants", nargs="+", default=["eager", "fast"],
                   choices=["eager", "cl", "fast", "fast-compile"], help="inference variants")
    p.add_argument("--train-variants", nargs="+", default=["eager"], choices=["eager", "cl"])
    p.add_argument("--batch", "--batch-size", nargs="+", type=positive_int, default=[1], help="inference batch sizes")
    p.add_argument("--size", nargs="+", type=positive_int, default=[512], help="inference image sides")
    p.add_argument("--train-batch", nargs="+", type=positive_int, default=[8], help="training batch sizes")
    p.add_argument("--train-size", nargs="+", type=positive_int, default=[256], help="training image sides")
    p.add_argument("--num-classes", type=positive_int, default=2)
    p.add_argument("--compare-smp", action="store_true",
                   help="also run each model with smp's decoder layout next to smp.Unet with the same encoder")
    p.add_argument("--smp-variants", nargs="+", default=["eager", "cl"], choices=["eager", "cl"])
    p.add_argument("--baseline", action="append", default=[], metavar="FILE.py:Builder",
                   help="extra network built by Builder(num_classes=...) from a Python file (repeatable)")
    p.add_argument("--warmup", type=positive_int, default=2,
                   help="untimed calls before timing (at least 1: the first call allocates and picks kernels)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed calls per case")
    p.add_argument("--min-time", type=float, default=0.0, help="keep timing until this many seconds")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--peak-max-n", type=positive_int, default=2048,
                   help="largest GEMM side for the peak measurement")
    p.add_argument("--no-isolate", action="store_true", help="run all cases in this process (memory less exact)")
    p.add_argument("--accuracy", action="store_true", help="fine-tune each model briefly and report held-out IoU")
    p.add_argument("--accuracy-data", default="", help="data set folder (images/ + masks/); default: shared nuclei")
    p.add_argument("--accuracy-epochs", type=positive_int, default=8)
    p.add_argument("--out", default="benchmarks/results", help="output folder")
    p.add_argument("--tag", default="bench", help="file name stem of the outputs")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from unetzoo.bench.suite import DEFAULT_MODELS, BenchConfig

    return BenchConfig(
        models=list(args.models) or list(DEFAULT_MODELS),
        modes=args.modes, dtypes=args.dtypes, infer_variants=args.variants, train_variants=args.train_variants,
        batch_sizes=args.batch, sizes=args.size, train_batch_sizes=args.train_batch, train_sizes=args.train_size,
        compare_smp=args.compare_smp, smp_variants=args.smp_variants, baselines=args.baseline,
        num_classes=args.num_classes, warmup=args.warmup, repeats=args.repeats, min_time=args.min_time,
        threads=args.threads, isolate=not args.no_isolate, device=args.device, peak_max_n=args.peak_max_n,
        accuracy=args.accuracy,
        accuracy_data=args.accuracy_data, accuracy_epochs=args.accuracy_epochs, out_dir=args.out, tag=args.tag,
    )


def _baseline_problem(baselines: list[str]) -> str | None:
    """What is wrong with a ``--baseline FILE.py:Builder`` (said before anything is measured)."""
    for spec in baselines:
        path, sep, builder = spec.rpartition(":")
        if not sep or not path or not builder.isidentifier():
            return (f"--baseline {spec!r}: expected FILE.py:Builder, e.g. "
                    "benchmarks/seed_resnet50_baseline.py:SeedUnet")
        if not Path(path).is_file():
            return f"--baseline {spec!r}: there is no file {path}"
    return None


def _unwritable(out: Path) -> str | None:
    """Why the reports could not be written to ``out`` (found out before measuring, not after)."""
    import tempfile

    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; give a folder for the reports"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except OSError as err:
        return f"--out {out}: cannot write there ({err.strerror or err})"
    return None


def run(args: argparse.Namespace) -> int:
    from unetzoo.bench.run import run_benchmark
    from unetzoo.registry import UnknownModelError, get_spec
    from unetzoo.train.config import ConfigError
    from unetzoo.train.distributed import resolve_device

    cfg = config_from_args(args)
    try:  # an unknown or absent device: said now, not as a traceback after the GEMM peak
        resolve_device(args.device)
    except ConfigError as err:
        print(f"unetzoo bench: error: --device: {err}", file=sys.stderr)
        return 2
    for name in cfg.models:  # found out now, not as a failed row after the GEMM peak and the other models
        try:
            get_spec(name)
        except UnknownModelError as err:
            print(f"unetzoo bench: error: {err.args[0]}", file=sys.stderr)
            return 2
    problem = _baseline_problem(args.baseline or []) or _unwritable(Path(args.out))
    if problem:
        print(f"unetzoo bench: error: {problem}", file=sys.stderr)
        return 2
    if "bench" in sys.argv[1:2]:
        command = "unetzoo " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    else:  # called as unetzoo.cli.main([...]) from Python
        command = f"unetzoo bench (from Python) with {cfg}"
    try:
        out = run_benchmark(cfg, command=command)
    except OSError as err:
        print(f"unetzoo bench: error: cannot write the reports to {args.out}: {err} (the report is printed above)",
              file=sys.stderr)
        return 2
    failed = [r for r in out["rows"] if "error" in r]
    print(out["paths"]["markdown"].read_text(encoding="utf-8"))
    if failed:
        print(f"unetzoo bench: {len(failed)} of {len(out['rows'])} case(s) failed; their rows in "
              f"{out['paths']['markdown']} say why", file=sys.stderr)
    return 1 if failed else 0
