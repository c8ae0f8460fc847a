"""The design card's models reproduce bubbliiiing/unet-pytorch (SEED_SYSTEMS.md §1)."""

import pytest
import torch
from torch import nn

import unetzoo


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "name, num_classes, total, backbone",
    [
        ("unet-vgg16", 21, 24_892_437, 14_714_688),
        ("unet-vgg16", 2, 24_891_202, 14_714_688),
        ("unet-resnet50", 21, 43_934_101, 23_508_032),
        ("unet-resnet50", 2, 43_932_866, 23_508_032),
    ],
)
def test_seed_parameter_counts(name, num_classes, total, backbone):
    with torch.device("meta"):
        model = unetzoo.create(name, num_classes=num_classes)
    assert _count(model) == total
    assert _count(model.encoder) == backbone


def test_resnet50_up_conv_size():
    with torch.device("meta"):
        model = unetzoo.create("unet-resnet50")
    assert len(model.decoder.extra) == 1
    assert _count(model.decoder.extra[0]) == 73_856  # the seed's up_conv


def test_vgg16_feature_taps():
    with torch.device("meta"):
        model = unetzoo.create("unet-vgg16")
    enc = model.encoder
    assert enc.channels == (64, 128, 256, 512, 512)
    assert enc.reductions == (1, 2, 4, 8, 16)
    # feat1..feat5 = features[0:4], [4:9], [9:16], [16:23], [23:30]; pool5 (index 30) unused
    assert [len(s) for s in enc.stages()] == [4, 5, 7, 7, 7]
    decoder_in = [b.conv1[0].in_channels for b in model.decoder.blocks]
    assert decoder_in == [1024, 768, 384, 192]


def test_resnet50_decoder_inputs():
    with torch.device("meta"):
        model = unetzoo.create("unet-resnet50")
    assert [b.conv1[0].in_channels for b in model.decoder.blocks] == [3072, 1024, 512, 192]
    assert [b.conv1[0].out_channels for b in model.decoder.blocks] == [512, 256, 128, 64]
    assert isinstance(model.head, nn.Conv2d) and model.head.kernel_size == (1, 1)


def _seed_unet_up(skip, x, conv1, conv2, act=True):
    x = torch.cat([skip, nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)], 1)
    x = conv1(x)
    x = torch.relu(x) if act else x
    x = conv2(x)
    return torch.relu(x) if act else x


@pytest.mark.parametrize("act", ["relu", None])
def test_vgg16_forward_matches_seed_dataflow(act):
    """Recompute the seed's forward from the model's own layers, written out by hand."""
    torch.manual_seed(0)
    model = unetzoo.create("unet-vgg16", num_classes=3, decoder_act=act).eval()
    x = torch.randn(1, 3, 32, 48)
    feats, h = [], x
    f = model.encoder.features
    for a, b in [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]:
        h = f[a:b](h)
        feats.append(h)
    y = feats[4]
    for block, skip in zip(model.decoder.blocks, feats[3::-1]):
        y = _seed_unet_up(skip, y, block.conv1[0], block.conv2[0], act=act is not None)
    expected = model.head(y)
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_resnet50_maxpool_quirk_is_an_option():
    model = unetzoo.create("unet-resnet50", maxpool_quirk=True)
    pool = model.encoder.maxpool
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 0, True)
    default = unetzoo.create("unet-resnet50").encoder.maxpool
    assert default.padding == 1 and not default.ceil_mode
    with pytest.raises((ValueError, TypeError), match="maxpool_quirk"):
        unetzoo.create("unet-vgg16", maxpool_quirk=True)
    with pytest.raises(ValueError, match="maxpool_quirk"):
        unetzoo.create("unet-resnet18", maxpool_quirk=True)
