"""Contract tests over a sample of the registry: every model honours the same promises.

Curated models plus timm backbones of many families: any input size gives a same-size
output, gradients flow, and the encoder's declared channels/reductions are what it returns.
"""

import math

import pytest
import torch

import unetzoo
from unetzoo.registry import get_spec

CURATED_UNETS = [n for n in unetzoo.list_models(curated_only=True) if get_spec(n).encoder is not None]

TIMM_SAMPLE = [
    # resnet family
    "resnet10t", "resnet18d", "seresnet18", "resnext26ts", "res2net50_14w_8s", "nf_resnet26", "dla34",
    # efficientnet / mobile
    "efficientnet_b0", "efficientnet_lite0", "tf_efficientnet_lite0", "tinynet_e", "mixnet_s",
    "mobilenetv3_small_050", "mobilenetv2_050", "mnasnet_small", "fbnetc_100", "lcnet_050",
    "ghostnet_050", "mobileone_s0", "mobilevit_xxs",
    # convnext / metaformer / hierarchical transformers
    "convnext_atto", "convnextv2_atto", "edgenext_xx_small", "fastvit_t8", "pvt_v2_b0", "poolformerv2_s12",
    # regnet
    "regnetx_002", "regnety_002", "regnetz_b16",
    # vgg-style / plain
    "vgg11", "repvgg_a0", "cspdarknet53",
    # others
    "densenet121", "hrnet_w18_small", "efficientvit_b0", "mambaout_femto",
]


def _small_decoder(name: str) -> tuple[int, ...]:
    info = unetzoo.model_info(name)
    n = len(info.channels) - 1
    return tuple(max(8, 64 >> i) for i in range(n))


def _check_model(name: str, **kw) -> None:
    torch.manual_seed(0)
    model = unetzoo.create(name, num_classes=3, **kw)
    model.train()
    x = torch.randn(2, 3, 67, 71, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 3, 67, 71)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[-4:]), "decoder and head must receive gradients"

    # declared channels/reductions are what the encoder returns
    model.eval()
    with torch.no_grad():
        feats = model.encoder(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == list(model.encoder.channels)
    assert [64 // f.shape[2] for f in feats] == list(model.encoder.reductions)
    assert [96 // f.shape[3] for f in feats] == list(model.encoder.reductions)


@pytest.mark.parametrize("name", CURATED_UNETS)
def test_curated_contract(name):
    _check_model(name, decoder_channels=_small_decoder(name))


@pytest.mark.parametrize("timm_name", TIMM_SAMPLE)
def test_timm_backbone_contract(timm_name):
    name = f"unet-{timm_name}"
    _check_model(name, decoder_channels=_small_decoder(name))


@pytest.mark.parametrize("name", ["unet-vgg16", "unet-resnet50", "unet-convnext_tiny"])
def test_default_decoder_full_resolution(name):
    """Extra upsampling brings any first reduction (1, 2, 4) back to full resolution."""
    with torch.device("meta"):
        model = unetzoo.create(name, num_classes=2)
        out = model(torch.empty(1, 3, 64, 64))
    assert out.shape == (1, 2, 64, 64)
    first = model.encoder.reductions[0]
    assert len(model.decoder.extra) == first.bit_length() - 1


def test_fixed_size_backbone_says_what_it_needs():
    model = unetzoo.create("unet-vit_tiny_patch16_224", num_classes=2, decoder_channels=(16, 16, 16))
    with pytest.raises(ValueError, match="only accepts 224x224"):
        model(torch.randn(1, 3, 100, 100))


@pytest.mark.parametrize("name,size", [("unet-convmixer_768_32", (50, 70)), ("unet-crossvit_tiny_240", (240, 240))])
def test_a_first_stride_that_is_no_power_of_two(name, size):
    """ConvMixer's features are at stride 7, CrossViT's at 12 and 17, patch-14 ViTs' at 14: the
    decoder doubles up past full resolution and the model resizes the logits to the input."""
    model = unetzoo.create(name, num_classes=3, decoder_channels=_small_decoder(name)).eval()
    first = model.encoder.reductions[0]
    assert first & (first - 1) and len(model.decoder.extra) == math.ceil(math.log2(first))
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 3, *size) and torch.isfinite(out).all()


def test_halo_attention_pads_to_its_block_grid():
    """HaloAttn splits its input into 8 px blocks at stride 32 here, so inputs are padded to a
    multiple of 256, not only of the output stride; 67x71 used to fail an empty assertion."""
    model = unetzoo.create("unet-eca_halonext26ts", num_classes=3, decoder_channels=(64, 32, 16, 8))
    assert model.encoder.output_stride == 32 and model.pad_multiple == 256
    model.train()
    out = model(torch.randn(2, 3, 67, 71))
    assert out.shape == (2, 3, 67, 71) and torch.isfinite(out).all()
    out.mean().backward()
    assert len(model.encoder_stages()) == len(model.encoder.channels)
