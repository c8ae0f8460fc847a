"""Tiled inference on large images: wall time, peak RSS, and how they grow with the image.

Each image size runs in a fresh worker process, so every peak RSS (``ru_maxrss``: Python,
torch, the model, the uint8 image, the float32 score accumulator, one batch of tiles) is that
size's own. The model has random weights (speed and memory do not depend on the values) and
the image is synthetic uint8 RGB.

    python benchmarks/bench_tiled.py                              # 1024..8192, unet-resnet50, 512 tiles
    python benchmarks/bench_tiled.py --sizes 256,512 --tile 256   # a quick check
    python benchmarks/bench_tiled.py --dtype bfloat16             # autocast (fast only with AVX512-BF16/AMX)
    python benchmarks/bench_tiled.py --dtype bfloat16 --fast      # the model through optimize_for_inference

Writes ``benchmarks/results/tiled_<date>[_<tag>].md`` and ``.csv`` with the exact command,
the machine, the versions and the date.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ["size", "tiles", "wall_s", "s_per_tile", "mpix_per_s", "peak_rss_gb", "rss_before_gb", "time_x", "area_x"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="unet-resnet50")
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--sizes", default="1024,2048,4096,8192", help="comma-separated square image sides")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=None, help="default: unetzoo.predict's (tile // 4)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--fast", action="store_true",
                   help="run unetzoo.optimize_for_inference(model, dtype=--dtype) first (instead of autocast)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--tag", default="", help="suffix of the result file names (e.g. the machine)")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- one size (worker)
def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def worker(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    import unetzoo
    from unetzoo.inference import plan_tiles

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = args.worker
    model = unetzoo.create(args.model, num_classes=args.num_classes).eval().to(args.device)
    dtype = getattr(torch, args.dtype)
    if args.fast:  # weights already in the dtype: predict then runs without autocast
        model, dtype = unetzoo.optimize_for_inference(model, dtype=dtype), torch.float32
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    rows, cols = plan_tiles(model, size, size, tile=args.tile, overlap=args.overlap)
    before = _current_rss_gb()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    labels = unetzoo.predict(
        model,
        image,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        output="labels",
        dtype=None if dtype == torch.float32 else dtype,
    )
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    assert labels.shape == (size, size)
    tiles = len(rows) * len(cols)
    result = {
        "size": size,
        "tiles": tiles,
        "wall_s": round(wall, 2),
        "s_per_tile": round(wall / tiles, 3),
        "mpix_per_s": round(size * size / wall / 1e6, 3),
        "peak_rss_gb": round(_rss_gb(), 3),
        "rss_before_gb": round(before, 3),
    }
    if args.device.startswith("cuda"):
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return result


# ----------------------------------------------------------------------------- driver
def machine() -> dict:
    import numpy
    import timm
    import torch
    import torchvision

    import unetzoo
    from unetzoo.bench.hardware import cpu_name

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_name(),
        "nproc": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_gb": round(mem, 1),
        "load_avg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "unetzoo": unetzoo.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_size(args: argparse.Namespace, size: int, argv: list[str]) -> dict:
    """One size in a fresh process, with the arguments ``main`` was given (``argv``)."""
    argv = [sys.executable, __file__, *argv, "--worker", str(size)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"size {size} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def add_ratios(rows: list[dict]) -> None:
    for prev, row in zip([None, *rows], rows):
        row["time_x"] = "" if prev is None else round(row["wall_s"] / prev["wall_s"], 2)
        row["area_x"] = "" if prev is None else round((row["size"] / prev["size"]) ** 2, 2)


def table(rows: list[dict], fields: list[str]) -> str:
    head = "| " + " | ".join(fields) + " |\n|" + "---|" * len(fields) + "\n"
    return head + "".join("| " + " | ".join(str(r.get(f, "")) for f in fields) + " |\n" for r in rows)


def write_results(args: argparse.Namespace, rows: list[dict], fields: list[str], info: dict, command: str) -> Path:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"tiled_{info['date'][:10]}" + (f"_{args.tag}" if args.tag else "")
    with open(args.out_dir / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    setup = (
        f"{args.model} (random weights, {args.num_classes} classes), tile {args.tile}, overlap "
        f"{args.overlap if args.overlap is not None else args.tile // 4}, batch {args.batch_size}, {args.dtype}"
        f"{' (optimize_for_inference)' if args.fast else ' (autocast)' if args.dtype != 'float32' else ''}, "
        f"device {args.device}, {args.threads} threads; synthetic uint8 RGB images; output='labels'"
    )
    md = [
        f"# Tiled inference benchmark ({info['date']})",
        "",
        f"Command: `{command}`",
        "",
        f"Setup: {setup}.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "date"),
        "",
        table(rows, fields),
        "wall_s: unetzoo.predict only (model built and image made before); peak_rss_gb: ru_maxrss of the worker "
        "process (one per size); rss_before_gb: its RSS just before predict (Python, torch, model, image); "
        "time_x / area_x: growth over the previous size. The CPU may be shared with other jobs (see the load "
        "average), so times are upper bounds.",
        "",
    ]
    path = args.out_dir / f"{stem}.md"
    path.write_text("\n".join(md))
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return 0
    command = shlex.join(["python", "benchmarks/bench_tiled.py", *argv])
    info = machine()
    print(f"{command}\n" + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    rows: list[dict] = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows.append(run_size(args, size, argv))
        print(json.dumps(rows[-1]), flush=True)
    add_ratios(rows)
    fields = FIELDS + (["peak_gpu_gb"] if any("peak_gpu_gb" in r for r in rows) else [])
    print(table(rows, fields))
    if not args.no_write:
        print(f"wrote {write_results(args, rows, fields, info, command)} and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
