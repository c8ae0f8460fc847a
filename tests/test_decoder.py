"""The U-Net decoder's concatenation-free first convolution (ConcatConv2d) and its GroupNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unetzoo
from unetzoo.decoders import unet as unet_decoder
from unetzoo.decoders.unet import ConcatConv2d, GroupNorm, _chunks


@pytest.mark.parametrize(("channels", "limit", "expected"), [
    (3072, 1024, [1024, 1024, 1024]), (2048, 1024, [1024, 1024]), (1500, 1024, [750, 750]),
    (1025, 1024, [513, 512]), (64, 1024, [64]),
])
def test_chunks_are_few_and_even(channels, limit, expected):
    assert _chunks(channels, limit) == expected
    assert sum(expected) == channels


def _pair(splits, cout, bias=True):
    torch.manual_seed(0)
    conv = ConcatConv2d(splits, cout, 3, padding=1, bias=bias)
    ref = torch.nn.Conv2d(sum(splits), cout, 3, padding=1, bias=bias)
    ref.load_state_dict(conv.state_dict())  # same keys and shapes: checkpoints are unchanged
    return conv, ref


@pytest.mark.parametrize("bias", [True, False])
def test_split_convolution_equals_conv_of_the_concatenation(monkeypatch, bias):
    monkeypatch.setattr(unet_decoder, "CONCAT_CHUNK", 5)  # small chunks: every part is cut
    conv, ref = _pair((12, 7), 4, bias)
    a = torch.randn(2, 12, 9, 11, requires_grad=True)
    b = torch.randn(2, 7, 9, 11, requires_grad=True)
    out, expected = conv([a, b]), ref(torch.cat([a, b], 1))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    params = [conv.weight] + ([conv.bias] if bias else [])
    ref_params = [ref.weight] + ([ref.bias] if bias else [])
    got = torch.autograd.grad(out, [a, b, *params], grad)
    want = torch.autograd.grad(expected, [a, b, *ref_params], grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_split_path_does_not_concatenate_when_training(monkeypatch):
    conv, _ = _pair((6, 3), 4)
    calls = []
    real_cat = torch.cat
    monkeypatch.setattr(torch, "cat", lambda *a, **k: calls.append(1) or real_cat(*a, **k))
    parts = [torch.randn(1, 6, 5, 5), torch.randn(1, 3, 5, 5)]
    conv(parts).sum().backward()
    assert not calls, "the autograd path must not build the concatenated tensor"
    with torch.no_grad():
        conv(parts)
    assert calls, "without autograd one convolution over the concatenation runs"


def _saved_bytes(fn, params) -> int:
    """Bytes of the distinct storages autograd saves while ``fn`` runs (parameters excluded)."""
    sizes = {}

    def pack(t):
        sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    skip = {p.untyped_storage().data_ptr() for p in params}
    return sum(n for ptr, n in sizes.items() if ptr not in skip)


def test_split_path_saves_less_for_backward_than_cat():
    conv, ref = _pair((32, 16), 8)
    x = torch.randn(2, 32, 16, 16, requires_grad=True)
    b = torch.randn(2, 16, 16, 16)
    params = [*conv.parameters(), *ref.parameters()]
    holder = {}

    def run(concat: bool):
        a = holder["a"] = torch.relu(x)  # like a skip feature: saved by its own producer anyway
        return ref(torch.cat([a, b], 1)) if concat else conv([a, b])

    split, cat = _saved_bytes(lambda: run(False), params), _saved_bytes(lambda: run(True), params)
    # cat saves a new copy of both parts; the split path reuses the parts themselves
    assert cat - split == holder["a"].nbytes, (split, cat)


def test_wrong_input_channels_are_named():
    conv, _ = _pair((6, 3), 4)
    with pytest.raises(ValueError, match=r"\[6, 3\] channels, got \[6, 4\]"):
        conv([torch.randn(1, 6, 5, 5), torch.randn(1, 4, 5, 5)])


def test_decoder_uses_it_and_training_matches_inference():
    model = unetzoo.create("unet-resnet18", num_classes=3)
    assert all(isinstance(b.conv1[0], ConcatConv2d) for b in model.decoder.blocks)
    assert not any(isinstance(b.conv1[0], ConcatConv2d) for b in model.decoder.extra)  # no skip there
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        cat_path = model(x)
    split_path = model(x)  # grad enabled: the split path
    torch.testing.assert_close(split_path, cat_path, rtol=1e-4, atol=1e-5)
    F.cross_entropy(split_path, torch.zeros(1, 64, 64, dtype=torch.long)).backward()
    assert model.decoder.blocks[0].conv1[0].weight.grad is not None


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shape", [(2, 5, 7, 4), (1, 3, 1, 6), (1, 16, 32, 32), (1, 2, 1, 1)])
def test_lerp_upsampling_equals_interpolate(shape, align_corners):
    from unetzoo.decoders.unet import upsample2x_bilinear

    x = torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    out = upsample2x_bilinear(x, align_corners)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=align_corners)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_lerp_upsampling_in_bfloat16_stays_within_a_rounding_step_of_interpolate():
    from unetzoo.decoders.unet import upsample2x_bilinear

    x = torch.randn(1, 64, 40, 48).contiguous(memory_format=torch.channels_last)
    exact = F.interpolate(x.double(), scale_factor=2, mode="bilinear", align_corners=True)
    out = upsample2x_bilinear(x.bfloat16(), True).double()
    aten = F.interpolate(x.bfloat16(), scale_factor=2, mode="bilinear", align_corners=True).double()
    # bf16 keeps 8 significant bits: the input's own rounding and one per pass
    assert (out - exact).abs().max() <= 3 * 2**-8 * exact.abs().max()
    assert (out - exact).abs().mean() <= 2 * (aten - exact).abs().mean() + 1e-3


def test_lerp_upsampling_refuses_other_layouts():
    from unetzoo.decoders.unet import upsample2x_bilinear

    with pytest.raises(ValueError, match="channels-last"):
        upsample2x_bilinear(torch.randn(1, 4, 6, 6), True)  # 4 channels, plain NCHW


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_norm_on_channels_last_matches_torch_and_keeps_the_layout(dtype):
    """unetzoo's GroupNorm computes a channels-last CPU input in the default layout (faster);
    values and gradients must be torch's, and the output must stay channels-last."""
    torch.manual_seed(0)
    ours, plain = GroupNorm(8, 16), nn.GroupNorm(8, 16)
    with torch.no_grad():
        ours.weight.normal_(), ours.bias.normal_()
    plain.load_state_dict(ours.state_dict())
    x = (torch.randn(2, 16, 12, 10) * 3 + 1).to(dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 16, 12, 10).to(dtype)
    results = []
    for norm in (ours, plain):
        xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
        y = norm(xi)
        y.backward(grad)
        results.append((y, xi.grad, norm.weight.grad, norm.bias.grad))
        norm.zero_grad()
    (y, gx, gw, gb), (y_ref, gx_ref, gw_ref, gb_ref) = results
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-5)
    for a, b in ((y, y_ref), (gx, gx_ref), (gw, gw_ref), (gb, gb_ref)):
        torch.testing.assert_close(a, b, **tol)
    contiguous = x.contiguous()
    assert ours(contiguous).is_contiguous()  # the default layout goes straight to torch's kernel


def test_group_norm_reroutes_only_what_autograd_records(monkeypatch):
    """Torch's channels-last forward pass is fast; only its backward pass is slow. So the layout
    switch happens only when gradients will flow (input or weights), never under no_grad."""
    seen = []
    original = nn.GroupNorm.forward
    monkeypatch.setattr(nn.GroupNorm, "forward", lambda self, x: seen.append(x.is_contiguous()) or original(self, x))
    norm = GroupNorm(4, 8)
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        norm(x)
    norm(x)  # the weights want gradients
    norm.requires_grad_(False)
    norm(x)  # nothing to differentiate
    norm(x.requires_grad_(True))
    assert seen == [False, True, False, True]


def test_the_gn_decoder_is_built_with_unetzoos_group_norm():
    model = unetzoo.create("unet-resnet18", num_classes=2, decoder_norm="gn", decoder_channels=(32, 16, 16, 8, 8))
    norms = [m for m in model.decoder.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(isinstance(m, GroupNorm) for m in norms)
