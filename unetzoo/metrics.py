"""Segmentation metrics from one confusion matrix, correct under DistributedDataParallel.

Every metric comes from the ``C x C`` matrix ``M[t, p]`` = number of pixels of true class
``t`` predicted as ``p`` (ignored pixels are not counted). With ``TP_k = M[k, k]``,
``T_k`` = row sum (pixels of class k) and ``P_k`` = column sum (pixels predicted as k):

* pixel accuracy = sum TP / sum M (the seeds' "global accuracy")
* per-class accuracy (recall) = TP_k / T_k; mean accuracy = their mean (the seed's "mPA")
* per-class IoU = TP_k / (T_k + P_k - TP_k); mIoU = their mean
* per-class Dice = 2 TP_k / (T_k + P_k); "dice" = mean Dice over classes 1..C-1 (foreground)
* "fg_iou" = mean IoU over classes 1..C-1 (for two classes: the foreground IoU)

A ratio whose denominator is 0 is NaN and left out of the means: a class absent from both
target and prediction has NaN IoU and Dice, a class absent from the target has NaN accuracy.
A class that is predicted but absent from the target has IoU 0 and counts (a false alarm).

Under DDP each process updates its own matrix; :meth:`ConfusionMatrix.all_reduce` sums the
matrices over processes, after which every process computes the metrics of all the data.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["SCALAR_METRICS", "ConfusionMatrix"]

#: the single-number metrics of :meth:`ConfusionMatrix.compute` (higher is better)
SCALAR_METRICS = ("pixel_accuracy", "mean_accuracy", "miou", "dice", "fg_iou")


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, math.nan))


def _nanmean(values: Tensor) -> float:
    finite = values[~values.isnan()]
    return float(finite.mean()) if finite.numel() else math.nan


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches and derives the usual metrics.

    Args:
        num_classes: number of classes; a one-output (binary) model passes 1 or 2 and is
            counted as 2 classes (background, foreground).
        ignore_index: target label that is not counted.
        device: where the matrix lives (the model's device, e.g. ``cuda`` under NCCL).

    Example:
        >>> cm = ConfusionMatrix(num_classes=2)
        >>> for images, masks in loader:
        ...     cm.update(model(images), masks)
        >>> cm.all_reduce().compute()["miou"]
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = max(num_classes, 2)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Start counting afresh (e.g. at each epoch)."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, preds: Tensor, target: Tensor) -> None:
        """Count one batch.

        Args:
            preds: logits ``N x C x H x W`` (arg-max is taken; one-channel logits are
                thresholded at 0) or predicted labels ``N x H x W``.
            target: labels ``N x H x W`` (or ``N x 1 x H x W``) with ``ignore_index`` for
                pixels not to count.

        Raises:
            ValueError: mismatched shapes, or labels outside ``[0, num_classes)``.
        """
        labels = self._labels(preds)
        if target.ndim == 4 and target.shape[1] == 1:
            target = target[:, 0]
        if labels.shape != target.shape:
            raise ValueError(f"predictions {tuple(labels.shape)} and target {tuple(target.shape)} differ in shape")
        target = target.to(self.matrix.device, torch.int64)
        labels = labels.to(self.matrix.device, torch.int64)
        valid = target != self.ignore_index
        target, labels = target[valid], labels[valid]
        for name, values in (("target", target), ("prediction", labels)):
            if values.numel() and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(f"{name} holds labels outside 0..{self.num_classes - 1} "
                                 f"(ignore_index={self.ignore_index}); check num_classes and the masks")
        counts = torch.bincount(target * self.num_classes + labels, minlength=self.num_classes**2)
        self.matrix += counts.view(self.num_classes, self.num_classes)

    def _labels(self, preds: Tensor) -> Tensor:
        if preds.is_floating_point() and preds.ndim == 4:
            return (preds[:, 0] > 0).long() if preds.shape[1] == 1 else preds.argmax(dim=1)
        if preds.ndim == 4 and preds.shape[1] == 1:
            return preds[:, 0]
        return preds

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over all processes (no-op without an initialised process group).

        Call it once, after the last :meth:`update` and before :meth:`compute`: a second call
        would add the other processes' counts again. Returns ``self`` for chaining.
        """
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def compute(self) -> dict[str, float | list[float]]:
        """The metrics of everything counted so far (see the module docstring).

        Returns:
            ``pixel_accuracy``, ``mean_accuracy``, ``miou``, ``dice``, ``fg_iou`` (floats) and
            ``per_class_accuracy``, ``per_class_iou``, ``per_class_dice`` (lists, one per class).
        """
        m = self.matrix.double().cpu()
        tp, in_target, in_pred = m.diag(), m.sum(1), m.sum(0)
        accuracy = _ratio(tp, in_target)
        iou = _ratio(tp, in_target + in_pred - tp)
        dice = _ratio(2 * tp, in_target + in_pred)
        return {
            "pixel_accuracy": float(_ratio(tp.sum(), m.sum())),
            "mean_accuracy": _nanmean(accuracy),
            "per_class_accuracy": accuracy.tolist(),
            "per_class_iou": iou.tolist(),
            "miou": _nanmean(iou),
            "per_class_dice": dice.tolist(),
            "dice": _nanmean(dice[1:]),
            "fg_iou": _nanmean(iou[1:]),
        }

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())})"
