"""How much of the demo's held-out IoU is lost to where each image's annotator drew the boundary?

For a trained nuclei model (``runs/demo/last`` after ``make demo``) this predicts the held-out
20% of the demo split and reports the pooled foreground IoU twice: as predicted, and with an
*oracle* that may dilate or erode each image's prediction by up to ``--max-shift`` pixels, picking
per image whichever agrees best with the truth. The oracle cannot be used at test time; the gap
between the two figures is the part of the error that is a per-image boundary offset (masks
drawn tighter or looser around the same-looking nuclei), not a missed or invented nucleus.

    python benchmarks/nuclei_boundary_oracle.py runs/demo/last [--images train]

It also prints the pooled false-positive and missed pixel counts, and how many images want a
non-zero shift; ``--images train`` asks the same of the split's training images.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import Subset


def _shift(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Dilate (``k > 0``) or erode (``k < 0``) a boolean ``HxW`` mask by ``|k|`` pixels (square)."""
    if k == 0:
        return mask
    grow = mask if k > 0 else ~mask
    grown = F.max_pool2d(grow[None, None].float(), 2 * abs(k) + 1, 1, abs(k))[0, 0] > 0
    return grown if k > 0 else ~grown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a save_pretrained folder of a model trained with the demo recipe")
    p.add_argument("--max-shift", type=int, default=2, help="largest dilation/erosion in pixels (default 2)")
    p.add_argument("--images", choices=("held-out", "train"), default="held-out",
                   help="the demo split's held-out 20%% (default) or its 80%% training images, whole and unaugmented")
    args = p.parse_args(argv)

    import unetzoo
    from unetzoo.train import builders
    from unetzoo.train.config import TrainConfig
    from unetzoo.train.recipes import NUCLEI_DEMO

    cfg = TrainConfig.from_dict(NUCLEI_DEMO)
    model = unetzoo.from_pretrained(args.model).eval()
    pre = builders.preprocessing_for(cfg)
    val = builders.build_datasets(cfg.data, num_classes=2, in_chans=3, mean=pre.mean, std=pre.std).val
    if args.images == "train":  # the same whole-image (validation) transform, on the other indices
        held_out = set(val.indices)
        val = Subset(val.dataset, [i for i in range(len(val.dataset)) if i not in held_out])
    shifts = range(-args.max_shift, args.max_shift + 1)
    inter = union = inter_oracle = union_oracle = false_pos = false_neg = 0
    chosen = []
    with torch.no_grad():
        for i in range(len(val)):
            image, truth = val[i]
            pred, truth = model(image[None]).argmax(1)[0].bool(), truth == 1
            inter, union = inter + int((pred & truth).sum()), union + int((pred | truth).sum())
            false_pos, false_neg = false_pos + int((pred & ~truth).sum()), false_neg + int((~pred & truth).sum())
            scores = {k: (int((_shift(pred, k) & truth).sum()), int((_shift(pred, k) | truth).sum())) for k in shifts}
            best = max(shifts, key=lambda k: scores[k][0] / max(scores[k][1], 1))
            inter_oracle, union_oracle = inter_oracle + scores[best][0], union_oracle + scores[best][1]
            chosen.append(best)
    print(f"{args.images} images: {len(val)}")
    print(f"pooled foreground IoU as predicted:                       {inter / union:.4f}")
    print(f"false-positive pixels {false_pos}, missed (false-negative) pixels {false_neg}")
    print(f"with the best per-image dilation/erosion (|k| <= {args.max_shift} px): {inter_oracle / union_oracle:.4f}")
    print("chosen shift per image (px; + = truth drawn looser than predicted):", " ".join(f"{k:+d}" for k in chosen))
    print(f"images whose best shift is not 0: {sum(k != 0 for k in chosen)} of {len(chosen)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
