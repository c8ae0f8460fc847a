"""How much of the demo's held-out IoU is lost to where each image's annotator drew the boundary?

For a trained nuclei model (``runs/demo/last`` after ``make demo``) this predicts the held-out
20% of the demo split and reports the pooled foreground IoU twice: as predicted, and with an
*oracle* that may dilate or erode each image's prediction by up to ``--max-shift`` pixels, picking
per image whichever agrees best with the truth. The oracle cannot be used at test time; the gap
between the two figures is the part of the error that is a per-image boundary offset (masks
drawn tighter or looser around the same-looking nuclei), not a missed or invented nucleus.

    python benchmarks/nuclei_boundary_oracle.py runs/demo/last [--images train]

It also prints the pooled false-positive and missed pixel counts (and how many of them lie in
whole invented or missed nuclei), and how many images want a non-zero shift; ``--images train`` asks the same of the split's training images.

``--style-probe`` asks whether the image itself tells how loosely its masks were drawn. Each
mask's *boundary level* is the median intensity on its inner 1-px ring, scaled so that the
image's background is 0 and its nuclei are 1. A ridge regression from the intensity histogram,
fitted on the training images' true masks, predicts the level of each held-out image; the
prediction's threshold is then moved until its boundary sits at that level. The script prints
how well the histogram and the model's own boundary predict the true level (correlation), and
the pooled IoU with the predicted and with the true level (the latter is an oracle), and with
the one threshold, shared by all images, that suits the held-out images best (also an oracle).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _shift(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Dilate (``k > 0``) or erode (``k < 0``) a boolean ``HxW`` mask by ``|k|`` pixels (square)."""
    if k == 0:
        return mask
    grow = mask if k > 0 else ~mask
    grown = F.max_pool2d(grow[None, None].float(), 2 * abs(k) + 1, 1, abs(k))[0, 0] > 0
    return grown if k > 0 else ~grown


def _whole_object_pixels(pred: torch.Tensor, truth: torch.Tensor) -> tuple[int, int]:
    """Pixels of predicted nuclei that touch no true one, and of true nuclei that no prediction touches."""
    from unetzoo.losses import label_components

    def untouched(objects: torch.Tensor, other: torch.Tensor) -> int:
        labels = label_components(objects[None])[0]
        touched = labels[objects & other].unique()
        return int((objects & ~torch.isin(labels, touched)).sum())

    return untouched(pred, truth), untouched(truth, pred)


def _boundary_level(grey: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor) -> float:
    """Median of ``grey`` on ``mask``'s inner ring, with 0 = background and 1 = the nuclei of ``reference``."""
    ring, far = mask & ~_shift(mask, -1), ~_shift(reference, 3)
    if not bool(ring.any()) or not bool(reference.any()) or not bool(far.any()):
        return float("nan")
    background, nuclei = grey[far].median(), grey[reference].median()
    return float(((grey[ring].median() - background) / (nuclei - background).clamp_min(1e-6)))


def _histogram(grey: torch.Tensor, bins: int = 32) -> torch.Tensor:
    scaled = (grey - grey.min()) / (grey.max() - grey.min()).clamp_min(1e-6)
    counts = torch.histc(scaled.float(), bins, 0, 1)
    return counts / counts.sum()


def _closest(levels: dict[float, float], target: float) -> float:
    """The threshold whose mask's boundary level is nearest ``target`` (0 if none is defined)."""
    candidates = [(abs(level - target), t) for t, level in levels.items() if level == level]  # skip NaN
    return min(candidates)[1] if candidates and target == target else 0.0


Sample = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def _style_probe(sample: Sample, margin: Callable[[int], torch.Tensor], train: list[int], held_out: list[int]) -> None:
    """``sample(i)``: image ``i`` and its boolean truth; ``margin(i)``: its foreground-minus-background logit."""
    features, levels = [], []
    for i in train:
        image, truth = sample(i)
        features.append(_histogram(image[0]))
        levels.append(_boundary_level(image[0], truth, truth))
    X, y = torch.stack(features).double(), torch.tensor(levels, dtype=torch.float64)
    mean, std = X.mean(0), X.std(0).clamp_min(1e-6)
    A = torch.cat([(X - mean) / std, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    w = torch.linalg.solve(A.T @ A + torch.eye(A.shape[1], dtype=A.dtype), A.T @ y)  # ridge, lambda 1
    thresholds = torch.linspace(-4, 4, 33).tolist()  # on the margin; 0.0 (the argmax) is among them
    totals = {"as predicted": [0, 0], "level from the histogram": [0, 0], "true level (oracle)": [0, 0]}
    shared = {t: [0, 0] for t in thresholds}  # one threshold for every image
    predicted_levels, model_levels, true_levels = [], [], []
    for i in held_out:
        (image, truth), m = sample(i), margin(i)
        grey, ref = image[0], m > 0
        counts, at = {}, {}  # per threshold: (intersection, union) and the boundary level
        for t in thresholds:
            pred = m > t
            counts[t] = int((pred & truth).sum()), int((pred | truth).sum())
            at[t] = _boundary_level(grey, pred, ref)
            shared[t][0] += counts[t][0]
            shared[t][1] += counts[t][1]
        feature = (_histogram(grey).double() - mean) / std
        wanted = float(torch.cat([feature, feature.new_ones(1)]) @ w)
        true_level = _boundary_level(grey, truth, truth)
        predicted_levels.append(wanted)
        model_levels.append(at[0.0])
        true_levels.append(true_level)
        for name, t in (("as predicted", 0.0), ("level from the histogram", _closest(at, wanted)),
                        ("true level (oracle)", _closest(at, true_level))):
            totals[name][0] += counts[t][0]
            totals[name][1] += counts[t][1]

    def corr(a: list[float], b: list[float]) -> float:
        pairs = torch.tensor([(x, z) for x, z in zip(a, b) if x == x and z == z], dtype=torch.float64)
        return float(torch.corrcoef(pairs.T)[0, 1]) if len(pairs) > 2 else float("nan")  # a blank model: none

    print("style probe (held-out images): how well is each image's true boundary level predicted?")
    print(f"  correlation, histogram regression vs true level:  {corr(predicted_levels, true_levels):.3f}")
    print(f"  correlation, the model's own boundary vs true level: {corr(model_levels, true_levels):.3f}")
    for name, (inter, union) in totals.items():
        print(f"  pooled foreground IoU, threshold set by {name + ':':27s} {inter / union:.4f}")
    best = max(thresholds, key=lambda t: shared[t][0] / max(shared[t][1], 1))
    print(f"  pooled foreground IoU, the best single threshold for all images (oracle, {best:+.2f}): "
          f"{shared[best][0] / max(shared[best][1], 1):.4f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a save_pretrained folder of a model trained with the demo recipe")
    p.add_argument("--max-shift", type=int, default=2, help="largest dilation/erosion in pixels (default 2)")
    p.add_argument("--images", choices=("held-out", "train"), default="held-out",
                   help="the demo split's held-out 20%% (default) or its 80%% training images, whole and unaugmented")
    p.add_argument("--style-probe", action="store_true",
                   help="also try to predict each held-out image's boundary level from its intensity histogram")
    args = p.parse_args(argv)

    import unetzoo
    from unetzoo.train import builders
    from unetzoo.train.config import TrainConfig
    from unetzoo.train.recipes import NUCLEI_DEMO

    cfg = TrainConfig.from_dict(NUCLEI_DEMO)
    model = unetzoo.from_pretrained(args.model).eval()
    pre = builders.preprocessing_for(cfg)
    split = builders.build_datasets(cfg.data, num_classes=2, in_chans=3, mean=pre.mean, std=pre.std).val
    # the validation transform (whole, unaugmented images) over every image of the set
    dataset, held_out = split.dataset, list(split.indices)
    train = [i for i in range(len(dataset)) if i not in set(held_out)]

    @functools.cache
    def sample(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, truth = dataset[i]
        return image, truth == 1

    @functools.cache
    def margin(i: int) -> torch.Tensor:
        with torch.no_grad():
            logits = model(sample(i)[0][None]).float()[0]
        return logits[1] - logits[0]  # > 0 exactly where the argmax is foreground

    images = held_out if args.images == "held-out" else train
    shifts = range(-args.max_shift, args.max_shift + 1)
    inter = union = inter_oracle = union_oracle = false_pos = false_neg = false_pos_objects = false_neg_objects = 0
    chosen = []
    for i in images:
        pred, truth = margin(i) > 0, sample(i)[1]
        inter, union = inter + int((pred & truth).sum()), union + int((pred | truth).sum())
        false_pos, false_neg = false_pos + int((pred & ~truth).sum()), false_neg + int((~pred & truth).sum())
        invented, missed = _whole_object_pixels(pred, truth)
        false_pos_objects, false_neg_objects = false_pos_objects + invented, false_neg_objects + missed
        shifted = {k: _shift(pred, k) for k in shifts}
        scores = {k: (int((m & truth).sum()), int((m | truth).sum())) for k, m in shifted.items()}
        best = max(shifts, key=lambda k: scores[k][0] / max(scores[k][1], 1))
        inter_oracle, union_oracle = inter_oracle + scores[best][0], union_oracle + scores[best][1]
        chosen.append(best)
    print(f"{args.images} images: {len(images)}")
    print(f"pooled foreground IoU as predicted:                       {inter / union:.4f}")
    print(f"false-positive pixels {false_pos}, missed (false-negative) pixels {false_neg}")
    print(f"  of which whole nuclei: {false_pos_objects} in invented nuclei, {false_neg_objects} in missed ones")
    print(f"with the best per-image dilation/erosion (|k| <= {args.max_shift} px): {inter_oracle / union_oracle:.4f}")
    print("chosen shift per image (px; + = truth drawn looser than predicted):", " ".join(f"{k:+d}" for k in chosen))
    print(f"images whose best shift is not 0: {sum(k != 0 for k in chosen)} of {len(chosen)}")
    if args.style_probe:
        _style_probe(sample, margin, train, held_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
