"""``unetzoo.create``: the one constructor, and ``model_info``."""

from __future__ import annotations

import functools
import importlib
import inspect
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from unetzoo.model import ModelConfig, UnetZooModel
from unetzoo.registry import ModelSpec, WeightsSpec, get_spec, parse_name

__all__ = ["create", "model_info", "ModelInfo", "resolve_options"]

# arguments of builders that are not user options
_NOT_OPTIONS = ("encoder",)


@functools.lru_cache(maxsize=None)
def _builder(path: str) -> Callable[..., UnetZooModel]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def builder_options(spec: ModelSpec) -> dict[str, Any]:
    """Every option the builder of ``spec`` accepts, with its default for this model."""
    sig = inspect.signature(_builder(spec.builder))
    opts = {
        n: p.default
        for n, p in sig.parameters.items()
        if n not in _NOT_OPTIONS and p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    opts.update(spec.defaults)
    return opts


def resolve_options(spec: ModelSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``options`` over the model's defaults; unknown keys raise ``TypeError``."""
    valid = builder_options(spec)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"{spec.name} got unknown option(s) {unknown}; valid options are: {', '.join(sorted(valid))}"
        )
    merged = {**valid, **options}
    for key, example in (("num_classes", 2), ("in_chans", 3)):
        if key not in merged:  # a builder without the option
            continue
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{key} must be a positive whole number (e.g. {key}={example}), got {value!r}")
        merged[key] = int(value)
    return merged


def create(
    name: str,
    *,
    pretrained: bool | str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    **options: Any,
) -> UnetZooModel:
    """Build a model from the registry.

    Args:
        name: ``<arch>-<encoder>[.<weights tag>]``, e.g. ``"unet-resnet50"``,
            ``"unet-resnet50.tv_in1k"`` or any ``"unet-<timm backbone>"``.
        pretrained: ``None`` (the default: the weights tagged in ``name`` if it has a tag,
            else random init), ``False`` (random init even with a tag; never touches the
            network), ``True`` (the default weights, or the tag in ``name``), a weights tag,
            or a local ``.safetensors`` / ``.pth`` file or directory with encoder weights.
        checkpoint: a whole-model checkpoint from another U-Net project (path or state
            dict); its format is detected and options such as ``num_classes`` inferred.
        num_classes: output channels; the model's reference default if ``None``.
        in_chans: input channels; pretrained first convolutions are adapted.
        **options: architecture options (``unetzoo info NAME`` lists them). Unknown options
            raise ``TypeError``.

    Example:
        >>> model = unetzoo.create("unet-resnet50", num_classes=2, in_chans=1)
        >>> model(torch.randn(1, 1, 67, 71)).shape
        torch.Size([1, 2, 67, 71])
    """
    spec = get_spec(name)
    _, tag = parse_name(name)
    if num_classes is not None:
        options["num_classes"] = num_classes
    if in_chans is not None:
        options["in_chans"] = in_chans
    state_dict = None
    if checkpoint is not None:
        if pretrained:
            raise ValueError("pass either checkpoint= (a whole model) or pretrained= (encoder weights), not both")
        from unetzoo.convert import prepare_checkpoint

        state_dict, inferred = prepare_checkpoint(spec, checkpoint, options)
        for key, value in inferred.items():
            if key in options and options[key] != value:
                from unetzoo.convert import checkpoint_name

                raise ValueError(
                    f"{key}={options[key]!r} conflicts with {checkpoint_name(checkpoint)}, which was trained with "
                    f"{key}={value!r}; leave {key} out (it is read from the checkpoint)"
                )
            options[key] = value
    resolved = resolve_options(spec, options)
    model = _builder(spec.builder)(spec.encoder, **resolved)
    num_classes = resolved.pop("num_classes")
    in_chans = resolved.pop("in_chans")
    model.config = ModelConfig(name=spec.name, num_classes=num_classes, in_chans=in_chans, options=resolved)
    model.weights_spec = None
    if state_dict is not None:
        from unetzoo.convert import load_converted

        load_converted(model, state_dict, source=checkpoint)
        if state_dict.preprocessing is not None:  # the source project's normalisation, not ImageNet's
            model.preprocessing = state_dict.preprocessing.for_channels(in_chans)
    elif pretrained or (pretrained is None and tag is not None):
        from unetzoo.weights import load_pretrained

        model.weights_spec = load_pretrained(model, spec, pretrained if pretrained else True, tag)
    return model


@dataclass(frozen=True)
class ModelInfo:
    """What ``model_info`` reports about a model at its default configuration."""

    name: str
    spec: ModelSpec
    encoder_source: str | None
    encoder_name: str | None
    channels: tuple[int, ...] | None
    reductions: tuple[int, ...] | None
    default_weights: WeightsSpec | None
    num_params: int
    options: Mapping[str, Any]

    @property
    def curated(self) -> bool:
        return self.spec.curated


@functools.lru_cache(maxsize=256)
def model_info(name: str) -> ModelInfo:
    """The typed spec of ``name`` plus facts measured from the backbone itself.

    The model is built on the ``meta`` device (no memory, no weights, no network) to read
    its channel and reduction lists and count its parameters at the default configuration.
    """
    spec = get_spec(name)
    with torch.device("meta"):
        model = create(spec.name)
    encoder = getattr(model, "encoder", None)
    default = spec.weights_for(None) if spec.default_tag else None
    return ModelInfo(
        name=spec.name,
        spec=spec,
        encoder_source=spec.encoder.source if spec.encoder else None,
        encoder_name=spec.encoder.name if spec.encoder else None,
        channels=tuple(encoder.channels) if encoder is not None and hasattr(encoder, "channels") else None,
        reductions=tuple(encoder.reductions) if encoder is not None and hasattr(encoder, "reductions") else None,
        default_weights=default,
        num_params=model.num_parameters(),
        options=dict(model.config.options, num_classes=model.config.num_classes, in_chans=model.config.in_chans),
    )
