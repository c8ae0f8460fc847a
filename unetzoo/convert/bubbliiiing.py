"""bubbliiiing/unet-pytorch ``Unet(backbone='vgg' | 'resnet50')`` -> ``unet-vgg16`` / ``unet-resnet50``.

Checkpoint keys (SEED_SYSTEMS.md §1): the torchvision backbone keys under ``vgg.`` or
``resnet.``, the decoder blocks ``up_concat{1..4}.conv{1,2}``, the ResNet-only ``up_conv.{1,3}``
and the head ``final``. ``up_concat4`` is the deepest block, so it becomes ``decoder.blocks.0``.

Inferred: ``num_classes`` and ``in_chans`` from the shapes; ``maxpool_quirk=True`` for every
ResNet50 checkpoint (that project's max-pool has padding 0 and ceil_mode, see
:class:`~unetzoo.encoders.torchvision.ResNetEncoder`).

Not inferable: VGG checkpoints from before August 2021 (e.g. ``unet_voc.pth``) were trained with
a decoder without ReLUs, under the same keys; load those with ``decoder_act=None``. ResNet50
checkpoints always had them (and so does their skip-less ``up_conv`` block): ``decoder_act='relu'``
is inferred for them, so ``decoder_act=None`` there is a conflict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from unetzoo.convert.base import (
    SCALED_ONLY,
    CheckpointFormat,
    ConvertedStateDict,
    io_options,
    rename_keys,
    rule,
)

__all__ = ["FORMATS", "convert_vgg16", "convert_resnet50"]

_DECODER_RULES = (
    rule(r"up_concat([1-4])\.conv([12])\.(weight|bias)", lambda m: f"decoder.blocks.{4 - int(m[1])}.conv{m[2]}.0.{m[3]}"),
    rule(r"up_conv\.([13])\.(weight|bias)", lambda m: f"decoder.extra.0.conv{(int(m[1]) + 1) // 2}.0.{m[2]}"),
    rule(r"final\.(weight|bias)", "head.{}"),
)
_NOTE = "checkpoints from before Aug 2021 (unet_voc.pth) need decoder_act=None (same keys, no decoder ReLU)"


def _convert(state_dict: Mapping[str, torch.Tensor], prefix: str, first_conv: str, name: str):
    rules = (rule(rf"{prefix}\.(.+)", "encoder.{}"), *_DECODER_RULES)
    converted = rename_keys(state_dict, rules, name)
    return converted, io_options(converted, f"encoder.{first_conv}.weight")


def convert_vgg16(state_dict: Mapping[str, torch.Tensor]) -> tuple[ConvertedStateDict, dict[str, Any]]:
    """Map a bubbliiiing ``Unet(backbone='vgg')`` state dict onto ``unet-vgg16``."""
    return _convert(state_dict, "vgg", "features.0", "bubbliiiing-vgg16")


def convert_resnet50(state_dict: Mapping[str, torch.Tensor]) -> tuple[ConvertedStateDict, dict[str, Any]]:
    """Map a bubbliiiing ``Unet(backbone='resnet50')`` state dict onto ``unet-resnet50``."""
    converted, inferred = _convert(state_dict, "resnet", "conv1", "bubbliiiing-resnet50")
    inferred["maxpool_quirk"] = True
    # the ResNet50 model came with the decoder's ReLUs (only the VGG one has a checkpoint from before
    # them), and its skip-less up_conv block always had them: decoder_act=None would drop those too
    inferred["decoder_act"] = "relu"
    return converted, inferred


FORMATS = (
    CheckpointFormat(
        name="bubbliiiing-vgg16",
        description="bubbliiiing/unet-pytorch Unet(backbone='vgg')",
        signature=("vgg.features.0.weight", "up_concat1.conv1.weight", "final.weight"),
        model="unet-vgg16",
        convert=convert_vgg16,
        notes=_NOTE,
        ask=("decoder_act",),
        preprocessing=SCALED_ONLY,  # preprocess_input: image / 255
    ),
    CheckpointFormat(
        name="bubbliiiing-resnet50",
        description="bubbliiiing/unet-pytorch Unet(backbone='resnet50')",
        signature=("resnet.conv1.weight", "up_concat1.conv1.weight", "final.weight"),
        model="unet-resnet50",
        convert=convert_resnet50,
        notes="its decoder always has ReLUs (decoder_act='relu'); the ReLU-free era's checkpoint is the VGG one",
        preprocessing=SCALED_ONLY,  # preprocess_input: image / 255
    ),
)
