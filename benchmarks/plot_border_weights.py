"""Draw the original U-Net's border weight map (``loss.name=border_ce``) for one shipped nuclei image.

    python benchmarks/plot_border_weights.py            # writes benchmarks/results/border_weights.png

Three panels: the image, its mask, and ``unetzoo.losses.border_weight_map`` (w0 10, sigma 5 px,
the paper's values): the thin gaps between touching nuclei are where it is largest. It then
times the map per training batch (median of 5): 4 shipped nuclei masks as 128² crops and whole
(256²), and 4 ISBI 2012 masks as 256² crops when ``../shared/data/isbi2012-membrane`` is there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "unetzoo" / "assets" / "nuclei"
ISBI_MASKS = REPO.parent / "shared" / "data" / "isbi2012-membrane" / "masks"


def _masks(folder: Path, count: int, crop: int) -> torch.Tensor:
    paths = sorted(folder.glob("*.png"))[:count]
    return torch.stack([torch.from_numpy(np.asarray(Image.open(q).convert("L"))[:crop, :crop] > 127).long() for q in paths])


def _median_ms(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="12f89395ad5d2149", help="file stem under unetzoo/assets/nuclei (default: a crowded one)")
    p.add_argument("--w0", type=float, default=10.0)
    p.add_argument("--sigma", type=float, default=5.0)
    p.add_argument("--no-timing", action="store_true", help="only draw the picture")
    p.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results" / "border_weights.png")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unetzoo.losses import border_weight_map

    image_path, mask_path = ASSETS / "images" / f"{args.image}.png", ASSETS / "masks" / f"{args.image}.png"
    if not image_path.is_file():
        known = ", ".join(sorted(q.stem for q in (ASSETS / "images").glob("*.png"))[:5])
        print(f"error: no image {image_path}; pick a stem such as {known}", file=sys.stderr)
        return 2
    image = np.asarray(Image.open(image_path).convert("L"))
    mask = np.asarray(Image.open(mask_path).convert("L")) > 127
    weights = border_weight_map(torch.from_numpy(mask).long()[None], w0=args.w0, sigma=args.sigma)[0].numpy()

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), constrained_layout=True)
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(f"image ({args.image})")
    axes[1].imshow(mask, cmap="gray")
    axes[1].set_title("mask (objects: 8-connected regions)")
    shown = axes[2].imshow(weights, cmap="magma", vmin=0, vmax=1 + args.w0)
    axes[2].set_title(f"border weights, w0={args.w0:g}, sigma={args.sigma:g} px (max {weights.max():.2f})")
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    if args.no_timing:
        return 0
    batches = {"4 nuclei masks, 128² crops": _masks(ASSETS / "masks", 4, 128),
               "4 nuclei masks, whole 256²": _masks(ASSETS / "masks", 4, 256)}
    if ISBI_MASKS.is_dir():
        batches["4 ISBI 2012 masks, 256² crops"] = _masks(ISBI_MASKS, 4, 256)
    else:
        print(f"(no {ISBI_MASKS}: the ISBI timing is skipped)")
    threads = torch.get_num_threads()
    for name, batch in batches.items():
        ms = _median_ms(lambda b=batch: border_weight_map(b, w0=args.w0, sigma=args.sigma))
        print(f"border_weight_map, {name}: {ms:.0f} ms ({threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
