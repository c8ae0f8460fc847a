"""Segmentation losses: cross-entropy (plain or with the U-Net paper's border weights), BCE, Dice, focal,
Lovász-softmax, and sums of them from a spec string.

All losses take ``logits`` ``N x C x H x W`` and ``target`` ``N x H x W`` (long class indices;
``N x 1 x H x W`` is accepted too) and skip pixels labelled ``ignore_index``. A one-output
model (``C == 1``, a logit for "foreground") is handled as the two classes
``softmax([0, x]) = [1 - sigmoid(x), sigmoid(x)]``, so BCE, Dice and focal losses on one-output
models are exactly their two-class forms. Batches whose pixels are all ignored give a zero
loss (still attached to the graph) instead of NaN.

    >>> loss_fn = build_loss("ce+0.5*dice", num_classes=2, class_weights=[1.0, 2.0])
    >>> loss = loss_fn(model(images), masks)
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BCELoss", "BorderWeightedCELoss", "CombinedLoss", "CrossEntropyLoss", "DiceLoss", "FocalLoss", "LovaszLoss",
    "border_weight_map", "build_loss", "label_components",
]


def _target(logits: Tensor, target: Tensor) -> Tensor:
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits "
                         f"{tuple(logits.shape)}; want N x H x W class indices")
    return target.long()


def _check_range(target: Tensor, valid: Tensor, classes: int, ignore_index: int) -> None:
    bad = valid & ((target < 0) | (target >= classes))
    if bad.any():
        raise ValueError(f"target holds labels {target[bad].unique().tolist()} outside 0..{classes - 1} "
                         f"(ignore_index={ignore_index}); check num_classes and the masks")


def _two_class(logits: Tensor) -> Tensor:
    """One foreground logit per pixel -> the equivalent two-class logits ``[0, x]``."""
    return torch.cat([torch.zeros_like(logits), logits], dim=1) if logits.shape[1] == 1 else logits


def _weights(values: Sequence[float] | Tensor | None) -> Tensor | None:
    """Class weights as a float32 vector: finite, none negative, not all zero (any of those
    makes the weighted mean meaningless: a loss of 1e38, NaN or 0 forever)."""
    if values is None:
        return None
    weight = torch.as_tensor(values, dtype=torch.float32).flatten()
    if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()) or not bool((weight > 0).any()):
        raise ValueError(f"class weights {weight.tolist()} must be finite and >= 0 with at least one > 0 "
                         "(they weight each class's pixels in the mean)")
    return weight


def _non_negative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _weighted_mean(loss: Tensor, target: Tensor, valid: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of per-pixel ``loss`` over valid pixels, weighted by ``weight[target]`` if given."""
    w = valid.to(loss.dtype)
    if weight is not None:
        w = w * weight.to(loss)[target.clamp(0, weight.numel() - 1)]
    return (loss * w).sum() / w.sum().clamp_min(torch.finfo(loss.dtype).tiny)


class _PixelLoss(nn.Module):
    """Shared set-up: class weights (a buffer, so it follows ``.to(device)``) and ignore_index."""

    def __init__(self, weight: Sequence[float] | Tensor | None, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", _weights(weight), persistent=False)

    def _check_weight(self, classes: int) -> None:
        if self.weight is not None and self.weight.numel() != classes:
            raise ValueError(f"{self.weight.numel()} class weights for {classes} classes; give one per class")

    def _log_probs(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``log p(target)`` per pixel, the valid mask and the target with ignored pixels at 0."""
        logits, target = _two_class(logits), _target(logits, target)
        valid = target != self.ignore_index
        _check_range(target, valid, logits.shape[1], self.ignore_index)
        self._check_weight(logits.shape[1])
        safe = torch.where(valid, target, 0)
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, safe[:, None])[:, 0]
        return log_p, valid, safe


class CrossEntropyLoss(_PixelLoss):
    """Cross-entropy over classes with optional class weights, ignoring ``ignore_index``.

    Equals ``torch.nn.CrossEntropyLoss(weight, ignore_index=...)`` (weighted mean over valid
    pixels), but returns 0 rather than NaN when every pixel is ignored. With one-channel
    logits it is binary cross-entropy with logits.

    Args:
        weight: per-class weights (length C, or 2 for one-output models).
        ignore_index: label skipped by the loss.
        label_smoothing: as in ``torch.nn.CrossEntropyLoss``.
    """

    def __init__(self, *, weight: Sequence[float] | Tensor | None = None, ignore_index: int = 255,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, ignore_index)
        if not (isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing <= 1.0):
            raise ValueError(f"label_smoothing must be from 0 to 1, got {label_smoothing!r}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.label_smoothing == 0.0:
            log_p, valid, safe = self._log_probs(logits, target)
            return _weighted_mean(-log_p, safe, valid, self.weight)
        logits, target = _two_class(logits), _target(logits, target)
        valid = target != self.ignore_index
        _check_range(target, valid, logits.shape[1], self.ignore_index)  # before torch's bare IndexError
        self._check_weight(logits.shape[1])
        # torch divides by the valid pixels' total weight: none valid, or only zero-weight classes, is 0
        total = valid.sum() if self.weight is None else self.weight[torch.where(valid, target, 0)][valid].sum()
        if not bool(total > 0):
            return logits.sum() * 0.0
        # in float32 like every other term, the weights too (autocast would give bfloat16 ones)
        return F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)


class BCELoss(CrossEntropyLoss):
    """Binary cross-entropy with logits for one-output models; targets {0, 1}, ignore aware.

    Weights are normalised like weighted cross-entropy: the loss is the weighted *mean*
    ``sum(w * l) / sum(w)`` over valid pixels. ``torch.nn.BCEWithLogitsLoss(pos_weight=...)``
    instead divides by the pixel count, so its loss (and gradient) grows with ``pos_weight``
    and the foreground fraction; here ``pos_weight`` changes only the balance between the
    classes, and a learning rate tuned without it still fits.

    Args:
        pos_weight: weight of foreground pixels relative to background ones.
        weight: ``[background, foreground]`` weights (instead of ``pos_weight``).
        ignore_index: label skipped by the loss.
    """

    def __init__(self, *, pos_weight: float | None = None, weight: Sequence[float] | Tensor | None = None,
                 ignore_index: int = 255) -> None:
        if pos_weight is not None and weight is not None:
            raise ValueError("give either pos_weight or weight, not both")
        if pos_weight is not None and not (isinstance(pos_weight, (int, float)) and math.isfinite(pos_weight)
                                           and pos_weight > 0):
            raise ValueError(f"pos_weight must be a finite number > 0, got {pos_weight!r}")
        super().__init__(weight=[1.0, pos_weight] if pos_weight is not None else weight, ignore_index=ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.shape[1] != 1:
            raise ValueError(f"BCELoss expects one-channel logits, got {logits.shape[1]} channels; use 'ce' instead")
        return super().forward(logits, target)


class FocalLoss(_PixelLoss):
    """Focal loss ``-w_t (1 - p_t)^gamma log p_t`` (Lin et al. 2017); ``gamma=0`` is cross-entropy.

    Args:
        gamma: focusing parameter.
        weight: per-class weights (the alpha term), normalised like weighted cross-entropy.
        ignore_index: label skipped by the loss.
    """

    def __init__(self, *, gamma: float = 2.0, weight: Sequence[float] | Tensor | None = None,
                 ignore_index: int = 255) -> None:
        super().__init__(weight, ignore_index)
        _non_negative("gamma", gamma)
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p, valid, safe = self._log_probs(logits, target)
        focus = (1.0 - log_p.exp()).clamp_min(0.0).pow(self.gamma) if self.gamma else 1.0
        return _weighted_mean(-focus * log_p, safe, valid, self.weight)


def label_components(objects: Tensor) -> Tensor:
    """Connected regions (8-neighbour) of a boolean ``N x H x W`` mask, labelled per image.

    Returns a float tensor (exact integers) the shape of ``objects``: 0 off the mask, and on it one
    positive value per region, unique within each image (not consecutive).
    """
    if objects.ndim != 3:
        raise ValueError(f"objects must be N x H x W, got shape {tuple(objects.shape)}")
    n, h, w = objects.shape
    if h * w >= 2**24:  # float32 holds every integer below 2^24 exactly
        raise ValueError(f"label_components: a {h}x{w} image has too many pixels (at most 2^24 - 1)")
    per_call = (2**24 - 1) // (h * w)
    if n > per_call:
        return torch.cat([label_components(chunk) for chunk in objects.split(per_call)])
    mask = objects[:, None]
    ids = torch.arange(1, n * h * w + 1, dtype=torch.float32, device=objects.device).view(n, 1, h, w)
    labels = torch.where(mask, ids, 0.0)
    while True:
        # Each pixel takes the largest label among its neighbours on the mask, then the label now
        # held by the pixel that label names (in the same region, and its label only grew): labels
        # skip ahead along paths already travelled, so large regions need fewer rounds.
        grown = torch.where(mask, F.max_pool2d(labels, 3, 1, 1), 0.0)
        flat = grown.flatten()
        jumped = torch.where(mask, flat[(flat - 1).clamp_min(0).long()].view_as(grown), 0.0)
        if torch.equal(jumped, labels):
            return labels[:, 0]
        labels = jumped


def border_weight_map(target: Tensor, *, w0: float = 10.0, sigma: float = 5.0, background: int = 0,
                      ignore_index: int = 255, class_weights: Sequence[float] | Tensor | None = None,
                      max_distance: float | None = None) -> Tensor:
    """The original U-Net's weight map (Ronneberger et al. 2015, eq. 2), per pixel of ``target``.

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``, where ``d1`` and ``d2`` are
    the Euclidean distances from a background pixel to the nearest and the second-nearest
    object, objects being the 8-connected regions of non-background, non-ignored pixels. The
    border term applies to background pixels only, so thin gaps between touching objects
    weigh most. ``w_c`` is ``class_weights[target]`` (1 if not given), and ignored pixels get 0.

    Distances are exact up to ``max_distance`` (default ``4 * sigma``); farther objects count as
    absent, which drops a term below ``w0 * exp(-8)`` (0.0034 of ``w0``).

    Args:
        target: ``N x H x W`` class indices.
        w0, sigma: the paper's border weight and width in pixels (10 and 5 there).
        background: the class between objects.
        ignore_index: label that gets weight 0.
        class_weights: per-class base weights ``w_c``.
        max_distance: the search radius in pixels.
    """
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    _check_border_args(w0, sigma)
    valid = target != ignore_index
    base = torch.ones(target.shape, dtype=torch.float32, device=target.device)
    if class_weights is not None:
        weights = torch.as_tensor(class_weights, dtype=torch.float32, device=target.device).flatten()
        base = weights[torch.where(valid, target, 0).long().clamp(0, weights.numel() - 1)]
    base = torch.where(valid, base, 0.0)
    if w0 == 0:
        return base
    radius = int(math.floor(4 * sigma if max_distance is None else max_distance))
    labels = label_components(valid & (target != background))
    d1, d2 = _two_nearest(labels, radius)
    border = w0 * torch.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return torch.where(valid & (target == background), base + border, base)


def _check_border_args(w0: float, sigma: float) -> None:
    if sigma <= 0 or w0 < 0:
        raise ValueError(f"border weights need sigma > 0 and w0 >= 0, got sigma={sigma}, w0={w0}")


@functools.lru_cache(maxsize=8)
def _rings(radius: int) -> tuple[tuple[float, tuple[tuple[int, int], ...]], ...]:
    """The offsets within ``radius`` (origin excluded), grouped by distance, nearest first."""
    rings: dict[int, list[tuple[int, int]]] = {}
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if 0 < dy * dy + dx * dx <= radius * radius:
                rings.setdefault(dy * dy + dx * dx, []).append((dy, dx))
    return tuple((math.sqrt(q), tuple(rings[q])) for q in sorted(rings))


def _two_nearest(labels: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """Euclidean distance from each pixel to its nearest and its second-nearest labelled region,
    searched exactly within ``radius`` (``inf`` beyond).

    Offsets are visited ring by ring (equal distance together) while a running max and min of the
    labels seen so far are kept: the first region has been reached once the max is positive, the
    second once max and min differ.
    """
    h, w = labels.shape[1:]
    high = F.pad(labels, (radius,) * 4)
    low = F.pad(torch.where(labels > 0, labels, math.inf), (radius,) * 4, value=math.inf)
    most, least = labels.clone(), torch.where(labels > 0, labels, math.inf)
    d1 = torch.where(labels > 0, 0.0, math.inf)
    d2 = torch.full_like(d1, math.inf)
    for distance, offsets in _rings(radius):
        for dy, dx in offsets:
            rows, cols = slice(radius + dy, radius + dy + h), slice(radius + dx, radius + dx + w)
            torch.maximum(most, high[:, rows, cols], out=most)
            torch.minimum(least, low[:, rows, cols], out=least)
        d1 = torch.where(torch.isinf(d1) & (most > 0), distance, d1)
        d2 = torch.where(torch.isinf(d2) & (most > 0) & (most != least), distance, d2)
    return d1, d2


class BorderWeightedCELoss(_PixelLoss):
    """Cross-entropy weighted by the original U-Net's border map (:func:`border_weight_map`).

    The paper's loss for separating touching cells: background pixels squeezed between two
    objects weigh up to ``1 + w0``. The map is computed from each batch's targets (after
    augmentation), with no gradient. The loss is the weighted mean ``sum(w * -log p) / sum(w)``.

    Args:
        w0, sigma: border weight and width in pixels (the paper: 10 and 5).
        background: the class between objects.
        weight: per-class base weights ``w_c`` (the paper balances class frequencies with them).
        ignore_index: label skipped by the loss.
        max_distance: search radius of the distances (default ``4 * sigma``).
    """

    def __init__(self, *, w0: float = 10.0, sigma: float = 5.0, background: int = 0,
                 weight: Sequence[float] | Tensor | None = None, ignore_index: int = 255,
                 max_distance: float | None = None) -> None:
        super().__init__(weight, ignore_index)
        _check_border_args(w0, sigma)
        self.w0, self.sigma, self.background, self.max_distance = w0, sigma, background, max_distance

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p, valid, _ = self._log_probs(logits, target)
        with torch.no_grad():
            w = border_weight_map(_target(logits, target), w0=self.w0, sigma=self.sigma, background=self.background,
                                  ignore_index=self.ignore_index, class_weights=self.weight,
                                  max_distance=self.max_distance)
        return -(log_p * w).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)

    def extra_repr(self) -> str:
        return f"w0={self.w0}, sigma={self.sigma}"


class DiceLoss(nn.Module):
    """Soft Dice loss ``1 - mean_k (2 |P_k T_k| + s) / (|P_k| + |T_k| + s)``, ignore aware.

    Sums run over the whole batch (all valid pixels of all images), per class ``k``; pixels
    labelled ``ignore_index`` are left out of both prediction and target.

    Args:
        mode: ``"softmax"`` (classes compete), ``"sigmoid"`` (each channel on its own against
            the one-hot target) or ``"auto"`` (softmax; one-output models use
            ``[1 - sigmoid(x), sigmoid(x)]``).
        include_background: include class 0 in the mean.
        smooth: the ``s`` added to numerator and denominator (0 gives the plain Dice, averaged
            over the classes present in the batch's truth).
        ignore_index: label skipped by the loss.
    """

    def __init__(self, *, mode: str = "auto", include_background: bool = True, smooth: float = 1.0,
                 ignore_index: int = 255) -> None:
        super().__init__()
        if mode not in ("auto", "softmax", "sigmoid"):
            raise ValueError(f"mode must be 'auto', 'softmax' or 'sigmoid', got {mode!r}")
        _non_negative("smooth", smooth)
        self.mode, self.include_background = mode, include_background
        self.smooth, self.ignore_index = smooth, ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target = _target(logits, target)
        if self.mode == "sigmoid" and logits.shape[1] > 1:
            probs = torch.sigmoid(logits.float())
        else:
            probs = F.softmax(_two_class(logits).float(), dim=1)
        classes, keep = probs.shape[1], target != self.ignore_index
        _check_range(target, keep, classes, self.ignore_index)
        valid = keep[:, None].to(probs.dtype)
        one_hot = F.one_hot(torch.where(keep, target, 0), classes).permute(0, 3, 1, 2).to(probs.dtype) * valid
        dims = (0, 2, 3)
        inter = (probs * one_hot * valid).sum(dims)
        card = (probs * valid).sum(dims) + one_hot.sum(dims)
        dice = (2.0 * inter + self.smooth) / (card + self.smooth).clamp_min(1e-7)
        present = one_hot.sum(dims) > 0
        if not self.include_background:
            dice, present = dice[1:], present[1:]
        if self.smooth == 0:
            # without smoothing a class absent from the truth scores 0 whatever is predicted: a
            # constant penalty without gradient, so it is left out (all absent or ignored: loss 0)
            dice = dice[present]
            if dice.numel() == 0:
                return probs.sum() * 0.0
        return 1.0 - dice.mean()


class LovaszLoss(nn.Module):
    """Lovász-softmax loss (Berman, Triki & Blaschko, CVPR 2018): a convex surrogate of
    ``1 - IoU`` per class, ignore aware.

    For each class the pixels' errors ``|[target == k] - p_k|`` are sorted in decreasing order
    and weighted by the increments of the Jaccard loss along that order (the Lovász extension),
    so the gradient pushes on exactly the pixels whose flip changes the IoU most. Training with
    it moves the decision boundary towards what the IoU metric rewards, which cross-entropy's
    per-pixel view does not.

    Args:
        per_image: one IoU surrogate per image, averaged (the "mean per-image IoU" metric);
            ``False`` pools all pixels of the batch (the pooled IoU metric).
        classes: ``"present"`` averages over classes present in the target (per image or
            batch), ``"all"`` over every class.
        include_background: include class 0.
        ignore_index: label skipped by the loss.
    """

    def __init__(self, *, per_image: bool = False, classes: str = "present", include_background: bool = True,
                 ignore_index: int = 255) -> None:
        super().__init__()
        if classes not in ("present", "all"):
            raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
        self.per_image, self.classes = per_image, classes
        self.include_background, self.ignore_index = include_background, ignore_index

    @staticmethod
    def _jaccard_increments(fg_sorted: Tensor) -> Tensor:
        """Increments of ``1 - |T ∩ S_i| / |T ∪ S_i|`` where ``S_i`` are the first ``i`` pixels."""
        total = fg_sorted.sum()
        intersection = total - fg_sorted.cumsum(0)
        union = total + (1.0 - fg_sorted).cumsum(0)
        jaccard = 1.0 - intersection / union
        return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])

    def _flat(self, probs: Tensor, target: Tensor) -> Tensor:
        """The loss of ``probs`` ``P x C`` against labels ``P`` (valid pixels only)."""
        first = 0 if self.include_background else 1
        losses = []
        for k in range(first, probs.shape[1]):
            fg = (target == k).to(probs.dtype)
            if self.classes == "present" and not fg.any():
                continue
            errors, order = (fg - probs[:, k]).abs().sort(descending=True)
            losses.append(torch.dot(errors, self._jaccard_increments(fg[order])))
        return torch.stack(losses).mean() if losses else probs.sum() * 0.0

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target = _target(logits, target)
        probs = F.softmax(_two_class(logits).float(), dim=1)
        keep = target != self.ignore_index
        _check_range(target, keep, probs.shape[1], self.ignore_index)
        flat = probs.permute(0, 2, 3, 1).reshape(probs.shape[0], -1, probs.shape[1])
        labels, keep = target.reshape(target.shape[0], -1), keep.reshape(keep.shape[0], -1)
        if self.per_image:
            return torch.stack([self._flat(p[v], t[v]) for p, t, v in zip(flat, labels, keep)]).mean()
        return self._flat(flat[keep], labels[keep])


_LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss, "bce": BCELoss, "dice": DiceLoss, "focal": FocalLoss, "lovasz": LovaszLoss,
    "border_ce": BorderWeightedCELoss,
}
_TERM = re.compile(r"^\s*(?:((?:\d+(?:\.\d*)?|\.\d+)(?:e-?\d+)?)\s*\*\s*)?([a-z_]+)\s*$")


class CombinedLoss(nn.Module):
    """A weighted sum of losses, e.g. ``ce + 0.5 * dice``; built by :func:`build_loss`."""

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]) -> None:
        super().__init__()
        self.names = [name for name, _, _ in terms]
        self.weights = [weight for _, weight, _ in terms]
        self.losses = nn.ModuleList(module for _, _, module in terms)

    def parts(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Each term (unweighted) by name, and the weighted total under ``"loss"``."""
        out = {name: fn(logits, target) for name, fn in zip(self.names, self.losses)}
        out["loss"] = sum(w * out[n] for n, w in zip(self.names, self.weights))  # type: ignore[assignment]
        return out

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.parts(logits, target)["loss"]

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}*{n}" for n, w in zip(self.names, self.weights))


def _parse(spec: str) -> list[tuple[str, float]]:
    terms = []
    for part in spec.lower().split("+"):
        match = _TERM.match(part)
        if match is None or match.group(2) not in _LOSSES:
            raise ValueError(f"cannot read loss term {part.strip()!r} in {spec!r}; use names from "
                             f"{sorted(_LOSSES)} with optional weights, e.g. 'ce+0.5*dice'")
        weight = float(match.group(1) or 1.0)
        if weight <= 0:
            raise ValueError(f"loss term {part.strip()!r} in {spec!r} has weight {weight:g}; weights must be > 0 "
                             "(leave a term out to drop it)")
        terms.append((match.group(2), weight))
    if len({name for name, _ in terms}) != len(terms):
        raise ValueError(f"loss {spec!r} names a term twice; give it one weight instead")
    return terms


#: set for every term at once, by build_loss's own arguments: never an option of one term
_SHARED = {"ignore_index": "ignore_index (data.ignore_index in a training config)",
           "weight": "class_weights (loss.class_weights in a training config)"}


def _options(name: str, kw: dict[str, object]) -> tuple[dict[str, object], set[str]]:
    """Options for term ``name`` (``<name>_<option>`` keys, or plain keys its class accepts)
    and the keys of ``kw`` they came from."""
    accepted = set(inspect.signature(_LOSSES[name]).parameters) - set(_SHARED)
    options: dict[str, object] = {}
    used: dict[str, str] = {}
    for key, value in kw.items():
        option = key[len(name) + 1:] if key.startswith(name + "_") else key
        if option in accepted:
            if option in used:
                raise ValueError(f"loss options {used[option]!r} and {key!r} both set {name}'s {option}; "
                                 "give one")
            options[option], used[option] = value, key
    return options, set(used.values())


def build_loss(spec: str, *, num_classes: int, ignore_index: int = 255,
               class_weights: Sequence[float] | None = None, **kw: object) -> CombinedLoss:
    """Build a loss from a spec such as ``"ce"``, ``"ce+dice"`` or ``"bce + 0.5*dice"``.

    Args:
        spec: ``+``-separated terms ``[weight*]name`` with names ``ce``, ``bce`` (one-output
            models), ``dice``, ``focal``, ``lovasz``, ``border_ce`` (cross-entropy with the U-Net
            paper's border weights; options ``w0``, ``sigma``).
        num_classes: model outputs (1 for a one-output binary model).
        ignore_index: label skipped by every term.
        class_weights: per-class weights for ``ce``, ``bce``, ``focal`` and ``border_ce`` (Dice and Lovász ignore them);
            length ``num_classes`` (2 for one-output models).
        **kw: options of the terms, plain (``gamma=1.5``, ``smooth=0``) or prefixed with the
            term name (``dice_smooth=0``, ``ce_label_smoothing=0.1``).

    Returns:
        A :class:`CombinedLoss` (call it like any loss; ``.parts(logits, target)`` gives each term).

    Raises:
        ValueError: unknown term, ``ce`` on a one-output model or ``bce`` on a multi-output one,
            class weights of the wrong length.
        TypeError: an option no term accepts.
    """
    terms = _parse(spec)
    names = {name for name, _ in terms}
    if num_classes == 1 and "ce" in names:
        raise ValueError("'ce' needs at least 2 outputs; a one-output model uses 'bce'")
    if num_classes > 1 and "bce" in names:
        raise ValueError(f"'bce' is for one-output models; with num_classes={num_classes} use 'ce'")
    if class_weights is not None and len(class_weights) != max(num_classes, 2):
        raise ValueError(f"class_weights has {len(class_weights)} values; need {max(num_classes, 2)} (one per class)")
    for key in kw:
        for option, where in _SHARED.items():
            if key == option or any(key == f"{term}_{option}" for term in _LOSSES):
                raise TypeError(f"loss option {key!r} would set {option} for one term apart from the others; every "
                                f"term takes build_loss's {where}")
    used = set().union(*(_options(name, kw)[1] for name in names))
    if unknown := sorted(set(kw) - used):
        raise TypeError(f"loss option(s) {unknown} are not accepted by any term of {spec!r}")
    built = []
    for name, weight in terms:
        options: dict[str, object] = {"ignore_index": ignore_index, **_options(name, kw)[0]}
        if name not in ("dice", "lovasz") and class_weights is not None:
            if name == "bce" and "pos_weight" in options:
                raise ValueError("give bce either the pos_weight option or class_weights "
                                 "(loss.class_weights in a training config), not both")
            options["weight"] = list(class_weights)
        built.append((name, weight, _LOSSES[name](**options)))
    return CombinedLoss(built)
