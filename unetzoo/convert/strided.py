"""qiaofengsheng/pytorch-UNet (the strided-conv tutorial network) -> ``unet-strided``.

Keys: ``c{1..9}.layer.{0,1,4,5}`` (conv, BN, -, -, conv, BN of each Conv_Block; ``c1..c5``
contract, ``c6..c9`` expand), ``d{1..4}.layer.{0,1}`` (the stride-2 conv and its BN),
``u{1..4}.layer`` (the 1x1 conv after nearest upsampling) and ``out`` (the 3x3 head).
``num_classes`` and ``in_chans`` are inferred.

Not inferable: whether the head is followed by a sigmoid. The first version (3 outputs, BCE)
and the second (1 output) have one; the later CrossEntropy version does not: pass
``sigmoid=False`` for those checkpoints.
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

__all__ = ["FORMATS", "convert_strided"]

_CONV_BLOCK = {"0": "conv1.0", "1": "conv1.1", "4": "conv2.0", "5": "conv2.1"}
_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _conv_block(m) -> str | None:
    level, index, param = int(m[1]), m[2], m[3]
    sub = _CONV_BLOCK.get(index)
    if sub is None:
        return None
    prefix = f"encoder.{level - 1}" if level <= 5 else f"decoder.{level - 6}"
    return f"{prefix}.block.{sub}.{param}"


_RULES = (
    rule(rf"c([1-9])\.layer\.(\d)\.{_PARAM}", _conv_block),
    rule(rf"d([1-4])\.layer\.([01])\.{_PARAM}", "encoder.{}.down.{}.{}"),
    rule(r"u([1-4])\.layer\.(weight|bias)", lambda m: f"decoder.{int(m[1]) - 1}.up.conv.{m[2]}"),
    rule(r"out\.(weight|bias)", "head.{}"),
)


def convert_strided(state_dict: Mapping[str, torch.Tensor]) -> tuple[ConvertedStateDict, dict[str, Any]]:
    """Map a qiaofengsheng/pytorch-UNet ``UNet`` state dict onto ``unet-strided``."""
    converted = rename_keys(state_dict, _RULES, "qiaofengsheng")
    return converted, io_options(converted, "encoder.0.block.conv1.0.weight")


FORMATS = (
    CheckpointFormat(
        name="qiaofengsheng",
        description="qiaofengsheng/pytorch-UNet UNet (strided-conv tutorial)",
        signature=("c1.layer.0.weight", "d1.layer.0.weight", "out.weight"),
        model="unet-strided",
        convert=convert_strided,
        notes="checkpoints of the later CrossEntropy version need sigmoid=False (same keys; the first, "
              "BCE version's sigmoid is the default)",
        ask=("sigmoid",),
        preprocessing=SCALED_ONLY,  # transforms.ToTensor() only
    ),
)
