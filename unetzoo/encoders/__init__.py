"""Encoders: one module per source (timm, torchvision), one entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unetzoo.encoders.base import Encoder
    from unetzoo.registry import EncoderSpec

__all__ = ["create_encoder"]


def create_encoder(spec: "EncoderSpec", *, in_chans: int = 3, **options) -> "Encoder":
    """Build the encoder described by ``spec`` (weights are loaded separately)."""
    if spec.source == "torchvision":
        from unetzoo.encoders.torchvision import create_torchvision_encoder

        return create_torchvision_encoder(spec.name, in_chans=in_chans, **options)
    if spec.source == "timm":
        from unetzoo.encoders.timm import TimmEncoder

        return TimmEncoder(spec.name, in_chans=in_chans, **options)
    raise ValueError(f"unknown encoder source {spec.source!r}; expected 'timm' or 'torchvision'")
