"""Training configuration: typed dataclasses loaded from YAML, with ``key=value`` overrides.

A config file mirrors :class:`TrainConfig` section by section; unknown keys are rejected with
the list of valid ones, and values are checked (and coerced where lossless, e.g. ``"1e-4"``)
against the field types. Overrides use dotted keys and YAML values::

    cfg = load_config("configs/nuclei_demo.yaml", ["optimizer.lr=3e-4", "model.options.decoder_channels=[64,32,16]"])

``cfg.to_dict()`` gives plain data again (written to ``config.yaml`` next to each run).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from unetzoo.metrics import SCALAR_METRICS

__all__ = [
    "ConfigError",
    "DataSection",
    "LossSection",
    "ModelSection",
    "OptimizerSection",
    "ScheduleSection",
    "TrainConfig",
    "TransformsSection",
    "apply_overrides",
    "config_diff",
    "load_config",
]


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key and what is allowed."""


@dataclass
class ModelSection:
    """What to train: a registry name and how to build it (see :func:`unetzoo.create`)."""

    name: str = "unet-resnet18"
    pretrained: bool | str | None = None  # true/false, a weights tag or a local file; null: the tag in name, if any
    num_classes: int = 2
    in_chans: int = 3
    options: dict[str, Any] = field(default_factory=dict)
    sync_bn: bool = False  # BatchNorm -> SyncBatchNorm under DistributedDataParallel


@dataclass
class TransformsSection:
    """Joint augmentation (see :func:`unetzoo.data.build_transforms`); mean/std default to the model's."""

    size: int | list[int] | None = None  # training crop; None keeps image sizes
    scale: list[float] | None = field(default_factory=lambda: [0.5, 2.0])
    hflip: float = 0.5
    vflip: float = 0.0
    transpose: float = 0.0  # swap height and width; with both flips: all 8 square symmetries
    rotation: float = 0.0
    elastic: float = 0.0  # probability of an elastic deformation (the U-Net paper's augmentation)
    elastic_alpha: float = 30.0
    elastic_sigma: float = 5.0
    color_jitter: float = 0.0
    blur: float = 0.0  # probability of a Gaussian blur of the image (not the mask)
    blur_sigma: list[float] = field(default_factory=lambda: [0.3, 1.0])  # its standard deviation's range
    mean: list[float] | None = None
    std: list[float] | None = None
    eval_size: int | list[int] | None = None  # validation resize; None = whole images


@dataclass
class DataSection:
    """Where the data is and how it is read and split.

    ``kind`` selects the reader: ``folder`` (``image_dir``/``mask_dir`` pairs; ``root`` may be
    ``builtin:nuclei`` for the set shipped with unetzoo), ``voc`` or ``drive``. Validation data
    is ``val_root`` (folder) or ``val_split`` (voc/drive) when given, else ``val_fraction`` of the
    training data held out with ``split_seed``.
    """

    kind: Literal["folder", "voc", "drive"] = "folder"
    root: str = ""
    image_dir: str = "images"
    mask_dir: str = "masks"
    split: str | None = None  # voc: "train", drive: "training" by default
    val_split: str | None = None
    val_root: str | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    label_map: dict[int, int] | None = None
    binary: bool | None = None  # None: detect 0/255 masks
    ignore_index: int = 255
    channels: int | None = None  # None: the model's in_chans
    skip_bad: bool = False
    repeats: int = 1  # passes over the training set per epoch (small data sets)
    transforms: TransformsSection = field(default_factory=TransformsSection)


@dataclass
class LossSection:
    """A loss spec such as ``ce``, ``ce+dice`` or ``ce+0.5*dice`` (see :func:`unetzoo.losses.build_loss`)."""

    name: str = "ce"
    class_weights: list[float] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerSection:
    """Optimizer and learning rates; ``encoder_lr`` applies once the encoder is unfrozen."""

    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    encoder_lr: float | None = None  # None: same as lr
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class ScheduleSection:
    """Per-step learning-rate factor: linear warm-up, then cosine or polynomial decay."""

    name: Literal["cosine", "poly", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    warmup_start: float = 0.01  # factor at step 0 of the warm-up
    min_lr_ratio: float = 0.0  # final factor of the decay
    power: float = 0.9  # poly only


@dataclass
class TrainConfig:
    """Everything a training run needs; :func:`unetzoo.train.fit` takes one of these."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    epochs: int = 10
    freeze_epochs: int = 0  # epochs with the encoder frozen (norm statistics too), then unfrozen
    frozen_stages: int = 0  # encoder stages (shallowest first) that stay frozen after freeze_epochs
    batch_size: int = 8
    val_batch_size: int | None = None  # None: batch_size
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"  # auto: bf16 where the hardware is fast at it
    channels_last: bool = False
    grad_clip: float | None = None  # max gradient norm
    ema: float | None = None  # decay of a moving average of the weights (e.g. 0.99), evaluated and saved
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms
    num_workers: int = 0
    threads: int | None = None  # torch.set_num_threads
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    output_dir: str = "runs/train"
    monitor: str = "miou"  # validation metric (higher is better) that picks the best checkpoint
    eval_every: int = 1
    val_tta: bool = False  # validate with probabilities averaged over flips (4 passes per image), as predict does
    overlays: int = 8  # validation images in the overlay grid
    plot_every: int = 5  # redraw curves and overlays every N epochs (and after the last one)
    progress: bool = True
    resume: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from nested mappings; unknown keys and ill-typed values raise :class:`ConfigError`."""
        config = _build(cls, data, "")
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Cross-field checks (types are checked while loading)."""
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (0 <= self.freeze_epochs <= self.epochs,
             f"freeze_epochs={self.freeze_epochs} must be between 0 and epochs={self.epochs}; lower it "
             f"(freeze_epochs={min(max(self.freeze_epochs, 0), max(self.epochs - 1, 0))}) or raise epochs"),
            (self.frozen_stages >= 0, "frozen_stages must be >= 0 (0: the whole encoder trains after freeze_epochs)"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.val_batch_size is None or self.val_batch_size >= 1,
             f"val_batch_size must be >= 1 (null: batch_size), got {self.val_batch_size}"),
            (self.num_workers >= 0, f"num_workers must be >= 0 (0: load data in the main process), got "
                                    f"{self.num_workers}"),
            (self.threads is None or self.threads >= 1,
             f"threads must be >= 1 (null: torch's default), got {self.threads}"),
            (self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0),
             f"grad_clip is the largest gradient norm, > 0 (null: no clipping), got {self.grad_clip}"),
            (self.model.in_chans >= 1, f"model.in_chans must be >= 1, got {self.model.in_chans}"),
            (self.eval_every >= 1, "eval_every must be >= 1"),
            (self.plot_every >= 1, "plot_every must be >= 1"),
            (self.optimizer.lr > 0, "optimizer.lr must be > 0"),
            (self.optimizer.encoder_lr is None or self.optimizer.encoder_lr >= 0,
             f"optimizer.encoder_lr must be >= 0 (null: the same as optimizer.lr), got {self.optimizer.encoder_lr}"),
            (self.optimizer.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {self.optimizer.weight_decay}"),
            (len(self.optimizer.betas) == 2 and all(0 <= b < 1 for b in self.optimizer.betas),
             f"optimizer.betas is [beta1, beta2], each in [0, 1), got {self.optimizer.betas}"),
            (self.schedule.warmup_start >= 0, f"schedule.warmup_start must be >= 0, got {self.schedule.warmup_start}"),
            (0 <= self.schedule.min_lr_ratio <= 1,
             f"schedule.min_lr_ratio is a factor in [0, 1], got {self.schedule.min_lr_ratio}"),
            (0.0 < self.data.val_fraction < 1.0, "data.val_fraction must be in (0, 1)"),
            (self.data.repeats >= 1, "data.repeats must be >= 1"),
            (self.ema is None or 0.0 <= self.ema < 1.0,
             f"ema is the weight average's decay per step, in [0, 1) (e.g. 0.99), got {self.ema}; null turns it off"),
            (self.schedule.warmup_epochs >= 0, "schedule.warmup_epochs must be >= 0"),
            (self.model.num_classes >= 1, "model.num_classes must be >= 1"),
            (self.monitor in SCALAR_METRICS,
             f"monitor={self.monitor!r} is not a validation metric; choose one of {', '.join(SCALAR_METRICS)}"),
            (self.data.kind != "folder" or self.data.val_split is None,
             "data.val_split names a voc/drive split; for data.kind=folder give data.val_root"),
            (self.data.kind == "folder" or self.data.val_root is None,
             f"data.val_root is for data.kind=folder; for {self.data.kind} give data.val_split"),
            (self.data.kind == "folder" or (self.data.binary is None and self.data.image_dir == "images"
                                             and self.data.mask_dir == "masks"),
             f"data.binary, data.image_dir and data.mask_dir are for data.kind=folder; the {self.data.kind} "
             "reader knows its own layout and labels"),
            (self.data.kind != "drive" or self.data.label_map is None,
             "data.label_map does not apply to data.kind=drive (its labels are the vessel annotation)"),
        ]
        checks.append((self.data.channels is None or self.data.channels == self.model.in_chans,
                       f"data.channels={self.data.channels} but model.in_chans={self.model.in_chans}: the model takes "
                       "the images the reader gives; set them alike, or leave data.channels out (it follows "
                       "model.in_chans)"))
        t = self.data.transforms
        for key in ("hflip", "vflip", "transpose", "elastic", "blur"):
            p = getattr(t, key)
            checks.append((0.0 <= p <= 1.0, f"data.transforms.{key} is a probability in [0, 1], got {p}"))
        for key in ("size", "eval_size"):
            value = getattr(t, key)
            checks.append((value is None or (isinstance(value, int) and value >= 1)
                           or (isinstance(value, list) and len(value) == 2 and all(v >= 1 for v in value)),
                           f"data.transforms.{key} is a side, [height, width] or null, got {value}"))
        checks.append((t.scale is None or (len(t.scale) == 2 and 0 < t.scale[0] <= t.scale[1]),
                       f"data.transforms.scale is [min, max] with 0 < min <= max (1.0: the image's own size), "
                       f"or null for no scaling; got {t.scale}"))
        for key in ("rotation", "color_jitter", "elastic_alpha"):
            value = getattr(t, key)
            checks.append((value >= 0, f"data.transforms.{key} must be >= 0 (0 turns it off), got {value}"))
        checks.append((t.elastic_sigma > 0, f"data.transforms.elastic_sigma is a width in pixels, > 0; "
                                            f"got {t.elastic_sigma}"))
        if t.mean is not None and t.std is not None:
            checks.append((len(t.mean) == len(t.std), f"data.transforms.mean and std differ in length: "
                                                        f"{t.mean} vs {t.std}"))
            checks.append((len(t.mean) in (1, self.model.in_chans) or (len(t.mean) == 3 and self.model.in_chans == 1),
                           f"data.transforms.mean/std have {len(t.mean)} values for model.in_chans="
                           f"{self.model.in_chans}; give 1 value or one per channel"))
        checks.append((len(t.blur_sigma) == 2 and 0 < t.blur_sigma[0] <= t.blur_sigma[1],
                       f"data.transforms.blur_sigma is [min, max] with 0 < min <= max, got {t.blur_sigma}"))
        checks.append((t.std is None or all(s > 0 for s in t.std),
                       f"data.transforms.std divides the images: every value must be > 0, got {t.std}"))
        for key, value in (("output_dir", self.output_dir), ("data.val_root", self.data.val_root)):
            # an empty value is not "none": data.val_root='' validated on the training images
            checks.append((value is None or value.strip() != "",
                           f"{key} is empty; give a folder" + (" or null (none)" if key == "data.val_root" else "")))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        from unetzoo.registry import UnknownModelError, get_spec

        try:  # before any data is read (and shown by --print-config)
            get_spec(self.model.name)
        except UnknownModelError as err:
            raise ConfigError(f"model.name: {err.args[0]}") from None


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], ignore: set[str], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        if key in ignore:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_diff(a, b, ignore, f"{prefix}{key}.")
        elif a != b:
            out.append(prefix + key)
    return out


# ---------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a YAML config and apply ``key=value`` overrides.

    Args:
        path: a YAML file whose keys mirror :class:`TrainConfig`; ``None`` starts from the defaults.
        overrides: dotted assignments such as ``optimizer.lr=3e-4`` or ``epochs=2``; values
            are parsed as YAML (``[1, 2]``, ``null``, ``true``).

    Raises:
        ConfigError: unreadable file, unknown key, or a value of the wrong type.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=ConfigLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read config {path}: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config sections, got {type(loaded).__name__}")
        data = loaded or {}
    overrides = list(overrides)
    try:
        return TrainConfig.from_dict(apply_overrides(data, overrides))
    except ConfigError as err:
        raise ConfigError(f"{err}{_blame(data, path, overrides)}") from None


def _blame(data: Mapping[str, Any], path: Path | None, overrides: list[str]) -> str:
    """Where a config error comes from: the file, the overrides, or both together."""
    if not overrides:
        return f" in {path}" if path is not None else ""
    given = " ".join(overrides)
    try:
        TrainConfig.from_dict(data)  # the file (or the defaults) alone
    except ConfigError:
        return f" in {path} (with the overrides {given})" if path is not None else f" (overrides {given})"
    return f" (from the overrides {given})"


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two fixes for configs: ``1e-5`` is a number (YAML 1.1, which
    PyYAML follows, wants ``1.0e-5``: ``1e-5`` was a string wherever a section takes any value,
    such as ``loss.options``), and a key given twice in one mapping is an error (the earlier
    value vanished without a word)."""

    yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"the key {key!r} is given twice; keep one",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``a.b.c=value`` assignment applied (value parsed as YAML).

    A mapping given for a section merges into it (``model.options={base_c: 16}`` keeps the other
    options), as the same keys given one by one would."""
    out = _copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optimizer.lr=3e-4)")
        try:
            value = yaml.load(raw, Loader=ConfigLoader) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"cannot parse the value of override {item!r}: {err}") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        old = node.get(parts[-1])
        node[parts[-1]] = _merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def _merged(old: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = _copy(old)
    for key, value in new.items():
        out[key] = _merged(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def _copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path.rstrip('.') or 'the config'} must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"section {path.rstrip('.')!r}" if path else "the top level"
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys are: {', '.join(names)}")
    values = {key: _coerce(value, hints[key], f"{path}{key}") for key, value in data.items()}
    return cls(**values)


def _coerce(value: Any, tp: Any, path: str) -> Any:  # noqa: C901 - one branch per kind of type
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} does not fit {_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{path} must be one of {list(args)}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return {_coerce(k, args[0], f"{path} key"): _coerce(v, args[1], f"{path}.{k}") for k, v in value.items()}
    return _scalar(value, tp, path)


def _scalar(value: Any, tp: type, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{path} must be {_name(tp)}, got {value!r}")


def _name(tp: Any) -> str:
    if isinstance(tp, type):
        return {"bool": "true/false", "int": "an integer", "float": "a number", "str": "a string"}.get(
            tp.__name__, tp.__name__
        )
    return str(tp).replace("typing.", "")
