"""From config sections to objects: model, datasets, loaders, loss, optimizer, precision.

Each function takes the typed section it needs (never a loose dict) and fails early with a
message that names the config key to change.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from unetzoo.train.config import ConfigError, DataSection, ModelSection, OptimizerSection, TrainConfig
from unetzoo.train.distributed import DistInfo, ShardSampler

__all__ = [
    "Datasets",
    "autocast",
    "build_datasets",
    "build_eval_dataset",
    "build_validation_dataset",
    "build_loaders",
    "build_model",
    "build_optimizer",
    "check_precision",
    "fast_bf16",
    "resolve_precision",
    "preprocessing_for",
    "resolve_root",
]

BUILTIN_PREFIX = "builtin:"


def build_model(cfg: ModelSection) -> torch.nn.Module:
    """``unetzoo.create`` with the section's name, weights, classes, channels and options."""
    import unetzoo

    try:
        return unetzoo.create(
            cfg.name, pretrained=cfg.pretrained, num_classes=cfg.num_classes, in_chans=cfg.in_chans, **cfg.options
        )
    except (KeyError, TypeError, ValueError) as err:  # unknown model or option, a value it does not take
        raise ConfigError(f"model ({cfg.name}): {_message(err)}") from err


def _message(err: Exception) -> str:
    """An exception's text (a KeyError's without the quotes str() adds)."""
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def preprocessing_for(cfg: TrainConfig):
    """Normalisation: the config's mean/std, else the statistics of the model's default weights.

    The statistics come from the model *name*, not from whether weights were loaded, so a
    pretrained and a randomly initialised run of the same recipe see identical inputs.
    """
    from unetzoo.weights import Preprocessing, transforms_for

    t = cfg.data.transforms
    if (t.mean is None) != (t.std is None):
        raise ConfigError("give both data.transforms.mean and data.transforms.std, or neither")
    if t.mean is not None:
        return Preprocessing(tuple(t.mean), tuple(t.std)).for_channels(cfg.model.in_chans)
    return transforms_for(cfg.model.name).for_channels(cfg.model.in_chans)


def resolve_root(root: str) -> Path:
    """A data root; ``builtin:nuclei`` is the nuclei set shipped in the package."""
    if root.startswith(BUILTIN_PREFIX):
        name = root[len(BUILTIN_PREFIX):]
        if name != "nuclei":
            raise ConfigError(f"data.root={root!r}: the only built-in data set is 'builtin:nuclei'")
        from unetzoo.data import nuclei_root

        return nuclei_root()
    if not root:
        raise ConfigError("data.root is empty; set it to the data set folder (or builtin:nuclei)")
    path = Path(root).expanduser()
    if not path.exists():
        raise ConfigError(f"data.root {path} does not exist; check the path (or set data.root=...)")
    return path


@dataclass
class Datasets:
    """Training and validation sets, and a summary of what validation found (for the log)."""

    train: Dataset
    val: Dataset
    summary: str


def build_datasets(
    cfg: DataSection, *, num_classes: int, in_chans: int, mean: Sequence[float], std: Sequence[float]
) -> Datasets:
    """Training and validation sets with their transforms, checked for bad files before training.

    Raises:
        unetzoo.data.DataError: unreadable files, size mismatches, missing masks or labels
            outside the classes (unless ``skip_bad``), or an empty data set.
    """
    from unetzoo.data import DataError, build_transforms, split_dataset, validate_dataset

    t = cfg.transforms
    train_t = build_transforms(
        True, mean=mean, std=std, size=t.size, scale=t.scale, hflip=t.hflip, vflip=t.vflip,
        transpose=t.transpose, rotation=t.rotation, elastic=t.elastic, elastic_alpha=t.elastic_alpha,
        elastic_sigma=t.elastic_sigma, color_jitter=t.color_jitter, blur=t.blur, blur_sigma=t.blur_sigma,
        ignore_index=cfg.ignore_index,
    )
    val_t = build_transforms(False, mean=mean, std=std, size=t.eval_size, ignore_index=cfg.ignore_index)
    train_base = _reader(cfg, cfg.root, cfg.split, in_chans)
    val_source = cfg.val_root if cfg.kind == "folder" else cfg.val_split
    if val_source is not None:
        val_base = _reader(cfg, cfg.val_root or cfg.root, cfg.val_split, in_chans)
        train, val = train_base.with_transform(train_t), val_base.with_transform(val_t)
    else:
        train, val = split_dataset(
            train_base, cfg.val_fraction, cfg.split_seed, train_transform=train_t, val_transform=val_t
        )
    reports, errors = [], []
    for part, dataset in (("training", train), ("validation", val)):  # both checked before either fails
        try:
            reports.append(validate_dataset(dataset, num_classes, ignore_index=cfg.ignore_index,
                                            skip_bad=cfg.skip_bad))
        except DataError as err:
            errors.append(f"{part} data: {err}")
    if errors:
        raise DataError("\n".join(errors))
    summary = f"train: {reports[0].summary()}\nval: {reports[1].summary()}"
    for problem in dict.fromkeys(str(p) for report in reports for p in report.problems):  # missing masks: once
        summary += f"\nskipped {problem}"
    train, val = reports[0].dataset, reports[1].dataset
    if cfg.repeats > 1:
        train = ConcatDataset([train] * cfg.repeats)
    return Datasets(train, val, summary)


def build_eval_dataset(
    cfg: DataSection,
    *,
    num_classes: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    holdout: float | None = None,
) -> Dataset:
    """A data set for evaluation: whole images (or ``transforms.eval_size``), normalised, checked.

    With ``holdout``, only that fraction of the data is kept, split exactly as training does
    with ``val_fraction=holdout`` and ``split_seed`` (the held-out part a run never trained on).
    """
    from unetzoo.data import build_transforms, split_dataset, validate_dataset

    transform = build_transforms(False, mean=mean, std=std, size=cfg.transforms.eval_size,
                                 ignore_index=cfg.ignore_index)
    # whole data sets are scored on their held-out split unless told otherwise, never on train
    split = cfg.split if cfg.split is not None or holdout is not None else {"voc": "val", "drive": "test"}.get(cfg.kind)
    base = _reader(cfg, cfg.root, split, in_chans)
    if holdout is None:
        dataset = base.with_transform(transform)
    else:
        dataset = split_dataset(base, holdout, cfg.split_seed, val_transform=transform)[1]
    return validate_dataset(dataset, num_classes, ignore_index=cfg.ignore_index, skip_bad=cfg.skip_bad).dataset


def build_validation_dataset(
    cfg: DataSection, *, num_classes: int, in_chans: int, mean: Sequence[float], std: Sequence[float]
) -> Dataset:
    """The images a run with this data section validates on, for scoring a saved model again:
    ``val_root`` / ``val_split`` where given, else the held-out ``val_fraction`` of the training
    data (the same split :func:`build_datasets` makes). The training split is not read."""
    import dataclasses

    if (cfg.val_root if cfg.kind == "folder" else cfg.val_split) is None:
        return build_eval_dataset(cfg, num_classes=num_classes, in_chans=in_chans, mean=mean, std=std,
                                  holdout=cfg.val_fraction)
    val = dataclasses.replace(cfg, root=cfg.val_root or cfg.root, split=cfg.val_split)
    return build_eval_dataset(val, num_classes=num_classes, in_chans=in_chans, mean=mean, std=std)


def _reader(cfg: DataSection, root: str, split: str | None, in_chans: int):
    from unetzoo.data import DRIVEDataset, SegmentationFolder, VOCSegmentation

    path = resolve_root(root)
    channels = cfg.channels or in_chans
    if channels not in (1, 3):
        raise ConfigError(f"{'data.channels' if cfg.channels else 'model.in_chans'}={channels}: the image readers "
                          "give 1 (grey) or 3 (RGB) channels, so a training config takes 1 or 3; a model of other "
                          "inputs needs a training loop of your own (with model.param_groups and unetzoo.losses)")
    if cfg.kind == "voc":
        return VOCSegmentation(path, split or "train", ignore_index=cfg.ignore_index, label_map=cfg.label_map,
                               channels=channels)
    if cfg.kind == "drive":
        return DRIVEDataset(path, split or "training", ignore_index=cfg.ignore_index, channels=channels)
    return SegmentationFolder(
        path, image_dir=cfg.image_dir, mask_dir=cfg.mask_dir, label_map=cfg.label_map, binary=cfg.binary,
        ignore_index=cfg.ignore_index, channels=channels,
    )


def build_loaders(
    cfg: TrainConfig, data: Datasets, dist: DistInfo, device: torch.device
) -> tuple[DataLoader, DataLoader, torch.Generator]:
    """Training loader (shuffled, last partial batch dropped) and validation loader (each image once).

    Returns the training loader's generator too: reseed it with the epoch (see
    :func:`unetzoo.train.engine.fit`) so the sample order does not depend on what ran before.
    """
    from unetzoo.data import pad_collate

    generator = torch.Generator().manual_seed(cfg.seed)
    collate = functools.partial(pad_collate, ignore_index=cfg.data.ignore_index)
    # workers are not persistent: each epoch's workers are seeded from the reseeded generator,
    # so augmentation (and hence --resume) is reproducible with workers too
    common = dict(num_workers=cfg.num_workers, collate_fn=collate, pin_memory=device.type == "cuda")
    per_rank = len(data.train) // dist.world_size
    if per_rank < cfg.batch_size:
        raise ConfigError(
            f"batch_size={cfg.batch_size} is larger than the {per_rank} training samples per process; "
            "lower batch_size or raise data.repeats"
        )
    if dist.enabled:
        sampler = DistributedSampler(data.train, dist.world_size, dist.rank, shuffle=True, seed=cfg.seed)
    else:
        sampler = RandomSampler(data.train, generator=generator)
    train = DataLoader(data.train, cfg.batch_size, sampler=sampler, drop_last=True, generator=generator, **common)
    val = DataLoader(data.val, cfg.val_batch_size or cfg.batch_size,  # sizes: each one runs on its own
                     sampler=ShardSampler(data.val, dist.rank, dist.world_size),
                     **{**common, "collate_fn": functools.partial(collate, sizes=True)})
    return train, val, generator


def build_optimizer(cfg: OptimizerSection, model) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD over the model's encoder and decoder parameter groups.

    Adam and AdamW use PyTorch's fused kernels (one pass over each parameter instead of
    several ``foreach`` passes) when every parameter is a float tensor on the CPU or a GPU.
    """
    groups = model.param_groups(decoder_lr=cfg.lr, encoder_lr=cfg.encoder_lr, weight_decay=cfg.weight_decay)
    if cfg.name in ("adam", "adamw"):
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters())
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def build_loss(cfg: TrainConfig) -> torch.nn.Module:
    from unetzoo.losses import build_loss as _build

    try:
        return _build(
            cfg.loss.name, num_classes=cfg.model.num_classes, ignore_index=cfg.data.ignore_index,
            class_weights=cfg.loss.class_weights, **cfg.loss.options,
        )
    except (KeyError, TypeError, ValueError) as err:  # unknown loss or option
        raise ConfigError(f"loss ({cfg.loss.name}): {_message(err)}") from err


def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix maths is fast here: a bf16-capable GPU, or a CPU with AMX / AVX-512-BF16.

    On CPUs without them (AVX2 only) bfloat16 autocast is emulated and several times *slower*.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where :func:`fast_bf16`, else ``fp32``; other values are checked and returned."""
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    check_precision(precision, device)
    return precision


def check_precision(precision: str, device: torch.device) -> None:
    """float16 needs a GPU (GradScaler); fail before any work is done."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"precision=fp16 needs a CUDA GPU (float16 autocast with a GradScaler), but the device is {device}; "
            "on CPU use precision=bf16 (fast on CPUs with AMX / AVX-512-BF16) or precision=fp32"
        )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
