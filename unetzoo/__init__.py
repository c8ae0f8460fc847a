"""unetzoo: the U-Net segmentation model zoo.

    >>> import unetzoo
    >>> unetzoo.list_models("unet-vgg*")
    ['unet-vgg16', ...]
    >>> model = unetzoo.create("unet-resnet50", num_classes=2)

Importing the package is cheap: it neither imports torch nor touches the network. The public
names below are resolved on first use (PEP 562), so ``import unetzoo`` stays fast.
"""

from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # registry and the front door
    "create": "unetzoo.factory",
    "list_models": "unetzoo.registry",
    "model_info": "unetzoo.factory",
    "parse_name": "unetzoo.registry",
    "register_model": "unetzoo.registry",
    "ModelSpec": "unetzoo.registry",
    "EncoderSpec": "unetzoo.registry",
    "WeightsSpec": "unetzoo.registry",
    "ModelInfo": "unetzoo.factory",
    "SegmentationModel": "unetzoo.model",
    "UnetZooModel": "unetzoo.model",
    # classic networks
    "original_output_size": "unetzoo.decoders.original",
    "valid_input_sizes": "unetzoo.decoders.original",
    # weights and the hub
    "transforms_for": "unetzoo.weights",
    "Preprocessing": "unetzoo.weights",
    "WeightsNotFoundError": "unetzoo.weights",
    "from_pretrained": "unetzoo.hub",
    # inference
    "predict": "unetzoo.inference",
    "optimize_for_inference": "unetzoo.fast",
    "tune_cpu_allocator": "unetzoo.cpu_memory",
    "export_model": "unetzoo.export",
    # fine-tuning building blocks
    "SegmentationFolder": "unetzoo.data",
    "build_loss": "unetzoo.losses",
    "ConfusionMatrix": "unetzoo.metrics",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unetzoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    # The public names and the subpackages imported so far; not this file's own helpers
    # (importlib, types, TYPE_CHECKING, ...), which would clutter tab completion.
    submodules = {
        name for name, value in globals().items()
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}"
    }
    return sorted({*__all__, *submodules})


if TYPE_CHECKING:  # pragma: no cover - for static type checkers and IDEs only
    from unetzoo.cpu_memory import tune_cpu_allocator
    from unetzoo.data import SegmentationFolder
    from unetzoo.decoders.original import original_output_size, valid_input_sizes
    from unetzoo.export import export_model
    from unetzoo.factory import ModelInfo, create, model_info
    from unetzoo.fast import optimize_for_inference
    from unetzoo.hub import from_pretrained
    from unetzoo.inference import predict
    from unetzoo.losses import build_loss
    from unetzoo.metrics import ConfusionMatrix
    from unetzoo.model import SegmentationModel, UnetZooModel
    from unetzoo.registry import (
        EncoderSpec,
        ModelSpec,
        WeightsSpec,
        list_models,
        parse_name,
        register_model,
    )
    from unetzoo.weights import Preprocessing, WeightsNotFoundError, transforms_for
