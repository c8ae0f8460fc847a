"""Does averaging several demo models beat one? (It does not: the error is annotation style.)

Train the demo with a few seeds, then score each model and their probability average on the
demo's held-out 20% (whole, unaugmented images, float32, pooled foreground IoU):

    for s in 0 1 2; do unetzoo demo -o runs/demo$s seed=$s; done
    python benchmarks/nuclei_ensemble.py runs/demo0/last runs/demo1/last runs/demo2/last

The ensemble predicts foreground where the mean of the models' softmax foreground
probabilities exceeds 0.5. ``--tta flips`` averages each model over the four flips first (as
``unetzoo eval --tta`` does); ``--tta d8`` over all eight symmetries of the square.
"""

from __future__ import annotations

import argparse
import sys

import torch


def foreground(model: torch.nn.Module, image: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """The model's foreground probability for an ``N x C x H x W`` batch, ``N x H x W``.

    ``tta``: ``"none"``, ``"flips"`` (the mean over the four flips, each flipped back) or ``"d8"``
    (those four on the image and on its transpose: all eight symmetries of the square).
    """
    from unetzoo.inference.predict import TTA_FLIPS, flip_averaged

    def one(x: torch.Tensor) -> torch.Tensor:
        return model(x).float().softmax(1)[:, 1:]

    flips = ((),) if tta == "none" else TTA_FLIPS
    transposes = (False, True) if tta == "d8" else (False,)
    views = [flip_averaged(one, image.transpose(-1, -2) if t else image, flips) for t in transposes]
    return torch.stack([v.transpose(-1, -2) if t else v for v, t in zip(views, transposes)]).mean(0)[:, 0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="save_pretrained folders of models trained with the demo recipe")
    p.add_argument("--tta", choices=["none", "flips", "d8"], default="none",
                   help="average each model over the flips or all 8 square symmetries first")
    args = p.parse_args(argv)

    import unetzoo
    from unetzoo.metrics import ConfusionMatrix
    from unetzoo.train import builders
    from unetzoo.train.config import TrainConfig
    from unetzoo.train.recipes import NUCLEI_DEMO

    cfg = TrainConfig.from_dict(NUCLEI_DEMO)
    pre = builders.preprocessing_for(cfg)
    # the demo's held-out images, whole, as `unetzoo eval --holdout` reads them
    held_out = builders.build_eval_dataset(cfg.data, num_classes=2, in_chans=3, mean=pre.mean, std=pre.std,
                                           holdout=cfg.data.val_fraction)
    models = [unetzoo.from_pretrained(m).eval() for m in args.models]
    names = [*args.models, f"ensemble of {len(models)}"]
    counts = [ConfusionMatrix(num_classes=2) for _ in names]
    with torch.no_grad():
        for image, truth in held_out:
            probs = [foreground(m, image[None], args.tta) for m in models]
            for cm, prob in zip(counts, [*probs, torch.stack(probs).mean(0)]):
                cm.update((prob > 0.5).long(), truth[None])
    print(f"held-out images: {len(held_out)}, test-time augmentation: {args.tta}")
    for name, cm in zip(names, counts):
        print(f"pooled foreground IoU {cm.compute()['fg_iou']:.4f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
