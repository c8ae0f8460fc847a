"""The inference fast path: exact batch-norm folding, channels-last, bfloat16, tolerances."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import unetzoo
from unetzoo.fast import (
    BF16_RTOL,
    FOLD_RTOL,
    example_input,
    fold_batchnorm,
    native_bf16_supported,
    optimize_for_inference,
    preferred_dtype,
    relative_error,
)
from unetzoo.fast_mkldnn import FusedResidualBlock, MkldnnConv2d, mkldnn_available


def _randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding has work to do."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def _bn_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(
    "name, options",
    [
        ("unet-resnet18", {"decoder_norm": "bn", "decoder_channels": (32, 16, 16, 8)}),
        ("unet-efficientnet_b0", {"decoder_channels": (32, 16, 16, 8)}),
        ("unet-classic", {"base_c": 8}),
    ],
)
def test_fold_batchnorm_is_exact_and_complete(name, options):
    torch.manual_seed(0)
    model = _randomize_norms(unetzoo.create(name, **options))
    x = example_input(model)
    with torch.no_grad():
        ref = model(x)
    expected = _bn_count(model)  # in these nets every norm directly follows a convolution
    assert expected > 0
    assert fold_batchnorm(model, x) == expected
    assert _bn_count(model) == 0  # timm's BatchNormAct2d became its activation
    with torch.no_grad():
        out = model(x)
    assert relative_error(out, ref) <= FOLD_RTOL


class _SharedConvOutput(nn.Module):
    """The conv output is read by the norm AND by the residual: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_fold_skips_convolutions_whose_output_is_also_used_elsewhere():
    model = _randomize_norms(_SharedConvOutput())
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    assert fold_batchnorm(model, x) == 0
    assert isinstance(model.bn, nn.BatchNorm2d)
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_fast_path_float32_keeps_outputs_and_returns_the_model():
    torch.manual_seed(0)
    model = _randomize_norms(
        unetzoo.create("unet-resnet18", num_classes=3, decoder_norm="bn", decoder_channels=(32, 16, 16, 8))
    )
    x = torch.randn(2, 3, 45, 70)  # not a multiple of the stride: padding and crop still work
    with torch.no_grad():
        ref = model(x)
    fast = model.optimize_for_inference(dtype=torch.float32)
    assert fast is model and not fast.training
    assert fast.inference_options["folded_bn"] == 30 and fast.inference_options["dtype"] == "float32"
    conv = fast.encoder.model.conv1
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in fast.parameters())
    with torch.no_grad():
        out = fast(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert relative_error(out, ref) <= FOLD_RTOL


def test_fast_path_bfloat16_within_stated_tolerance():
    torch.manual_seed(0)
    model = _randomize_norms(unetzoo.create("unet-resnet18", decoder_channels=(32, 16, 16, 8)))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    assert next(fast.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        out = fast(x)  # float32 in, float32 out
    assert out.dtype == torch.float32
    err = relative_error(out, ref)
    assert 0 < err <= BF16_RTOL  # > 0: bfloat16 was really used
    assert (fast.inference_options["mkldnn_convs"] > 0) == mkldnn_available(torch.bfloat16)  # on by default
    # the seed decoder's bilinear blocks (4 with skips + the extra one) upsample with lerps
    assert fast.inference_options["lerp_upsample_blocks"] == 5
    assert all(b.lerp_upsample for b in [*fast.decoder.blocks, *fast.decoder.extra])


def test_optimizing_twice_is_refused():
    model = unetzoo.create("unet-classic", base_c=8).optimize_for_inference(dtype="float32")
    with pytest.raises(RuntimeError, match="already optimized"):
        model.optimize_for_inference()


def test_auto_dtype_follows_native_bfloat16_support(monkeypatch):
    import unetzoo.fast as fast

    monkeypatch.setattr(fast, "native_bf16_supported", lambda device="cpu": False)
    assert preferred_dtype() == torch.float32
    monkeypatch.setattr(fast, "native_bf16_supported", lambda device="cpu": True)
    assert preferred_dtype() == torch.bfloat16
    model = optimize_for_inference(unetzoo.create("unet-classic", base_c=8), fold_bn=False, channels_last=False)
    assert model.inference_options["dtype"] == "bfloat16"


def test_bad_dtype_is_rejected():
    with pytest.raises(ValueError, match="dtype must be"):
        optimize_for_inference(unetzoo.create("unet-classic", base_c=8), dtype=torch.int8)


def test_example_input_respects_the_models_own_size_rule():
    model = unetzoo.create("unet-original")  # valid sizes only: 16 k + 124
    x = example_input(model)
    model.check_input(x)  # raises if the size were invalid
    assert (x.shape[-1] - 124) % 16 == 0


@pytest.mark.slow
def test_fast_path_with_compile_matches_eager():
    torch.manual_seed(0)
    model = _randomize_norms(unetzoo.create("unet-classic", base_c=8))
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        ref = model(x)
    fast = optimize_for_inference(model, dtype=torch.float32, compile=True)
    with torch.no_grad():
        assert relative_error(fast(x), ref) <= FOLD_RTOL


needs_mkldnn = pytest.mark.skipif(not mkldnn_available(torch.float32),
                                  reason="this PyTorch build has no oneDNN (mkldnn) CPU convolution ops")


@needs_mkldnn
@pytest.mark.parametrize("name", ["unet-resnet18", "unet-resnet50"])  # timm act modules; torchvision's shared ReLU
def test_mkldnn_fusion_prepacks_convolutions_and_fuses_relus(name):
    torch.manual_seed(0)
    model = _randomize_norms(unetzoo.create(name, num_classes=3, decoder_norm="bn", decoder_channels=(32, 16, 16, 8)))
    inputs = [torch.randn(2, 3, 45, 70), torch.randn(1, 3, 96, 128)]  # the probe sees neither size
    with torch.no_grad():
        refs = [model(x) for x in inputs]
    residual_blocks = sum(type(m).__name__ in ("BasicBlock", "Bottleneck") for m in model.modules())
    fast = optimize_for_inference(model, dtype=torch.float32, mkldnn=True)
    convs = [m for m in fast.modules() if isinstance(m, MkldnnConv2d)]
    assert fast.inference_options["mkldnn_convs"] == len(convs) > 0
    assert sum(c.attr == "relu" for c in convs) >= 10  # at least both convs of each decoder block
    assert not any(isinstance(m, nn.Conv2d) for m in fast.decoder.modules())
    # every residual block adds its shortcut and applies its last ReLU inside the last convolution
    assert sum(isinstance(m, FusedResidualBlock) for m in fast.encoder.modules()) == residual_blocks > 0
    assert not any(isinstance(m, nn.ReLU) for m in fast.encoder.modules())
    with torch.no_grad():
        for x, ref in zip(inputs, refs):
            assert relative_error(fast(x), ref) <= FOLD_RTOL
    assert set(fast.state_dict()) == set(model.state_dict())  # original weights still there


@needs_mkldnn
def test_mkldnn_fusion_can_be_switched_off_and_is_refused_where_unsupported():
    model = unetzoo.create("unet-resnet18", decoder_channels=(32, 16, 16, 8))
    fast = optimize_for_inference(model, dtype=torch.float32)  # float32: off unless asked for
    assert fast.inference_options["mkldnn_convs"] == 0
    assert not any(isinstance(m, MkldnnConv2d) for m in fast.modules())
    with pytest.raises(ValueError, match="mkldnn=True needs"):
        optimize_for_inference(unetzoo.create("unet-resnet18"), dtype=torch.float16, mkldnn=True)


@needs_mkldnn
def test_a_failed_fusion_puts_the_model_back_or_is_skipped(monkeypatch):
    """Asked for (mkldnn=True), a fusion that fails its check raises and leaves the model as it
    was: float32, default layout, batch norms unfolded, the same outputs, optimizable again.
    Chosen by default, it is skipped with a warning and the model still works."""
    import unetzoo.fast_mkldnn

    def failing(model, example, **kwargs):
        raise RuntimeError("oneDNN fusion changed the output (simulated)")

    torch.manual_seed(0)
    model = _randomize_norms(unetzoo.create("unet-resnet18", num_classes=2, decoder_norm="bn",
                                            decoder_channels=(32, 16, 16, 8)))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        want = model(x)
    bns = _bn_count(model)
    monkeypatch.setattr(unetzoo.fast_mkldnn, "fuse_mkldnn", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        optimize_for_inference(model, dtype=torch.bfloat16, mkldnn=True)
    assert {p.dtype for p in model.parameters()} == {torch.float32} and _bn_count(model) == bns
    assert all(p.is_contiguous() for p in model.parameters())
    assert getattr(model, "inference_options", None) is None and not model._forward_pre_hooks
    with torch.no_grad():
        assert torch.equal(model(x), want)
    if native_bf16_supported("cpu"):  # where the default turns the fusion on
        with pytest.warns(RuntimeWarning, match="oneDNN fusion skipped: .*simulated"):
            fast = optimize_for_inference(model, dtype=torch.bfloat16)
        assert fast.inference_options["mkldnn_convs"] == 0
        with torch.no_grad():
            got = fast(x)
        assert got.dtype == torch.float32 and relative_error(got, want) < BF16_RTOL


def test_example_input_is_a_size_the_network_runs():
    """inception_v3 passes the input check at 64 px but cannot run it (unpadded convolutions): the
    probe input is one it runs, found without moving norm statistics or training modes, and the
    fast path then works."""
    torch.manual_seed(0)
    model = unetzoo.create("unet-inception_v3", num_classes=2, decoder_channels=(16, 16, 16, 16)).train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x = example_input(model)
    assert x.shape[-1] > 64 and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    probe = torch.randn(1, 3, 100, 120)
    with torch.no_grad():
        want = model.eval()(probe)
    fast = optimize_for_inference(model, dtype=torch.float32)
    assert relative_error(fast(probe), want) <= FOLD_RTOL


@pytest.mark.parametrize("name, options", [("unet-classic", {"base_c": 4}), ("unet-original", {})])
def test_float32_fast_path_returns_logits_in_the_default_layout(name, options):
    model = unetzoo.create(name, num_classes=2, **options)
    x = torch.randn(1, model.in_chans, 188, 188) if name == "unet-original" else torch.randn(1, 3, 64, 64)
    out = optimize_for_inference(model, dtype=torch.float32)(x)
    assert out.is_contiguous() and out.view(-1).numel() == out.numel()


@needs_mkldnn
def test_residual_blocks_are_fused_only_when_their_forward_is_conv_relu_add_relu():
    from torchvision.models.resnet import BasicBlock

    from unetzoo.fast_mkldnn import fuse_mkldnn

    def net(final_act: nn.Module | None) -> nn.Module:
        torch.manual_seed(0)
        stem = nn.Conv2d(3, 16, 3, padding=1)
        block = BasicBlock(16, 16, norm_layer=lambda c: nn.Identity())  # norms as after folding
        if final_act is not None:
            block.relu = final_act  # torchvision uses this module after every conv
        return nn.Sequential(stem, block).eval()

    x = torch.randn(2, 3, 20, 24)
    for act, fusable in [(None, True), (nn.ReLU6(), False), (nn.GELU(), False)]:
        model = net(act)
        with torch.no_grad():
            ref = model(x)
            fuse_mkldnn(model, x)
            out = model(x)
        assert isinstance(model[1], FusedResidualBlock) is fusable, act
        assert relative_error(out, ref) <= FOLD_RTOL


@pytest.mark.parametrize("conv_bias", [True, False])
def test_a_fold_that_fails_its_check_leaves_the_model_exactly_as_it_was(conv_bias):
    torch.manual_seed(0)
    model = _randomize_norms(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=conv_bias), nn.BatchNorm2d(4),
                                           nn.ReLU(), nn.Conv2d(4, 2, 1)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    with pytest.raises(RuntimeError, match="left unfolded"):
        fold_batchnorm(model, x, reference=ref * 1.5)  # far from what the folded model gives
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert isinstance(model[1], nn.BatchNorm2d) and (model[0].bias is None) is (not conv_bias)
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    assert fold_batchnorm(model, x, reference=ref) == 1  # and it still folds when the check passes


@needs_mkldnn
def test_mkldnn_fusion_is_checked_against_the_given_reference_and_undone_on_a_mismatch():
    from unetzoo.fast_mkldnn import fuse_mkldnn

    torch.manual_seed(0)
    model = unetzoo.create("unet-resnet18", num_classes=2, decoder_channels=(32, 16, 16, 8)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    with pytest.raises(RuntimeError, match="undone"):
        fuse_mkldnn(model, x, reference=ref * 1.5, rtol=0.1)  # far from what the fused model gives
    assert not any(isinstance(m, (MkldnnConv2d, FusedResidualBlock)) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref)  # every module back as it was
    assert fuse_mkldnn(model, x, reference=ref, rtol=FOLD_RTOL) > 0


@needs_mkldnn
def test_a_fusion_that_fails_in_its_check_pass_is_undone(monkeypatch):
    """A oneDNN primitive that raises while the fused model is checked leaves nothing fused behind."""
    from unetzoo.fast_mkldnn import fuse_mkldnn

    torch.manual_seed(0)
    model = unetzoo.create("unet-resnet18", num_classes=2, decoder_channels=(32, 16, 16, 8)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)

    def broken(self, *args):
        raise RuntimeError("simulated oneDNN primitive failure")

    monkeypatch.setattr(MkldnnConv2d, "forward", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        fuse_mkldnn(model, x, reference=ref)
    assert not any(isinstance(m, (MkldnnConv2d, FusedResidualBlock)) for m in model.modules())
    monkeypatch.undo()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref)


def test_a_bad_allocator_setting_leaves_the_model_untouched(monkeypatch):
    torch.manual_seed(0)
    model = unetzoo.create("unet-classic", base_c=4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setenv("UNETZOO_CPU_ALLOCATOR", "off")
    with pytest.raises(ValueError, match="UNETZOO_CPU_ALLOCATOR='off' is not understood"):
        optimize_for_inference(model, dtype=torch.bfloat16)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not model._forward_pre_hooks and getattr(model, "inference_options", None) is None


@pytest.mark.skipif(not mkldnn_available(torch.bfloat16), reason="no oneDNN bfloat16 convolutions on this CPU")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bf16_fused_fast_path_stays_within_tolerance_of_float32(seed):
    # random deep networks: the fused bf16 model is checked against (and stays near) the float32 one
    torch.manual_seed(seed)
    model = unetzoo.create("unet-resnet50", num_classes=2).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    assert fast.inference_options["mkldnn_convs"] > 0
    with torch.no_grad():
        assert relative_error(fast(x), ref) <= BF16_RTOL
