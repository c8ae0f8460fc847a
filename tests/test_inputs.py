"""Inputs: any size, batch size 1, in_chans adaptation, clear errors; compile and export."""

import pytest
import torch
import torch.nn.functional as F

import unetzoo
from unetzoo.encoders.base import adapt_input_conv, load_native_state_dict


@pytest.mark.parametrize("hw", [(67, 71), (64, 64), (33, 100), (1, 1)])
def test_any_size(hw):
    model = unetzoo.create("unet-resnet18", num_classes=2, decoder_channels=(16, 16, 8, 8)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *hw)).shape == (1, 2, *hw)


def test_padding_does_not_change_valid_sizes():
    """On sizes the unpadded network accepts, the result is the unpadded network's."""
    model = unetzoo.create("unet-vgg16", num_classes=2).eval()
    x = torch.randn(1, 3, 48, 32)
    with torch.no_grad():
        direct = model.head(model.decoder(model.encoder(x)))
        assert torch.equal(model(x), direct)


def test_batch_size_one_in_train_mode():
    model = unetzoo.create("unet-resnet50", num_classes=2).train()
    model(torch.randn(1, 3, 67, 71)).mean().backward()


def test_adapt_input_conv_rules():
    w = torch.randn(8, 3, 3, 3)
    assert torch.allclose(adapt_input_conv(w, 1), w.sum(1, keepdim=True))
    w5 = adapt_input_conv(w, 5)
    assert w5.shape == (8, 5, 3, 3)
    expected = torch.cat([w, w[:, :2]], 1) * (3 / 5)
    assert torch.allclose(w5, expected)
    assert adapt_input_conv(w, 3) is w


@pytest.mark.parametrize("name", ["unet-resnet50", "unet-vgg16", "unet-resnet18"])
@pytest.mark.parametrize("in_chans", [1, 6])
def test_in_chans_loading_adapts_first_conv(name, in_chans):
    """Adapted weights see a grey image (1 channel) or an RGB image tiled to 6 channels
    exactly as the RGB network sees the RGB image."""
    torch.manual_seed(0)
    rgb = unetzoo.create(name, num_classes=2, decoder_channels=(16, 16, 8, 8)).eval()
    native = {k.removeprefix("model."): v for k, v in rgb.encoder.state_dict().items()}
    model = unetzoo.create(name, num_classes=2, in_chans=in_chans, decoder_channels=(16, 16, 8, 8)).eval()
    model.decoder.load_state_dict(rgb.decoder.state_dict())
    model.head.load_state_dict(rgb.head.state_dict())
    load_native_state_dict(model.encoder, native, source="test")
    image = torch.rand(1, 3, 64, 64)
    if in_chans == 1:
        image = image[:, :1].expand(1, 3, 64, 64)
        x = image[:, :1]
    else:
        x = image.repeat(1, in_chans // 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), rgb(image), atol=1e-4)


def test_load_native_reports_mismatch():
    model = unetzoo.create("unet-resnet18", num_classes=2)
    sd = {k.removeprefix("model."): v for k, v in model.encoder.state_dict().items()}
    sd["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    del sd["layer4.1.bn2.weight"]
    with pytest.raises(ValueError) as err:
        load_native_state_dict(model.encoder, sd, source="weights.pth")
    msg = str(err.value)
    assert "weights.pth" in msg and "layer4.1.bn2.weight" in msg and "layer1.0.conv1.weight" in msg


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(3, 64, 64), r"4-d input.*x\.unsqueeze\(0\)"),
        (torch.randn(2, 1, 3, 64, 64), r"4-d input.*reshape it to \(N, 3, H, W\)"),
        (torch.randn(1, 1, 64, 64), "expected 3 input channels.*in_chans=1"),
        (torch.randn(1, 64, 64, 3), r"channels-last.*x\.permute\(0, 3, 1, 2\)"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating-point"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.int64), "floating-point"),
    ],
)
def test_bad_input_errors(x, match):
    model = unetzoo.create("unet-resnet18", num_classes=2)
    with pytest.raises(ValueError, match=match):
        model(x)


def test_bad_options_errors():
    with pytest.raises(ValueError, match="decoder_channels has 2 entries"):
        unetzoo.create("unet-resnet18", decoder_channels=(8, 8))
    with pytest.raises(ValueError, match="upsample="):
        unetzoo.create("unet-resnet18", upsample="cubic")
    with pytest.raises(ValueError, match="decoder_norm="):
        unetzoo.create("unet-resnet18", decoder_norm="ln2")
    with pytest.raises(ValueError, match="head_kernel must be a positive odd number"):
        unetzoo.create("unet-resnet18", head_kernel=2)  # would shift the logits by half a pixel


def test_group_norm_decoder_takes_any_width():
    model = unetzoo.create("unet-resnet18", decoder_channels=(160, 80, 40, 20, 12), decoder_norm="gn").eval()
    groups = [m.num_groups for m in model.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    widths = [m.num_channels for m in model.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    # 32 groups where they divide the width, else the most that do; one per channel up to 32
    assert dict(zip(widths, groups)) == {160: 32, 80: 16, 40: 8, 20: 20, 12: 12}
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 21, 64, 64)


def test_fixed_size_backbones_name_the_given_size_and_optimize():
    from unetzoo.fast import example_input, optimize_for_inference

    model = unetzoo.create("unet-vit_tiny_patch16_224", num_classes=2).eval()
    with pytest.raises(ValueError, match="only accepts 224x224 inputs.*got 200x200"):
        model(torch.randn(1, 3, 200, 200))  # the size given, not the padded 208x208
    x = example_input(model)
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        want = model(x)
        got = optimize_for_inference(model, dtype=torch.float32)(x)
    assert torch.allclose(got, want, atol=1e-4)


def test_fixed_size_backbones_predict_any_image_size_in_tiles_of_their_size():
    import numpy as np

    torch.manual_seed(0)
    model = unetzoo.create("unet-vit_tiny_patch16_224", num_classes=2, decoder_channels=(16, 16, 16)).eval()
    small = np.random.RandomState(1).randint(0, 256, (100, 150, 3)).astype(np.uint8)
    # an image smaller than the one size: a single window, zero-padded up to 224x224 after normalisation
    pre = unetzoo.transforms_for(model)
    x = torch.from_numpy(((small / 255.0 - np.array(pre.mean)) / np.array(pre.std)).astype(np.float32))
    padded = F.pad(x.permute(2, 0, 1), (0, 224 - 150, 0, 224 - 100))[None]
    with torch.no_grad():
        want = torch.softmax(model(padded), 1)[0, :, :100, :150].numpy()
    np.testing.assert_allclose(unetzoo.predict(model, small, output="probs"), want, rtol=0, atol=1e-5)
    # larger and mixed sizes: blended 224x224 tiles
    assert unetzoo.predict(model, np.zeros((300, 120, 3), np.uint8)).shape == (2, 300, 120)
    with pytest.raises(ValueError, match="only accepts 224x224 inputs, so its tiles must be that size; use tile=224"):
        unetzoo.predict(model, small, tile=256)


@pytest.mark.parametrize("name", ["unet-levit_128s", "unet-efficientvit_m0"])
def test_fixed_size_backbones_whose_size_is_no_multiple_of_their_stride(name):
    """LeViT and EfficientViT take only 224x224 but reduce by 64: the model must not pad 224 up
    to 256 (which the backbone refuses), and predict tiles any image in 224 windows."""
    torch.manual_seed(0)
    model = unetzoo.create(name, num_classes=2).eval()
    assert model.encoder.output_stride == 64 and model.encoder.fixed_input_size == (224, 224)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 2, 224, 224)
    assert unetzoo.predict(model, torch.rand(3, 300, 250)).shape == (2, 300, 250)


def test_backbones_of_unpadded_convolutions_still_give_input_sized_logits():
    """inception_v3's features fall a few pixels short of input / stride (125 for 256 / 2), so the
    decoder's 2x steps end short of the input: the logits are resized to the padded input."""
    torch.manual_seed(0)
    model = unetzoo.create("unet-inception_v3", num_classes=2, decoder_channels=(16, 16, 16, 16)).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert model.encoder(x)[0].shape[-1] == 125
        raw = model.head(model.decoder(model.encoder(x)))
        assert raw.shape[-2:] == (250, 250)
        torch.testing.assert_close(model(x), F.interpolate(raw, size=(256, 256), mode="bilinear"))
        assert model(torch.randn(1, 3, 200, 300)).shape == (1, 2, 200, 300)


@pytest.mark.parametrize("name, options", [("unet-strided", {}), ("unet-classic", {"base_c": 4})])
def test_logits_are_contiguous_eager_and_fast(name, options):
    from unetzoo.fast import optimize_for_inference

    model = unetzoo.create(name, **options).eval()
    x = torch.randn(1, 3, 45, 71)  # needs padding
    with torch.no_grad():
        eager = model(x)
        assert eager.is_contiguous() and eager.view(-1).numel() == eager.numel()
        fast = optimize_for_inference(model, dtype=torch.bfloat16)(x)
    assert fast.is_contiguous() and fast.dtype == torch.float32


@pytest.mark.parametrize("name, options, size", [
    ("unet-classic", {"base_c": 4}, 64),
    ("unet-original", {}, 188),  # valid convolutions: 188 px in, 4 px out
    ("unet-resnet18", {"decoder_channels": (16, 8, 8, 8)}, 64),
])
def test_a_channels_last_model_gives_contiguous_logits(name, options, size):
    model = unetzoo.create(name, **options).eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, model.in_chans, size, size).to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(x)
    assert out.is_contiguous() and out.view(-1).numel() == out.numel()


def _tiny():
    return unetzoo.create(
        "unet-resnet10t", num_classes=2, decoder_channels=(16, 8, 8, 8), decoder_norm="bn", upsample="nearest"
    ).eval()


def test_torch_compile_small_model():
    model = _tiny()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-4)


def test_torch_export_small_model():
    model = _tiny()
    x = torch.randn(1, 3, 64, 96)
    ep = torch.export.export(model, (x,), strict=True)
    with torch.no_grad():
        assert torch.allclose(ep.module()(x), model(x), atol=1e-5)
