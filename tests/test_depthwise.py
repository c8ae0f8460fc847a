"""Depthwise convolutions computed in float32 while training under CPU bfloat16 autocast."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from timm.layers import Conv2dSame
from torch import nn
from train_utils import make_blobs, tiny_config

import unetzoo
from unetzoo.train import TrainConfig, Trainer
from unetzoo.train.depthwise import float32_depthwise, is_depthwise, restore_depthwise

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _conv(cls=nn.Conv2d, channels=8, stride=1):
    torch.manual_seed(0)
    return cls(channels, channels, 3, stride=stride, padding=1 if cls is nn.Conv2d else 0, groups=channels, bias=True)


@pytest.mark.parametrize("cls", [nn.Conv2d, Conv2dSame])
def test_with_gradients_the_convolution_runs_in_float32_and_returns_autocasts_dtype(cls):
    conv = _conv(cls, stride=2)
    x = torch.randn(2, 8, 9, 9).to(torch.bfloat16).requires_grad_(True)  # as the layer before returns it
    with torch.no_grad():
        expected = cls.forward(conv, x.float())  # the original class's float32 computation
    assert float32_depthwise(conv) == 1 and isinstance(conv, cls) and type(conv) is not cls
    with torch.autocast(**BF16):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, expected.to(torch.bfloat16), atol=0, rtol=0)
    y.float().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32
    assert x.grad is not None and x.grad.dtype == torch.bfloat16


def test_without_gradients_or_autocast_nothing_changes():
    conv, plain = _conv(), _conv()
    float32_depthwise(conv)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad(), torch.autocast(**BF16):  # validation / inference: the bf16 kernel, as before
        torch.testing.assert_close(conv(x), plain(x), atol=0, rtol=0)
        assert conv(x).dtype == torch.bfloat16
    torch.testing.assert_close(conv(x), plain(x), atol=0, rtol=0)  # no autocast: float32 as before
    conv.requires_grad_(False)
    plain.requires_grad_(False)
    with torch.autocast(**BF16):  # frozen, and no gradient wanted for x: nothing recorded, bf16 kernel
        torch.testing.assert_close(conv(x), plain(x), atol=0, rtol=0)
    bf16 = copy.deepcopy(plain).to(torch.bfloat16)
    float32_depthwise(bf16)  # bfloat16 weights: left to autocast (a float32 input would not match them)
    with torch.autocast(**BF16):
        assert bf16(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_only_depthwise_convolutions_switch_and_the_weights_and_keys_stay():
    model = unetzoo.create("unet-efficientnet_lite0", num_classes=2, decoder_channels=(32, 16, 16, 8))
    depthwise = [m for m in model.modules() if is_depthwise(m)]
    classes = {id(m): type(m) for m in model.modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert float32_depthwise(model) == len(depthwise) > 0
    assert float32_depthwise(model) == 0  # already switched
    for m in model.modules():
        switched = type(m) is not classes[id(m)]
        assert switched == is_depthwise(m) and isinstance(m, classes[id(m)])
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    twin = copy.deepcopy(model)  # the copy keeps its own switched modules
    assert all(type(a) is type(b) for a, b in zip(model.modules(), twin.modules()))
    assert restore_depthwise(model) == len(depthwise)
    assert all(type(m) is classes[id(m)] for m in model.modules())


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    return make_blobs(tmp_path_factory.mktemp("blobs"))


def _depthwise_config(blobs: Path, out: Path, precision: str) -> dict:
    cfg = tiny_config(blobs, out, precision=precision, epochs=1)
    cfg["model"] = {"name": "unet-mobilenetv3_small_050", "num_classes": 2,
                    "options": {"decoder_channels": [16, 16, 8, 8]}}
    return cfg


def test_the_trainer_switches_them_for_cpu_bf16_only_and_switches_back(blobs: Path, tmp_path: Path):
    trainer = Trainer(TrainConfig.from_dict(_depthwise_config(blobs, tmp_path / "bf16", "bf16")))
    count = sum(is_depthwise(m) for m in trainer.model.modules())
    assert count > 0 and trainer.fp32_depthwise_count == count
    assert trainer.ema is None
    grads = []
    conv = next(m for m in trainer.model.modules() if is_depthwise(m))
    conv.register_forward_hook(lambda m, i, o: grads.append((torch.is_grad_enabled(), o.dtype)))
    trainer.train_epoch(0)
    trainer.validate()
    trainer.close()
    assert (True, torch.bfloat16) in grads and (False, torch.bfloat16) in grads
    assert all(type(m).__module__ != "unetzoo.train.depthwise" for m in trainer.model.modules())
    fp32 = Trainer(TrainConfig.from_dict(_depthwise_config(blobs, tmp_path / "fp32", "fp32")))
    assert fp32.fp32_depthwise_count == 0
    fp32.close()


@pytest.mark.parametrize("mode,dtype,switched", [("train", "bfloat16", True), ("train", "float32", False),
                                                 ("infer", "bfloat16", False)])
def test_benchmark_training_cases_run_depthwise_convolutions_as_the_trainer_does(mode, dtype, switched):
    from unetzoo.bench.cases import Case, _prepare, build_network

    case = Case("unet-mobilenetv3_small_050", variant="cl", mode=mode, dtype=dtype, batch=1, size=32,
                options={"decoder_channels": [16, 16, 8, 8]})
    model, _, _ = _prepare(build_network(case), case, torch.randn(1, 3, 32, 32))
    depthwise = [m for m in model.modules() if is_depthwise(m)]
    assert depthwise and all((type(m).__module__ == "unetzoo.train.depthwise") == switched for m in depthwise)
