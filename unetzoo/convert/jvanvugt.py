"""jvanvugt/pytorch-unet ``UNet`` (its defaults: the 2015 paper's network) -> ``unet-original``.

Keys: ``down_path.{0-4}.block.{0,2}`` (conv, ReLU, conv, ReLU), ``up_path.{0-3}.up`` (the 2x2
transposed convolution), ``up_path.{0-3}.conv_block.block.{0,2}`` and ``last`` (the 1x1 head).
``num_classes`` and ``in_chans`` are inferred.

Only that project's defaults are the paper's network: ``depth=5, wf=6, padding=False,
batch_norm=False, up_mode='upconv'``. Checkpoints with batch norm, another depth or width, or
``up_mode='upsample'`` have other keys or shapes and are refused. ``padding=True`` cannot be told
apart from the keys (the same tensors, used with padded convolutions): load those checkpoints with
``padding=True``, which unet-original takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from unetzoo.convert.base import CheckpointFormat, ConvertedStateDict, io_options, rename_keys, rule

__all__ = ["FORMATS", "convert_jvanvugt"]

_CONV = {"0": "conv1", "2": "conv2"}


def _conv(prefix: str, index: str, param: str) -> str | None:
    sub = _CONV.get(index)
    return None if sub is None else f"{prefix}.block.{sub}.0.{param}"


_RULES = (
    rule(r"down_path\.(\d)\.block\.(\d)\.(weight|bias)", lambda m: _conv(f"encoder.{m[1]}", m[2], m[3])),
    rule(r"up_path\.(\d)\.up\.(weight|bias)", "decoder.{}.up.{}"),
    rule(r"up_path\.(\d)\.conv_block\.block\.(\d)\.(weight|bias)", lambda m: _conv(f"decoder.{m[1]}", m[2], m[3])),
    rule(r"last\.(weight|bias)", "head.{}"),
)


def convert_jvanvugt(state_dict: Mapping[str, torch.Tensor]) -> tuple[ConvertedStateDict, dict[str, Any]]:
    """Map a jvanvugt/pytorch-unet ``UNet`` state dict onto ``unet-original``."""
    for key, variant in ((".running_mean", "batch_norm=True"), (".up.1.weight", "up_mode='upsample'")):
        if found := next((k for k in state_dict if k.endswith(key)), None):
            raise ValueError(f"this jvanvugt/pytorch-unet checkpoint was trained with {variant} (it has {found}); "
                             "unet-original is the paper's network, the project's defaults: batch_norm=False, "
                             "up_mode='upconv'. Such a checkpoint has no unetzoo counterpart")
    converted = rename_keys(state_dict, _RULES, "jvanvugt")
    return converted, io_options(converted, "encoder.0.block.conv1.0.weight")


FORMATS = (
    CheckpointFormat(
        name="jvanvugt",
        description="jvanvugt/pytorch-unet UNet (the 2015 paper's network)",
        signature=("down_path.0.block.0.weight", "last.weight"),
        model="unet-original",
        convert=convert_jvanvugt,
        notes="a checkpoint trained with padding=True has the same weights as one without: pass padding=True "
              "for it (batch_norm=False, depth=5, wf=6 and up_mode='upconv', the defaults, are the only others)",
        ask=("padding",),
    ),
)
