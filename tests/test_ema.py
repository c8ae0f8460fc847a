"""The weight average (``ema``) and flip-averaged validation (``val_tta``) of the training engine."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from train_utils import make_blobs, tiny_config

import unetzoo
from unetzoo.train import ConfigError, TrainConfig, Trainer, fit, load_config
from unetzoo.train.checkpoint import load_state
from unetzoo.train.ema import WeightEMA
from unetzoo.train.evaluate import evaluate

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_blobs(tmp_path_factory.mktemp("blobs"))


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def test_average_follows_the_recurrence_with_warm_up() -> None:
    torch.manual_seed(0)
    model, decay = _net(), 0.75  # the warm-up (1 + t) / (10 + t) passes 0.75 at t = 26
    ema = WeightEMA(model, decay)
    expected = {k: v.double().clone() for k, v in model.state_dict().items()}
    for t in range(30):
        with torch.no_grad():  # a "training step": new weights, new running statistics
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.train()(torch.randn(2, 3, 8, 8))
        d = min(decay, (1 + t) / (10 + t))
        assert ema.current_decay() == pytest.approx(d)
        ema.update(model)
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()
    assert ema.updates == 30 and ema.current_decay() == decay
    got = ema.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k].double(), v, rtol=1e-5, atol=1e-6, msg=k)
    assert got["1.num_batches_tracked"] == model.state_dict()["1.num_batches_tracked"] == 30
    # the copy is independent of the trained model, in eval mode and not trainable
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(ema.module.parameters(), model.parameters()))


def test_decay_zero_is_the_model_and_state_round_trips() -> None:
    model = _net()
    ema = WeightEMA(model, 0.0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2)
    ema.update(model)
    for k, v in model.state_dict().items():
        assert torch.equal(ema.module.state_dict()[k], v), k
    other = WeightEMA(_net(), 0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1
    for k, v in ema.module.state_dict().items():
        assert torch.equal(other.module.state_dict()[k], v), k
    with pytest.raises(ValueError, match=r"ema decay must be in \[0, 1\), got 1.0"):
        WeightEMA(model, 1.0)


def test_zoo_models_deep_copy() -> None:
    """EMA (and SWA) copies of a model that carries its weights' spec (read-only mappings inside):
    the immutable specs are shared, the tensors copied."""
    from unetzoo.registry import get_spec

    spec = get_spec("unet-efficientnet_lite0")
    assert copy.deepcopy(spec) is spec and copy.copy(spec) is spec
    model = unetzoo.create("unet-classic", num_classes=2, base_c=4)
    model.weights_spec = spec.weights_for(None)  # as create(..., pretrained=True) leaves it
    twin = copy.deepcopy(model)
    assert twin.weights_spec is model.weights_spec
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(twin.eval()(x), model.eval()(x))
    assert twin.head.weight.data_ptr() != model.head.weight.data_ptr()


def test_ema_config_is_validated() -> None:
    assert load_config(None, ["ema=0.99"]).ema == 0.99
    assert load_config(None, []).ema is None
    with pytest.raises(ConfigError, match=r"ema is the weight average's decay per step, in \[0, 1\).*got 1.5"):
        load_config(None, ["ema=1.5"])


def test_training_evaluates_and_saves_the_average(blobs: Path, tmp_path: Path, capsys) -> None:
    result = fit(tiny_config(blobs, tmp_path, epochs=2, ema=0.9))
    # (1 + t) / (10 + t) reaches 0.9 at t = 80; the run has 6 steps, after which the decay is 7/16
    assert (f"note: ema=0.9 is reached after 80 steps (the decay warms up as (1 + t) / (10 + t)); "
            f"this run has 6, so its average ends at decay {7 / 16:.3f}") in capsys.readouterr().out
    state = load_state(result.state_path)
    assert state["ema"]["updates"] == 2 * 3  # 9 training images, batch 3, two epochs
    averaged, trained = state["ema"]["model"], state["model"]
    saved = load_file(result.last_dir / "model.safetensors")
    assert all(torch.equal(saved[k], averaged[k]) for k in saved)
    assert not all(torch.equal(saved[k], trained[k]) for k in saved)  # the average, not the last step
    # the reported metrics are the average's
    model = unetzoo.from_pretrained(result.last_dir)
    trainer = Trainer(TrainConfig.from_dict(tiny_config(blobs, tmp_path / "again", epochs=2)))
    metrics = evaluate(model, trainer.val_loader, num_classes=2).metrics
    trainer.close()
    assert metrics["fg_iou"] == pytest.approx(result.metrics["fg_iou"], abs=1e-9)


def test_interrupted_run_with_ema_resumes_to_the_same_average(
    blobs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = {name: tiny_config(blobs, tmp_path / name, epochs=3, ema=0.8, deterministic=True)
               for name in ("straight", "stopped")}
    straight = fit(configs["straight"])

    original = Trainer.train_epoch

    def stop_at_epoch_3(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", stop_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        fit(configs["stopped"])
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert load_state(tmp_path / "stopped" / "train_state.pt")["ema"]["updates"] == 6
    resumed = fit(configs["stopped"], ["resume=true"])

    a, b = (load_file(r.last_dir / "model.safetensors") for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fit(tiny_config(blobs, tmp_path / "plain", epochs=1))
    with pytest.raises(ConfigError, match="trained without ema; resume it with ema=null"):
        fit(tiny_config(blobs, tmp_path / "plain", epochs=2, ema=0.9), ["resume=true"])


def test_val_tta_validates_with_flip_averaged_logits(blobs: Path, tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig.from_dict(tiny_config(blobs, tmp_path, epochs=1, val_tta=True)))
    trainer.train_epoch(0)
    got = trainer.validate()
    plain = evaluate(trainer.model, trainer.val_loader, num_classes=2).metrics
    averaged = evaluate(trainer.model, trainer.val_loader, num_classes=2, tta=True).metrics
    trainer.close()
    assert got["fg_iou"] == pytest.approx(averaged["fg_iou"], abs=1e-9)
    keys = ("fg_iou", "image_fg_iou", "pixel_accuracy")
    assert [got[k] for k in keys] != pytest.approx([plain[k] for k in keys], abs=1e-9)  # the flips changed it
