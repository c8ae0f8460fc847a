"""Draw the original U-Net's border weight map (``loss.name=border_ce``) for one shipped nuclei image.

    python benchmarks/plot_border_weights.py            # writes benchmarks/results/border_weights.png

Three panels: the image, its mask, and ``unetzoo.losses.border_weight_map`` (w0 10, sigma 5 px,
the paper's values): the thin gaps between touching nuclei are where it is largest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ASSETS = Path(__file__).resolve().parents[1] / "unetzoo" / "assets" / "nuclei"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="12f89395ad5d2149", help="file stem under unetzoo/assets/nuclei (default: a crowded one)")
    p.add_argument("--w0", type=float, default=10.0)
    p.add_argument("--sigma", type=float, default=5.0)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
