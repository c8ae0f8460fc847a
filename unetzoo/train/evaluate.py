"""Evaluation: confusion-matrix metrics of a model over a data loader (whole images).

Batches are padded to a common size by :func:`unetzoo.data.pad_collate` with the ignore
label, so padding counts in neither loss nor metrics; given the sizes before padding
(``pad_collate(..., sizes=True)``, as unetzoo's loaders do), the network runs each size on its
own, so the scores do not depend on which images share a batch. Images larger than ``tile`` go through
:func:`unetzoo.predict` (tiled inference, bounded memory). Under DDP each process evaluates
its shard and the confusion matrices are summed (:meth:`ConfusionMatrix.all_reduce`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from unetzoo._modes import evaluating

if TYPE_CHECKING:
    import os

    from unetzoo.train.config import DataSection

__all__ = ["EvalResult", "as_logits", "center_crop_like", "evaluate", "evaluate_saved", "image_fg_iou", "labels_of"]


@dataclass
class EvalResult:
    """Metrics (see :meth:`unetzoo.metrics.ConfusionMatrix.compute`, plus ``image_fg_iou``: the
    mean over images of :func:`image_fg_iou`), mean loss and a few samples.

    ``samples`` holds up to ``keep`` ``(image, truth, prediction)`` CPU tensors (normalised
    image ``CxHxW``, labels ``HxW``) for the overlay grid.
    """

    metrics: dict[str, Any]
    loss: float | None = None
    pixels: int = 0  # pixels counted (all processes), ignored ones excluded
    samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)


def labels_of(logits: torch.Tensor) -> torch.Tensor:
    """Class labels ``NxHxW`` from logits (arg-max; a one-output model is thresholded at 0)."""
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


def image_fg_iou(preds: torch.Tensor, masks: torch.Tensor, num_classes: int, ignore_index: int) -> list[float]:
    """Per-image foreground IoU: the mean IoU of the classes 1..C-1 present in the image's truth
    or prediction (images with neither are skipped). Averaging it over images weighs every image
    equally, however many foreground pixels it has (the Kaggle Data Science Bowl convention)."""
    out = []
    for pred, truth in zip(preds, masks):
        valid = truth != ignore_index
        ious = []
        for k in range(1, max(num_classes, 2)):
            t, p = (truth == k) & valid, (pred == k) & valid
            union = int((t | p).sum())
            if union:
                ious.append(int((t & p).sum()) / union)
        if ious:
            out.append(sum(ious) / len(ious))
    return out


def center_crop_like(masks: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The masks cropped to the logits' size: valid-convolution networks (``model.border > 0``,
    e.g. ``unet-original``) predict only the centre of their input."""
    h, w = logits.shape[-2:]
    top, left = (masks.shape[-2] - h) // 2, (masks.shape[-1] - w) // 2
    if top < 0 or left < 0:
        raise ValueError(f"logits {tuple(logits.shape)} are larger than the masks {tuple(masks.shape)}")
    return masks[..., top:top + h, left:left + w]


def _logits(model: nn.Module, images: torch.Tensor, tile: int | None, dtype: torch.dtype | None,
            tta: bool = False) -> torch.Tensor:
    """Whole-image logits; tiled (:func:`unetzoo.predict`) for images above ``tile`` and for
    valid-convolution networks, whose overlap-tile inference keeps the output at the input's size.
    ``tta`` averages over the flips of :func:`unetzoo.predict`'s ``tta``. Averaged or blended
    results are averaged probabilities, returned as log-probabilities (:func:`_scores_of`), so that
    their argmax is the label :func:`unetzoo.predict` writes."""
    valid_conv = getattr(model, "border", 0) > 0
    whole = not valid_conv and (tile is None or max(images.shape[-2:]) <= tile)
    if whole and not tta:
        return as_logits(model, model(images))
    # averaged over flips or blended over tiles: probabilities, as unetzoo.predict averages them for
    # its labels, so that eval scores the masks predict writes
    from unetzoo.inference.predict import _activation, flip_averaged, predict

    if whole:  # padded to the stride before flipping, as predict's window is: the padding flips too
        activation = _activation(model)
        pad = getattr(model, "_pad", None)  # the model's own padding (UnetZooModel)
        padded, h, w = pad(images) if pad is not None else (images, *images.shape[-2:])
        probs = flip_averaged(lambda x: activation(model(x)), padded)[..., :h, :w]
    else:
        size = None if valid_conv else tile  # predict's default tile for valid networks (572)
        probs = torch.stack([predict(model, image, tile=size, output="probs", dtype=dtype, tta=tta)
                             for image in images])
    return _scores_of(probs)


def _logits_by_size(model: nn.Module, images: torch.Tensor, sizes: torch.Tensor | None, tile: int | None,
                    dtype: torch.dtype | None, tta: bool) -> torch.Tensor:
    """:func:`_logits` of a padded batch, each group of equally sized images run at its own size
    (``sizes``: ``N x 2`` heights and widths before padding); the padding gets zeros, which the
    ignore label there keeps out of losses and metrics. Without ``sizes``, the batch as it is."""
    if sizes is None or bool((sizes == torch.tensor(images.shape[-2:])).all()):
        return _logits(model, images, tile, dtype, tta)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (h, w) in enumerate(sizes.tolist()):
        groups.setdefault((h, w), []).append(i)
    out = None
    for (h, w), index in groups.items():  # _logits keeps each input's size (valid networks: tiled)
        part = _logits(model, images[index, :, :h, :w], tile, dtype, tta)
        if out is None:
            out = part.new_zeros((images.shape[0], part.shape[1], *images.shape[-2:]))
        out[index, :, :h, :w] = part.to(out.dtype)
    return out


def _scores_of(probs: torch.Tensor) -> torch.Tensor:
    """Scores whose argmax (or sign, for one output) is that of ``probs``, and whose softmax (or
    sigmoid) gives them back: log-probabilities, or the logit of a one-output probability."""
    probs = probs.float()
    if probs.shape[1] == 1:
        return torch.logit(probs, eps=1e-6)
    return torch.log(probs.clamp_min(1e-12))


def as_logits(model: nn.Module, scores: torch.Tensor) -> torch.Tensor:
    """Logits from a network's output: the inverse sigmoid where the network ends in a sigmoid
    (``unet-strided`` as its seed project built it), so thresholds at 0 and the losses hold."""
    if isinstance(getattr(model, "activation", None), nn.Sigmoid):
        return torch.logit(scores.float(), eps=1e-6)
    return scores


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    num_classes: int,
    ignore_index: int = 255,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
    loss_fn: nn.Module | None = None,
    tile: int | None = None,
    keep: int = 0,
    channels_last: bool = False,
    progress: bool = False,
    tta: bool = False,
) -> EvalResult:
    """Run ``model`` over ``loader`` and compute the metrics of all processes together.

    Args:
        model: the network (eval mode is set here and the previous mode restored).
        loader: yields ``(images, masks)`` batches, or ``(images, masks, sizes)`` from
            ``pad_collate(..., sizes=True)``, which images of different sizes need: without the
            sizes, an image padded to a larger one's size is scored with the padding's influence
            on its predictions, so the scores depend on the batch.
        num_classes: classes of the model (1 = one-output binary model).
        ignore_index: mask label that is not counted.
        device: where to run.
        autocast: e.g. ``torch.autocast("cpu", dtype=torch.bfloat16)``; ``None`` = float32.
        loss_fn: also report the mean loss over images (reduced over processes), each image's loss
            on its own, so that the figure does not depend on the batch size or the processes.
        tile: images with a side above this use tiled inference.
        keep: how many samples to return for the overlay grid.
        channels_last: feed inputs in channels-last memory format.
        progress: show a tqdm bar.
        tta: average the class probabilities over horizontal, vertical and both flips (4 passes per
            image), as ``predict`` does.
    """
    from tqdm.auto import tqdm

    from unetzoo.metrics import ConfusionMatrix
    from unetzoo.train.distributed import all_reduce_sum

    device = torch.device(device)
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    loss_sum, scored, samples = 0.0, 0, []
    image_iou_sum, images_counted = 0.0, 0
    dtype = getattr(autocast, "fast_dtype", None)
    with evaluating(model):  # each submodule's own mode back afterwards (a hand-frozen norm stays so)
        for images, masks, *extents in tqdm(loader, desc="eval", leave=False, disable=not progress):
            images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast or contextlib.nullcontext():
                logits = _logits_by_size(model, images, extents[0] if extents else None, tile, dtype, tta)
                if loss_fn is not None:  # per image, so the mean does not depend on batches or processes
                    for i in range(logits.shape[0]):
                        if bool((masks[i] != ignore_index).any()):  # an all-ignored image has no loss, not 0
                            loss_sum += float(loss_fn(logits[i:i + 1], masks[i:i + 1]))
                            scored += 1
            cm.update(logits.float(), masks)
            preds = labels_of(logits)
            per_image = image_fg_iou(preds, masks, num_classes, ignore_index)
            image_iou_sum, images_counted = image_iou_sum + sum(per_image), images_counted + len(per_image)
            for i in range(min(keep - len(samples), images.shape[0])):
                samples.append((images[i].float().cpu(), masks[i].cpu(), preds[i].cpu()))
    metrics = cm.all_reduce().compute()
    image_iou_sum, images_counted = all_reduce_sum([image_iou_sum, images_counted], device)
    metrics["image_fg_iou"] = image_iou_sum / images_counted if images_counted else math.nan
    loss = None
    if loss_fn is not None:
        loss_sum, scored = all_reduce_sum([loss_sum, scored], device)
        loss = loss_sum / scored if scored else math.nan
    return EvalResult(metrics, loss=loss, samples=samples, pixels=int(cm.matrix.sum()))


def evaluate_saved(
    model: str | os.PathLike,
    data: DataSection,
    *,
    holdout: float | None = None,
    validation: bool = False,
    device: str = "auto",
    precision: str = "fp32",
    tile: int | None = None,
    tta: bool = False,
    batch_size: int = 1,
) -> tuple[dict[str, Any], int]:
    """Load a saved model (folder or Hub id) and score it on ``data`` with its recorded
    preprocessing; returns ``(metrics, number of images)``. ``unetzoo eval`` and the demo use it.

    Args:
        holdout: score only this held-out fraction, split as training splits it.
        validation: score exactly the images a run with ``data`` validated on
            (:func:`~unetzoo.train.builders.build_validation_dataset`); ``holdout`` is ignored.
        precision: autocast precision (``fp32``: none).
        Other arguments as in :func:`evaluate`.
    """
    import unetzoo
    from unetzoo.data import pad_collate
    from unetzoo.train.builders import autocast, build_eval_dataset, build_validation_dataset, check_precision
    from unetzoo.train.distributed import resolve_device

    dev = resolve_device(device)
    check_precision(precision, dev)
    net = unetzoo.from_pretrained(model).to(dev)
    pre = unetzoo.transforms_for(net)
    sizes = {"num_classes": net.num_classes, "in_chans": net.in_chans, "mean": pre.mean, "std": pre.std}
    if validation:
        dataset = build_validation_dataset(data, **sizes)
    else:
        dataset = build_eval_dataset(data, **sizes, holdout=holdout)
    loader = DataLoader(dataset, batch_size,
                        collate_fn=lambda b: pad_collate(b, ignore_index=data.ignore_index, sizes=True))
    with torch.inference_mode():
        result = evaluate(net, loader, num_classes=net.num_classes, ignore_index=data.ignore_index, device=dev,
                          autocast=autocast(precision, dev), tile=tile, tta=tta)
    return result.metrics, len(dataset)
