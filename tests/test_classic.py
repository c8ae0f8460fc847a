"""The classic U-Nets: unet-classic, unet-original, unet-strided (SEED_SYSTEMS.md §2-§5)."""

from __future__ import annotations

import math

import pytest
import torch
from reference import jvanvugt, milesial, qiaofengsheng, wzmiaomiao
from torch import nn

import unetzoo
from unetzoo.decoders.original import OriginalUNet


def _meta(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return unetzoo.create(name, **options)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(
    "name, options, expected",
    [
        ("unet-classic", {}, 31_037_698),  # milesial v3: transposed, 2 classes
        ("unet-classic", {"bilinear": True}, 17_263_042),
        ("unet-classic", {"bilinear": True, "base_c": 32, "in_chans": 3}, 4_318_434),  # WZMIAOMIAO DRIVE
        ("unet-original", {"in_chans": 1}, 31_030_658),
        ("unet-strided", {}, 32_085_699),
    ],
)
def test_parameter_counts(name, options, expected):
    assert _meta(name, **options).num_parameters() == expected


def test_reference_networks_have_the_documented_counts():
    """The independent re-implementations agree with the published counts too."""
    with torch.device("meta"):
        assert _count(milesial.UNet(3, 2)) == 31_037_698
        assert _count(milesial.UNet(3, 2, bilinear=True)) == 17_263_042
        assert _count(wzmiaomiao.UNet(3, 2, bilinear=True, base_c=32)) == 4_318_434
        assert _count(jvanvugt.UNet()) == 31_030_658
        assert _count(qiaofengsheng.UNet()) == 32_085_699


def test_create_without_options_builds_the_seed_networks():
    classic = _meta("unet-classic")
    assert (classic.in_chans, classic.num_classes, classic.bilinear) == (3, 2, False)
    assert classic.config.options == {"bilinear": False, "base_c": 64, "bias": False}
    original = _meta("unet-original")
    assert (original.in_chans, original.num_classes, original.border, original.pad_multiple) == (1, 2, 92, None)
    strided = _meta("unet-strided")
    assert (strided.in_chans, strided.num_classes, strided.pad_multiple) == (3, 3, 16)
    assert isinstance(strided.activation, nn.Sigmoid)
    assert [m.p for m in strided.modules() if isinstance(m, nn.Dropout2d)][:2] == [0.3, 0.4]
    assert classic.border == strided.border == 0
    assert classic.output_stride == original.output_stride == strided.output_stride == 16


@pytest.mark.parametrize("name", ["unet-classic", "unet-original", "unet-strided"])
def test_encoder_stages_and_freezing(name):
    model = _meta(name)
    stages = model.encoder_stages()
    assert len(stages) == 5
    model.freeze_encoder(stages=2)
    frozen = {id(p) for s in stages[:2] for p in s.parameters()}
    assert frozen and all(not p.requires_grad for p in stages[0].parameters())
    assert all(p.requires_grad for p in model.parameters() if id(p) not in frozen)
    assert all(not m.training for m in stages[1].modules())
    model.unfreeze_encoder()
    assert all(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------- unet-classic
@pytest.mark.parametrize("bilinear", [False, True])
def test_classic_any_size(bilinear):
    model = unetzoo.create("unet-classic", base_c=4, bilinear=bilinear, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 37, 53)).shape == (2, 3, 37, 53)


def test_classic_rejects_bad_options_and_tiny_inputs():
    with pytest.raises(ValueError, match="base_c must be at least 1"):
        unetzoo.create("unet-classic", base_c=0)
    with pytest.raises(TypeError, match="unknown option"):
        unetzoo.create("unet-classic", dropout=0.5)
    with pytest.raises(ValueError, match="at least 16"):
        unetzoo.create("unet-classic", base_c=2)(torch.randn(1, 3, 15, 64))


def test_classic_bias_option():
    plain, biased = _meta("unet-classic", base_c=8), _meta("unet-classic", base_c=8, bias=True)
    assert plain.encoder[0].block.conv1[0].bias is None
    convs = [m for m in biased.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 18 and all(m.bias is not None for m in convs)


# ----------------------------------------------------------------------------- unet-original
def _simulated_output(n: int) -> int | None:
    """Shape arithmetic of the paper (independent of unetzoo): None if a pool sees an odd size."""
    sizes = []
    for level in range(5):
        if level:
            if n % 2:
                return None
            n //= 2
        n -= 4
        sizes.append(n)
    for skip in reversed(sizes[:-1]):
        n = 2 * n - 4
        if n > skip - 4 or n <= 0:
            return None
    return n if n > 0 else None


def test_valid_input_sizes_match_the_shape_arithmetic():
    expected = [n for n in range(100, 700) if _simulated_output(n) is not None]
    assert unetzoo.valid_input_sizes(100, 699) == expected
    assert expected[:3] == [188, 204, 220] and 572 in expected and 588 in expected
    for n in expected:
        assert unetzoo.original_output_size(n) == _simulated_output(n) == n - 184
    assert unetzoo.valid_input_sizes(500, 600) == [508, 524, 540, 556, 572, 588]


def test_original_572_gives_388():
    model = _meta("unet-original")
    assert model(torch.empty(1, 1, 572, 572, device="meta")).shape == (1, 2, 388, 388)
    assert model(torch.empty(2, 1, 188, 572, device="meta")).shape == (2, 2, 4, 388)


def test_original_invalid_sizes_name_the_nearest_valid_ones():
    model = _meta("unet-original")
    with pytest.raises(ValueError, match=r"^input 500x500 is not valid for unet-original; nearest valid sizes: 492, 508"):
        model(torch.empty(1, 1, 500, 500, device="meta"))
    with pytest.raises(ValueError, match=r"nearest valid sizes: 100 -> 188; 573 -> 572 or 588"):
        model(torch.empty(1, 1, 100, 573, device="meta"))
    with pytest.raises(ValueError, match="nearest valid sizes: 556, 572"):
        unetzoo.original_output_size(570)


def test_original_init_follows_the_paper():
    torch.manual_seed(0)
    model = OriginalUNet()
    checked = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() > 20_000:
            n = m.in_channels * m.kernel_size[0] * m.kernel_size[1]  # 9 C_in for the 3x3 convs
            assert m.weight.mean().abs() < 0.01 * math.sqrt(2 / n)
            assert m.weight.std().item() == pytest.approx(math.sqrt(2 / n), rel=0.03)
            assert torch.count_nonzero(m.bias) == 0
            checked += 1
    assert checked >= 15


def test_original_dropout_at_the_end_of_the_contracting_path():
    assert isinstance(_meta("unet-original").dropout, nn.Identity)
    model = unetzoo.create("unet-original", dropout=0.5)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.5
    seen = []
    model.decoder[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = torch.randn(1, 1, 188, 188)
    with torch.no_grad():
        model.train()(x)
        model.eval()(x)
    train_zeros, eval_zeros = [(t == 0).float().mean().item() for t in seen]
    # in eval only the ReLU's zeros; in training dropout also zeroes half of the rest
    assert train_zeros == pytest.approx(1 - (1 - eval_zeros) * 0.5, abs=0.05)
    with pytest.raises(ValueError, match="dropout"):
        unetzoo.create("unet-original", dropout=1.5)


# ----------------------------------------------------------------------------- unet-strided
def test_strided_options():
    model = _meta("unet-strided", num_classes=1, dropout=(0.1, 0.2), sigmoid=False)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert len(rates) == 18 and set(rates[0::2]) == {0.1} and set(rates[1::2]) == {0.2}
    assert isinstance(model.activation, nn.Identity) and model.head.out_channels == 1
    assert {m.p for m in _meta("unet-strided", dropout=0.0).modules() if isinstance(m, nn.Dropout2d)} == {0.0}
    with pytest.raises(ValueError, match="dropout"):
        unetzoo.create("unet-strided", dropout=(0.1, 0.2, 0.3))


def test_strided_any_size_and_sigmoid():
    model = unetzoo.create("unet-strided", num_classes=2).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 21, 40))
    assert y.shape == (1, 2, 21, 40) and 0 <= y.min() and y.max() <= 1
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, 16, 40))
