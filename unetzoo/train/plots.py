"""Pictures of a run: loss / metric / learning-rate curves and a validation overlay grid.

Both use matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["plot_curves", "plot_overlays"]

# the metrics drawn when present, with their labels
_CURVE_METRICS = {"miou": "mIoU", "fg_iou": "foreground IoU", "dice": "Dice (fg)", "pixel_accuracy": "pixel acc."}
# class colours (class 0 = background is left uncoloured); ignored pixels are grey
_PALETTE = np.array(
    [[0, 0, 0], [255, 215, 0], [0, 200, 255], [255, 80, 200], [80, 255, 80], [255, 128, 0], [160, 100, 255],
     [255, 255, 255], [0, 128, 128], [128, 128, 0]],
    dtype=np.float32,
) / 255.0


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish_layout(fig, title: str) -> None:
    if title:
        fig.suptitle(title)  # the constrained layout makes room for it


def _save(fig, path: str | os.PathLike) -> Path:
    from unetzoo._atomic import atomic_path

    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp:  # removed when the write fails
        fig.savefig(tmp)
    return path


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Three panels over epochs: train/val loss, validation metrics, learning rate.

    Args:
        history: one record per epoch with ``epoch``, ``train_loss`` and optionally
            ``val_loss``, ``lr`` and metrics (``miou``, ``fg_iou``, ``dice``, ``pixel_accuracy``).
        path: the PNG to write.
        title: figure title (e.g. the model and data set).
    """
    fig = _figure(13, 3.6)
    ax_loss, ax_metric, ax_lr = fig.subplots(1, 3)
    epochs = [r["epoch"] for r in history]

    def series(key: str) -> tuple[list[int], list[float]]:
        pairs = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        xs, ys = series(key)
        if xs:
            ax_loss.plot(xs, ys, marker="o", ms=3, label=label)
    ax_loss.set(title="loss", xlabel="epoch")
    ax_loss.legend()
    for key, label in _CURVE_METRICS.items():
        xs, ys = series(key)
        if xs:
            ax_metric.plot(xs, ys, marker="o", ms=3, label=f"{label} {ys[-1]:.3f}")
    ax_metric.set(title="validation metrics", xlabel="epoch", ylim=(0, 1.02))
    ax_metric.legend(loc="lower right", fontsize=8, title="last value", title_fontsize=8)
    frozen = [r["epoch"] for r in history if r.get("encoder_frozen")]
    for ax in (ax_loss, ax_metric, ax_lr):
        ax.grid(alpha=0.3)
        if frozen:
            ax.axvspan(min(frozen) - 0.5, max(frozen) + 0.5, color="tab:blue", alpha=0.08, lw=0)
    xs, ys = series("lr")
    ax_lr.plot(xs, ys, marker="o", ms=3)
    ax_lr.set(title="decoder lr" + (" (shaded: encoder frozen)" if frozen else ""), xlabel="epoch")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if epochs:
        for ax in (ax_loss, ax_metric, ax_lr):
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    _finish_layout(fig, title)
    return _save(fig, path)


def _colour(labels: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB colours and an alpha mask for a label map (background transparent)."""
    from unetzoo.io import palette

    # bright colours for the first classes, then the VOC colour map's: every class up to 255 its own
    table = np.concatenate([_PALETTE, palette(256)[len(_PALETTE):].astype(np.float32) / 255.0])
    rgb = table[np.clip(labels, 0, len(table) - 1)]
    alpha = (labels > 0).astype(np.float32)
    ignored = labels == ignore_index
    rgb[ignored], alpha[ignored] = 0.5, 0.6
    return rgb, alpha


def _stretch(image: np.ndarray) -> np.ndarray:
    """Stretch the 0.5-99.5 percentile range to [0, 1] (dim microscopy images become visible)."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)


def _blend(image: np.ndarray, labels: np.ndarray, ignore_index: int, strength: float = 0.55) -> np.ndarray:
    rgb, alpha = _colour(labels, ignore_index)
    a = (alpha * strength)[..., None]
    return image * (1 - a) + rgb * a


def _image_iou(truth: np.ndarray, pred: np.ndarray, ignore_index: int) -> float:
    """Mean IoU over the foreground classes present in truth or prediction (NaN if none)."""
    valid = truth != ignore_index
    ious = []
    for k in np.union1d(np.unique(truth[valid]), np.unique(pred[valid])):
        if k == 0:
            continue
        t, p = (truth == k) & valid, (pred == k) & valid
        ious.append((t & p).sum() / max((t | p).sum(), 1))
    return float(np.mean(ious)) if ious else float("nan")


def _errors(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, ignore_index: int) -> np.ndarray:
    """Grey image with missed pixels in blue and false alarms in red."""
    grey = image.mean(-1, keepdims=True).repeat(3, -1) * 0.6
    valid = truth != ignore_index
    grey[valid & (pred != truth) & (pred == 0)] = (0.1, 0.4, 1.0)  # missed (false negative)
    grey[valid & (pred != truth) & (pred != 0)] = (1.0, 0.15, 0.1)  # false alarm / wrong class
    return grey


def plot_overlays(
    samples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    path: str | os.PathLike,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int = 255,
    title: str = "",
) -> Path:
    """A grid with one row per validation image: image | truth | prediction | errors.

    Args:
        samples: ``(normalised image CxHxW, truth HxW, prediction HxW)`` tensors.
        path: the PNG to write.
        mean, std: the normalisation to undo for display.
        ignore_index: truth label drawn grey (and never counted as an error).
        title: figure title.
    """
    if not samples:
        raise ValueError("no samples to draw")
    rows = len(samples)
    fig = _figure(11, 2.8 * rows)
    axes = np.atleast_2d(fig.subplots(rows, 4))
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    for row, (image, truth, pred) in zip(axes, samples):
        img = (image.float() * s[: image.shape[0]] + m[: image.shape[0]]).clamp(0, 1)
        img = img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]
        img_np = _stretch(img.permute(1, 2, 0).numpy())
        t_np, p_np = truth.numpy().astype(np.int64), pred.numpy().astype(np.int64)
        panels = (
            (img_np, "image (contrast stretched)"),
            (_blend(img_np, t_np, ignore_index), "truth"),
            (_blend(img_np, p_np, ignore_index), f"prediction (IoU {_image_iou(t_np, p_np, ignore_index):.3f})"),
            (_errors(img_np, t_np, p_np, ignore_index), "errors: red false alarm, blue missed"),
        )
        for ax, (panel, label) in zip(row, panels):
            ax.imshow(np.clip(panel, 0, 1), interpolation="nearest")
            ax.set_title(label, fontsize=9)
            ax.set_axis_off()
    _finish_layout(fig, title)
    return _save(fig, path)
