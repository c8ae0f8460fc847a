"""Transfer learning: freezing (norm statistics included), stage-wise freezing, param groups."""

import pytest
import torch
from torch import nn

import unetzoo

NORMS = (nn.modules.batchnorm._BatchNorm,)


def _small(name="unet-resnet18", **kw):
    torch.manual_seed(0)
    return unetzoo.create(name, num_classes=2, decoder_channels=(32, 16, 16, 8), **kw)


def _bn_stats(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


@pytest.mark.parametrize("name", ["unet-resnet18", "unet-resnet50", "unet-efficientnet_lite0"])
def test_freeze_encoder_freezes_grads_and_bn_stats(name):
    model = _small(name).freeze_encoder()
    model.train()
    before = _bn_stats(model.encoder)
    assert before, "the encoder has BN layers"
    dec_before = _bn_stats(model.decoder)
    out = model(torch.randn(2, 3, 64, 64))
    out.mean().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    after = _bn_stats(model.encoder)
    assert all(torch.equal(before[k], after[k]) for k in before), "BN running stats changed while frozen"
    assert all(not m.training for m in model.encoder.modules() if isinstance(m, NORMS))
    assert dec_before == {} or model.decoder.training


def test_unfreeze_restores_training():
    model = _small().freeze_encoder().unfreeze_encoder()
    model.train()
    before = _bn_stats(model.encoder)
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    assert all(p.requires_grad and p.grad is not None for p in model.encoder.parameters())
    after = _bn_stats(model.encoder)
    assert any(not torch.equal(before[k], after[k]) for k in before), "unfrozen BN stats must update"
    assert all(m.training for m in model.encoder.modules() if isinstance(m, NORMS))


def test_seed_aliases():
    model = _small()
    assert model.freeze_backbone() is model and model.frozen_stages is None
    assert not any(p.requires_grad for p in model.encoder.parameters())
    model.unfreeze_backbone()
    assert all(p.requires_grad for p in model.encoder.parameters())


@pytest.mark.parametrize("name", ["unet-resnet18", "unet-resnet50", "unet-vgg16", "unet-convnext_tiny"])
def test_stagewise_freezing(name):
    with torch.device("meta"):
        model = unetzoo.create(name, num_classes=2)
    stages = model.encoder_stages()
    assert len(stages) == len(model.encoder.channels)
    model.freeze_encoder(stages=2)
    assert model.frozen_stages == 2
    frozen = {id(p) for s in stages[:2] for p in s.parameters()}
    for p in model.encoder.parameters():
        assert p.requires_grad == (id(p) not in frozen)
    assert frozen and len(frozen) < len(list(model.encoder.parameters()))
    model.train()
    # stages() may wrap modules in fresh containers: check the model's own modules inside them
    assert all(not m.training for s in stages[:2] for m in list(s.modules())[1:])
    assert all(m.training for s in stages[2:] for m in list(s.modules())[1:])
    with pytest.raises(ValueError, match="between 0 and"):
        model.freeze_encoder(stages=len(stages) + 1)


def test_stage_zero_output_depends_only_on_first_stage():
    """Stage i really computes feature i: freezing k stages freezes the params feature k-1 needs."""
    model = _small("unet-resnet18").eval()
    stages = model.encoder_stages()
    x = torch.randn(1, 3, 64, 64)
    feat0 = model.encoder(x)[0]
    first = {id(p) for p in stages[0].parameters()}
    feat0.sum().backward()
    used = {id(p) for p in model.encoder.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert used <= first


def test_param_groups():
    model = _small()
    groups = model.param_groups(encoder_lr=1e-5, decoder_lr=1e-3, weight_decay=0.01)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"encoder", "encoder_no_decay", "decoder", "decoder_no_decay"}
    assert by_name["encoder"]["lr"] == 1e-5 and by_name["decoder_no_decay"]["lr"] == 1e-3
    assert all(p.ndim <= 1 for p in by_name["decoder_no_decay"]["params"])
    assert by_name["encoder_no_decay"]["weight_decay"] == 0.0 and by_name["encoder"]["weight_decay"] == 0.01
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    enc = {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in by_name["encoder"]["params"] + by_name["encoder_no_decay"]["params"]} == enc
    torch.optim.AdamW(groups)  # accepted by an optimizer as is


def test_frozen_params_stay_put_under_optimizer():
    model = _small().freeze_encoder()
    opt = torch.optim.AdamW(model.param_groups(decoder_lr=1e-2, weight_decay=0.1))
    enc_before = [p.clone() for p in model.encoder.parameters()]
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(2, 3, 64, 64)).mean().backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(enc_before, model.encoder.parameters()))
