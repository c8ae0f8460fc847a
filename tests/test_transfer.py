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


def test_unfreezing_keeps_parameters_the_user_had_frozen():
    """freeze/unfreeze (the trainer's freeze_epochs recipe) restores each parameter's own flag: a
    stem or norm affine frozen on purpose stays frozen; re-freezing in between changes nothing."""
    model = _small()
    kept = {name for name, p in model.encoder.named_parameters() if "conv1" in name or "bn" in name}
    assert kept
    for name, p in model.encoder.named_parameters():
        p.requires_grad_(name not in kept)
    model.freeze_encoder().freeze_encoder(stages=2).freeze_encoder().unfreeze_encoder()
    assert {name for name, p in model.encoder.named_parameters() if not p.requires_grad} == kept
    assert all(p.requires_grad for p in model.decoder.parameters())


def test_freezing_drops_gradients_left_from_earlier_steps():
    """A frozen weight keeps no stale gradient, so AdamW (with zero_grad(set_to_none=False))
    moves it neither by its moments nor by weight decay."""
    model = _small().train()
    opt = torch.optim.AdamW(model.param_groups(decoder_lr=1e-2, weight_decay=0.05))
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    opt.step()
    model.freeze_encoder()
    assert all(p.grad is None for p in model.encoder.parameters())
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    for _ in range(3):
        opt.zero_grad(set_to_none=False)
        model(torch.randn(2, 3, 64, 64)).mean().backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())


def test_sync_batchnorm_keeps_timms_norm_activations():
    """torch's converter turns timm's BatchNormAct2d into a SyncBatchNorm that drops the
    activation (ReLU6 in EfficientNet-Lite): the converted network must compute the same thing.
    Compared in eval mode, where SyncBatchNorm runs on the CPU."""
    from unetzoo.train.engine import sync_batchnorm

    model = _small("unet-efficientnet_lite0").eval()
    converted = sync_batchnorm(_small("unet-efficientnet_lite0")).eval()
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in converted.encoder.modules()) > 40
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), converted(x))
    assert converted.state_dict().keys() == model.state_dict().keys()


def test_seed_aliases():
    model = _small()
    assert model.freeze_backbone() is model and model.frozen_stages is None
    assert not any(p.requires_grad for p in model.encoder.parameters())
    model.unfreeze_backbone()
    assert all(p.requires_grad for p in model.encoder.parameters())


@pytest.mark.parametrize("name", ["unet-resnet18", "unet-resnet50", "unet-vgg16", "unet-convnext_tiny",
                                  "unet-efficientnet_lite0", "unet-mobilenetv3_large_100",
                                  "unet-vit_tiny_patch16_224", "unet-xception41", "unet-efficientformer_l1"])
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
    # stages() may wrap modules (or loose parameters) in fresh containers: check the model's own
    own = {id(m) for m in model.modules()}
    assert all(not m.training for s in stages[:2] for m in s.modules() if id(m) in own)
    assert all(m.training for s in stages[2:] for m in s.modules() if id(m) in own)
    # every norm whose weights are frozen is itself in eval mode, timm's BatchNormAct2d (a norm
    # that holds its activation) included: its running statistics must not move
    norms = [m for m in model.encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)]
    frozen_norms = [m for m in norms if m.weight is not None and id(m.weight) in frozen]
    assert all(not m.training for m in frozen_norms)
    assert all(m.training for m in norms if m.weight is not None and id(m.weight) not in frozen)
    with pytest.raises(ValueError, match="between 0 and"):
        model.freeze_encoder(stages=len(stages) + 1)


def test_stagewise_freezing_keeps_running_statistics():
    model = _small("unet-efficientnet_lite0").freeze_encoder(stages=2).train()
    frozen = {id(p) for s in model.encoder_stages()[:2] for p in s.parameters()}
    norms = [m for m in model.encoder.modules()
             if isinstance(m, torch.nn.BatchNorm2d) and id(m.weight) in frozen]
    assert norms
    before = [m.running_mean.clone() for m in norms]
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))


@pytest.mark.parametrize("name,size", [
    ("unet-resnet18", 64),
    ("unet-efficientnet_lite0", 64),  # taps nested modules (blocks.N)
    ("unet-vit_tiny_patch16_224", 224),  # FeatureGetterNet; class token and position embedding
    ("unet-levit_128s", 224),  # FeatureGetterNet
    ("unet-xception41", 64),  # FeatureHookNet: taps inside blocks, shortcut registered first
    ("unet-legacy_xception", 96),  # FeatureHookNet around the whole model (.body)
    ("unet-pit_ti_224", 224),  # FeatureHookNet; position embedding and class token on the model
    ("unet-coat_lite_tiny", 224),  # registers every patch embedding before the blocks that use them
    ("unet-hrnet_w18_small", 64),  # later features all come out of the last stage
    ("unet-inception_resnet_v2", 96),  # FeatureListNet whose children 'repeat' and 'repeat_1' both exist
])
def test_stage_k_computes_feature_k(name, size):
    """Stage i really computes feature i: the parameters of stages 0..k are exactly those the
    features 0..k need, so freezing k stages freezes what the first k features need and
    nothing that only later features use."""
    model = _small(name).eval()
    stages = model.encoder_stages()
    assert len(stages) == len(model.encoder.channels)
    x = torch.randn(1, 3, size, size)
    used: set[int] = set()
    for k, feature in enumerate(model.encoder(x)):
        model.zero_grad()
        feature.sum().backward(retain_graph=True)
        used |= {id(p) for p in model.encoder.parameters() if p.grad is not None}
        frozen = {id(p) for s in stages[: k + 1] for p in s.parameters()}
        assert frozen - used == set(), f"stages 0..{k} hold parameters that only later features use"
        assert used - frozen == set(), f"features 0..{k} use parameters of later stages"
        assert {id(p) for p in stages[k].parameters()}, f"stage {k} is empty"


def test_hook_net_stages_leave_the_model_as_it_was():
    """Hook-net stages come from one probe forward pass: it must not move BatchNorm statistics,
    draw random numbers, or change training modes or ``requires_grad``, and it works under
    ``torch.inference_mode``."""
    model = _small("unet-xception41").train()
    model.decoder.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with torch.inference_mode():
        stages = model.encoder_stages()
    assert len(stages) == len(model.encoder.channels)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.decoder.parameters())
    # the stages follow parameters that are replaced after the first call
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
    params = {id(p) for p in model.encoder.parameters()}
    assert {id(p) for s in model.encoder_stages() for p in s.parameters()} <= params


@pytest.mark.parametrize("name", ["unet-mvitv2_tiny", "unet-twins_pcpvt_small", "unet-qwen3_vit_88m"])
def test_every_encoder_parameter_a_feature_needs_is_in_a_stage(name):
    """Backbones whose taps do not cut their registered modules into a chain get one stage per
    feature from the data flow, and no parameter is left out (qwen3's position embedding sits
    on a nested module); built on the meta device, where the probe costs nothing."""
    with torch.device("meta"):
        model = unetzoo.create(name, num_classes=2)
    stages = model.encoder_stages()
    assert len(stages) == len(model.encoder.channels) > 1
    held = [id(p) for s in stages for p in s.parameters()]
    assert len(held) == len(set(held)) and set(held) == {id(p) for p in model.encoder.parameters()}


def test_a_backbone_the_probe_cannot_run_falls_back_to_registration_order(monkeypatch):
    """Where the probe pass fails (gemma4's ViT calls .item(), which the meta device refuses), the
    stages come from registration order, and a backbone whose taps do not form a chain there
    is one stage; asking for more says how many there are."""
    import unetzoo.encoders.timm as timm_encoders

    with torch.device("meta"):
        lite, gemma = (unetzoo.create(n, num_classes=2) for n in ("unet-efficientnet_lite0", "unet-gemma4_vit_167m"))
    assert len(gemma.encoder_stages()) == 1 < len(gemma.encoder.channels)
    assert gemma.freeze_encoder(stages=1).frozen_stages == 1
    with pytest.raises(ValueError, match=r"between 0 and 1 \(this encoder has 1 stages\)"):
        gemma.freeze_encoder(stages=2)
    by_flow = [{id(p) for p in s.parameters()} for s in lite.encoder_stages()]

    def fails(*args, **kwargs):
        raise RuntimeError("cannot probe")

    monkeypatch.setattr(timm_encoders, "_dataflow_stages", fails)
    lite.encoder._dataflow = None
    assert [{id(p) for p in s.parameters()} for s in lite.encoder_stages()] == by_flow


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


def test_training_keeps_the_first_stages_frozen_after_the_frozen_epochs(tmp_path):
    from train_utils import make_blobs, tiny_config

    from unetzoo.train import ConfigError, TrainConfig, Trainer

    blobs = make_blobs(tmp_path / "blobs", n=8)
    trainer = Trainer(TrainConfig.from_dict(tiny_config(blobs, tmp_path / "run", freeze_epochs=1, frozen_stages=2)))
    model = trainer.model
    stages = model.encoder_stages()
    tensors = [*model.named_parameters(), *model.named_buffers()]

    def names(modules):
        ids = {id(t) for m in modules for t in [*m.parameters(), *m.buffers()] if t.is_floating_point()}
        return {k for k, t in tensors if id(t) in ids}

    kept, later = names(stages[:2]), names(stages[2:])
    assert kept and later
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for epoch in range(2):  # epoch 0: all frozen; epoch 1: stages 0 and 1 only
        trainer._set_phase(epoch)
        assert model.frozen_stages == (None if epoch == 0 else 2)
        trainer.train_epoch(epoch)
    after = model.state_dict()
    trainer.close()
    assert all(torch.equal(before[k], after[k]) for k in kept)  # weights and norm statistics
    assert not all(torch.equal(before[k], after[k]) for k in later)
    with pytest.raises(ConfigError, match=r"frozen_stages=9, but unet-classic's encoder has 5 stage\(s\); use 0 to 5"):
        Trainer(TrainConfig.from_dict(tiny_config(blobs, tmp_path / "bad", frozen_stages=9)))


def test_train_and_eval_do_not_probe_an_unfrozen_encoder(monkeypatch):
    """Finding the stages of a timm feature net takes a probe pass: model.train()/eval() must not
    run it when nothing is frozen (it was counted in benchmark FLOPs), and stages found before
    optimize_for_inference folded the norms away must not break eval() afterwards."""
    import unetzoo.encoders.timm as timm_encoders

    def probe(*args, **kwargs):
        raise AssertionError("probe pass in train()/eval()")

    model = _small("unet-mobilenetv3_small_050")
    with monkeypatch.context() as m:
        m.setattr(timm_encoders, "_dataflow_stages", probe)
        model.train()
        model.eval()
    frozen = _small("unet-mobilenetv3_small_050").freeze_encoder(stages=2)
    frozen.optimize_for_inference(dtype=torch.float32)
    frozen.train()
    frozen.eval()
    unetzoo.optimize_for_inference(_small("unet-efficientnet_lite0").eval(), dtype=torch.float32).eval()
