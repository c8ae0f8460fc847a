"""Checkpoint import: other projects' checkpoints load into unetzoo and give the same outputs.

Each original network is re-implemented independently in tests/reference/ in its original
key layout; a random-init state dict saved from it must import through
``unetzoo.create(name, checkpoint=path)`` and match the original's eval outputs to 1e-5.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import warnings

import pytest
import torch
from reference import bubbliiiing, jvanvugt, milesial, qiaofengsheng, randomize, wzmiaomiao
from torch import nn

import unetzoo
from unetzoo.convert import detect_format, load_converted, prepare_checkpoint, read_checkpoint
from unetzoo.registry import get_spec

TOL = 1e-5


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


@torch.no_grad()
def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model.eval()(x)
    return out["out"] if isinstance(out, dict) else out


def _save(obj, tmp_path, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _assert_parity(ref: nn.Module, model: nn.Module, x: torch.Tensor) -> None:
    expected, got = _forward(ref, x), _forward(model, x)
    assert got.shape == expected.shape
    assert expected.std() > 0.01  # a non-trivial output, so a wrong layer cannot hide
    assert (got - expected).abs().max().item() <= TOL


# (name, reference factory, input shape, options for create, extra checkpoint entries, inferred options)
PARITY_CASES = {
    "bubbliiiing-vgg16": (
        "unet-vgg16", lambda: bubbliiiing.Unet(3, "vgg"), (1, 3, 32, 48), {}, {}, {"num_classes": 3, "in_chans": 3}
    ),
    "bubbliiiing-resnet50": (
        "unet-resnet50", lambda: bubbliiiing.Unet(2, "resnet50"), (1, 3, 64, 64), {}, {},
        {"num_classes": 2, "maxpool_quirk": True},
    ),
    "milesial-transposed": (
        "unet-classic", lambda: milesial.UNet(3, 2), (1, 3, 35, 29), {}, {"mask_values": [0, 1]},
        {"bilinear": False, "bias": False, "base_c": 64, "num_classes": 2},
    ),
    "milesial-bilinear-bias": (
        "unet-classic", lambda: milesial.UNet(1, 3, bilinear=True, bias=True), (1, 1, 32, 32), {}, {},
        {"bilinear": True, "bias": True, "in_chans": 1, "num_classes": 3},
    ),
    "wzmiaomiao-drive": (
        "unet-classic", lambda: wzmiaomiao.UNet(3, 2, bilinear=True, base_c=32), (2, 3, 48, 40), {}, {},
        {"bilinear": True, "base_c": 32, "in_chans": 3},
    ),
    "wzmiaomiao-transposed": (
        "unet-classic", lambda: wzmiaomiao.UNet(1, 4, bilinear=False, base_c=8), (1, 1, 37, 50), {}, {},
        {"bilinear": False, "base_c": 8, "num_classes": 4},
    ),
    "jvanvugt": (
        "unet-original", lambda: jvanvugt.UNet(), (1, 1, 188, 204), {}, {}, {"in_chans": 1, "num_classes": 2}
    ),
    "qiaofengsheng": (
        "unet-strided", lambda: qiaofengsheng.UNet(), (1, 3, 32, 48), {}, {}, {"num_classes": 3, "in_chans": 3}
    ),
    "qiaofengsheng-ce": (
        "unet-strided", lambda: qiaofengsheng.UNet(5, sigmoid=False), (1, 3, 32, 32), {"sigmoid": False}, {},
        {"num_classes": 5},
    ),
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_checkpoint_parity(case, tmp_path):
    name, make_ref, shape, options, extras, inferred = PARITY_CASES[case]
    ref = randomize(make_ref(), seed=1)
    path = _save({**ref.state_dict(), **extras}, tmp_path)
    model = unetzoo.create(name, checkpoint=path, **options)
    resolved = model.config.create_kwargs()
    assert {k: resolved[k] for k in inferred} == inferred
    _assert_parity(ref, model, torch.randn(shape, generator=torch.Generator().manual_seed(2)))


#: what each source project feeds its network (from its data pipeline; see SEED_SYSTEMS.md):
#: image / 255 only, or WZMIAOMIAO's DRIVE channel statistics
_SCALED = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
_DRIVE = ((0.709, 0.381, 0.224), (0.127, 0.079, 0.043))
SOURCE_PREPROCESSING = {
    "bubbliiiing-vgg16": _SCALED,
    "bubbliiiing-resnet50": _SCALED,
    "milesial-transposed": _SCALED,
    "wzmiaomiao-drive": _DRIVE,
    "qiaofengsheng": _SCALED,
}


@pytest.mark.parametrize("case", list(SOURCE_PREPROCESSING))
def test_converted_models_keep_the_source_projects_preprocessing(case, tmp_path):
    """Not ImageNet statistics: predict() and save_pretrained must normalise as the source project did."""
    name, make_ref, _, options, extras, _ = PARITY_CASES[case]
    model = unetzoo.create(name, checkpoint={**make_ref().state_dict(), **extras}, **options)
    mean, std = SOURCE_PREPROCESSING[case]
    pre = unetzoo.transforms_for(model)
    assert pre.mean == pytest.approx(mean) and pre.std == pytest.approx(std)
    image = torch.full((3, 2, 2), 51, dtype=torch.uint8)  # 0.2 after scaling
    expected = (0.2 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(pre(image)[:, 0, 0], expected.float(), atol=1e-6)
    model.save_pretrained(tmp_path / "saved")  # recorded in config.json and restored with the model
    assert unetzoo.transforms_for(unetzoo.from_pretrained(tmp_path / "saved")) == pre


def test_one_channel_source_preprocessing_follows_in_chans():
    model = unetzoo.create("unet-classic", checkpoint=milesial.UNet(1, 2).state_dict())
    assert unetzoo.transforms_for(model).mean == (0.0,) and unetzoo.transforms_for(model).std == (1.0,)


def test_corrupt_safetensors_checkpoint_is_named(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "cut.safetensors"
    save_file(_small_wz().state_dict(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.safetensors.*truncated or corrupt"):
        unetzoo.create("unet-classic", checkpoint=path)


def test_pre2021_bubbliiiing_decoder_without_relu(tmp_path):
    """unet_voc.pth-era checkpoints: the same keys, no ReLU in the decoder -> decoder_act=None."""
    ref = randomize(bubbliiiing.Unet(2, "vgg", relu=False), seed=3)
    path = _save(ref.state_dict(), tmp_path)
    x = torch.randn(1, 3, 32, 32)
    _assert_parity(ref, unetzoo.create("unet-vgg16", checkpoint=path, decoder_act=None), x)
    # the keys cannot tell the eras apart: with the default ReLU decoder the outputs differ
    wrong = _forward(unetzoo.create("unet-vgg16", checkpoint=path), x)
    assert (wrong - _forward(ref, x)).abs().max() > 1e-2


def test_bubbliiiing_resnet50_checkpoints_keep_their_decoder_relus(tmp_path):
    """Only the VGG model has a ReLU-free-era checkpoint; decoder_act=None on a ResNet50 one would
    also strip the ReLUs its skip-less up_conv block always had, so it is a conflict, not a load."""
    torch.manual_seed(0)
    path = _save(randomize(bubbliiiing.Unet(2, "resnet50")).state_dict(), tmp_path)
    with pytest.raises(ValueError, match=r"decoder_act=None conflicts with .*ckpt.pth, which was trained with decoder_act='relu'; leave decoder_act out"):
        unetzoo.create("unet-resnet50", checkpoint=path, decoder_act=None)


@pytest.mark.parametrize("bilinear", [True, False])
def test_wzmiaomiao_checkpoints_of_odd_widths_import(bilinear, tmp_path):
    """WZMIAOMIAO's UNet takes any base_c (only the first level is odd then)."""
    torch.manual_seed(0)
    ref = randomize(wzmiaomiao.UNet(3, 2, bilinear, base_c=5)).eval()
    model = unetzoo.create("unet-classic", checkpoint=_save(ref.state_dict(), tmp_path)).eval()
    x = torch.randn(1, 3, 37, 50)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x)["out"], rtol=0, atol=TOL)
    with pytest.raises(ValueError, match="base_c must be at least 1, got 0"):
        unetzoo.create("unet-classic", base_c=0)


def test_resnet_maxpool_quirk_is_needed(tmp_path):
    """Without the quirk (torchvision's max-pool) the same weights give other outputs."""
    ref = randomize(bubbliiiing.Unet(2, "resnet50"), seed=4)
    state_dict, inferred = prepare_checkpoint(get_spec("unet-resnet50"), ref.state_dict())
    assert inferred["maxpool_quirk"] is True
    plain = load_converted(unetzoo.create("unet-resnet50", num_classes=2), state_dict)
    x = torch.randn(1, 3, 64, 64)
    assert (_forward(plain, x) - _forward(ref, x)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="maxpool_quirk=False conflicts with the given state dict"):
        unetzoo.create("unet-resnet50", checkpoint=ref.state_dict(), maxpool_quirk=False)


# ----------------------------------------------------------------------------- containers
def _small_wz(seed=5):
    return randomize(wzmiaomiao.UNet(3, 2, bilinear=True, base_c=4), seed=seed)


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda sd: sd, id="raw"),
        pytest.param(
            lambda sd: {
                "model": sd,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
                "lr_scheduler": {"last_epoch": 3, "lr_lambdas": [None]},
                "epoch": 3,
                "args": argparse.Namespace(base_c=4, data_path="./DRIVE", lr=0.01),
            },
            id="wzmiaomiao-training-checkpoint",
        ),
        pytest.param(lambda sd: {"state_dict": sd, "epoch": 1}, id="state_dict"),
        pytest.param(lambda sd: {f"module.{k}": v for k, v in sd.items()}, id="dataparallel"),
        pytest.param(lambda sd: {"model": {f"module._orig_mod.{k}": v for k, v in sd.items()}}, id="ddp-compiled"),
        pytest.param(lambda sd: {f"_orig_mod.module.{k}": v for k, v in sd.items()}, id="compiled-ddp"),
    ],
)
def test_checkpoint_containers(wrap, tmp_path):
    ref = _small_wz()
    model = unetzoo.create("unet-classic", checkpoint=_save(wrap(ref.state_dict()), tmp_path))
    assert model.config.options["base_c"] == 4 and model.config.options["bilinear"] is True
    _assert_parity(ref, model, torch.randn(1, 3, 32, 32))


def test_safetensors_and_in_memory_state_dicts(tmp_path):
    from safetensors.torch import save_file

    ref = _small_wz()
    path = tmp_path / "w.safetensors"
    save_file(ref.state_dict(), path)
    x = torch.randn(1, 3, 16, 16)
    _assert_parity(ref, unetzoo.create("unet-classic", checkpoint=path), x)
    _assert_parity(ref, unetzoo.create("unet-classic", checkpoint=ref.state_dict()), x)


def test_unetzoo_layout_round_trip():
    model = unetzoo.create("unet-classic", base_c=4, num_classes=3)
    randomize(model, seed=6)
    again = unetzoo.create("unet-classic", base_c=4, checkpoint=model.state_dict())
    assert again.config.num_classes == 3
    _assert_parity(model, again, torch.randn(1, 3, 20, 24))


def test_detect_format_names_each_project():
    names = {
        "bubbliiiing-vgg16": bubbliiiing.Unet(2, "vgg"),
        "milesial": milesial.UNet(3, 2, bilinear=True),
        "wzmiaomiao": wzmiaomiao.UNet(base_c=4),
        "jvanvugt": jvanvugt.UNet(wf=1),
        "qiaofengsheng": qiaofengsheng.UNet(),
    }
    for expected, net in names.items():
        with torch.device("meta"):
            keys = dict.fromkeys(net.state_dict())
        assert detect_format(keys).name == expected


# ----------------------------------------------------------------------------- errors
def test_unknown_format_lists_keys_and_known_formats(tmp_path):
    path = _save({"backbone.stem.weight": torch.zeros(2, 3, 3, 3), "cls.weight": torch.zeros(2)}, tmp_path)
    with pytest.raises(ValueError) as err:
        unetzoo.create("unet-classic", checkpoint=path)
    msg = str(err.value)
    assert str(path) in msg and "unknown checkpoint format" in msg
    assert "backbone.stem.weight" in msg and "milesial" in msg and "jvanvugt" in msg


def test_checkpoint_for_another_model_names_the_right_one(tmp_path):
    path = _save(_small_wz().state_dict(), tmp_path)
    with pytest.raises(ValueError, match=r"loads into 'unet-classic', not 'unet-vgg16'") as err:
        unetzoo.create("unet-vgg16", checkpoint=path)
    assert str(path) in str(err.value)


def test_a_whole_seed_checkpoint_given_as_pretrained_points_to_checkpoint(tmp_path):
    """pretrained= takes backbone weights; a bubbliiiing model's whole checkpoint there is a
    mix-up the error names, with the call that loads it."""
    torch.manual_seed(0)
    path = _save(bubbliiiing.Unet(2, "vgg").state_dict(), tmp_path)
    with pytest.raises(ValueError, match=r"is a whole bubbliiiing/unet-pytorch Unet\(backbone='vgg'\) checkpoint, not "
                                         r"backbone weights: load it with unetzoo\.create\('unet-vgg16', checkpoint="):
        unetzoo.create("unet-vgg16", pretrained=path, num_classes=2)
    assert unetzoo.create("unet-vgg16", checkpoint=path).num_classes == 2


def test_pickle_that_needs_code_is_refused(tmp_path):
    path = _save({"model": nn.Conv2d(1, 1, 1)}, tmp_path)  # a whole pickled module
    with pytest.raises(ValueError, match=r"torch\.nn\.modules\.conv\.Conv2d.*weights only.*obj\.state_dict\(\).*"
                                         r"for a training dict.*obj\['model'\]") as err:
        unetzoo.create("unet-classic", checkpoint=path)
    assert str(path) in str(err.value)


class _RunsCode:
    """A pickle that calls os.system when loaded unsafely."""

    def __init__(self, flag):
        self.flag = str(flag)

    def __reduce__(self):
        return os.system, (f"touch {self.flag}",)


@pytest.mark.parametrize("how", ["checkpoint", "pretrained"])
def test_a_pickle_that_would_run_a_command_is_named_as_such(tmp_path, how):
    """torch words this case 'unsupported GLOBAL posix.system whose module posix is blocked':
    the file was called 'damaged', not one that would run code."""
    flag = tmp_path / "ran"
    path = _save({"conv1.weight": torch.zeros(1), "x": _RunsCode(flag)}, tmp_path)
    with pytest.raises(ValueError, match=r"would call (posix|os|nt)\.system while loading.*Nothing was run"):
        unetzoo.create("unet-resnet18", **{how: path})
    assert not flag.exists()


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        read_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="non-tensor entries"):
        read_checkpoint({"conv.weight": torch.zeros(1), "epoch": 3})


def test_missing_unexpected_and_mismatched_keys_in_one_error(tmp_path):
    sd = _small_wz().state_dict()
    del sd["up2.conv.0.weight"]
    sd["up1.conv.3.weight"] = torch.zeros(3, 3, 3, 3)
    sd["extra.head.weight"] = torch.zeros(2)
    path = _save(sd, tmp_path)
    with pytest.raises(ValueError) as err:
        unetzoo.create("unet-classic", checkpoint=path)
    msg = str(err.value)
    assert str(path) in msg and "wzmiaomiao" in msg
    assert "1 missing keys" in msg and "decoder.1.block.conv1.0.weight" in msg
    assert "1 unexpected keys" in msg and "extra.head.weight" in msg
    assert "1 shape mismatches" in msg and "checkpoint key up1.conv.3.weight" in msg and "(3, 3, 3, 3)" in msg


def test_wrong_architecture_variant_is_refused():
    """A jvanvugt checkpoint with batch norm is not the paper's network."""
    sd = {k: v for k, v in randomize(jvanvugt.UNet(wf=1)).state_dict().items()}
    sd["down_path.0.block.1.weight"] = torch.ones(2)  # a BatchNorm after the first conv
    with pytest.raises(ValueError, match=r"unexpected keys.*down_path\.0\.block\.1\.weight") as err:
        unetzoo.create("unet-original", checkpoint=sd)
    assert "shape mismatches" in str(err.value)  # wf=1 is narrower than the paper's 64


def test_conflicting_option_is_an_error(tmp_path):
    path = _save(_small_wz().state_dict(), tmp_path)
    with pytest.raises(ValueError, match=f"num_classes=5 conflicts with {re.escape(str(path))}, which was trained "
                                         "with num_classes=2; leave num_classes out"):
        unetzoo.create("unet-classic", checkpoint=path, num_classes=5)


def test_failed_load_leaves_the_model_untouched():
    model = unetzoo.create("unet-classic", base_c=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd, _ = prepare_checkpoint(get_spec("unet-classic"), _small_wz().state_dict())
    sd = dict(sd)
    sd["head.weight"] = torch.zeros(7, 4, 1, 1)  # one bad tensor among good ones
    with pytest.raises(ValueError, match="shape mismatches"):
        load_converted(model, sd, source="x.pth")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_randomize_replaces_weights():
    """randomize() really replaces weights (guards the parity tests against trivial passes)."""
    a = randomize(wzmiaomiao.UNet(3, 2, base_c=4), seed=1)
    b = randomize(wzmiaomiao.UNet(3, 2, base_c=4), seed=2)
    w = "in_conv.0.weight"
    assert not torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert math.isclose(a.state_dict()[w].std().item(), math.sqrt(2 / 27), rel_tol=0.25)


# ----------------------------------------------------------------------------- CLI
def test_cli_convert_writes_a_loadable_model(tmp_path, capsys):
    from unetzoo.cli import main

    ref = _small_wz(seed=8)
    src = _save({"model": ref.state_dict(), "epoch": 9}, tmp_path, "best_model.pth")
    out = tmp_path / "converted"
    assert main(["convert", str(src), str(out)]) == 0  # the model is detected from the keys
    assert "unet-classic" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    _assert_parity(ref, unetzoo.from_pretrained(out), torch.randn(1, 3, 32, 24))

    assert main(["convert", str(src), str(tmp_path / "x"), "--model", "unet-classic", "--num-classes", "4"]) == 1
    assert "num_classes=4 conflicts" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "y")]) == 1
    assert "missing.pth" in capsys.readouterr().err


def test_cli_option_values_are_literals():
    from unetzoo.cli.options import model_option as _option

    assert _option("decoder_act=None") == ("decoder_act", None)
    assert _option("dropout=(0.1, 0.2)") == ("dropout", (0.1, 0.2))
    assert _option("upsample=nearest") == ("upsample", "nearest")
    with pytest.raises(argparse.ArgumentTypeError, match="got 'model.onnx'; here -o is --option.*not the output"):
        _option("model.onnx")


def test_jvanvugt_padding_true_checkpoints_load_with_the_padding_option(tmp_path):
    """UNet(padding=True) has the paper's keys and shapes: it loads into unet-original only with
    padding=True (a warning says so when no padding is given) and then matches on multiples of 16."""
    torch.manual_seed(0)
    ref = randomize(jvanvugt.UNet(padding=True)).eval()
    path = _save(ref.state_dict(), tmp_path)
    with pytest.warns(UserWarning, match=r"loaded with padding=False \(the default\): a checkpoint trained with "
                                         r"padding=True .*pass padding=True"):
        unetzoo.create("unet-original", checkpoint=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the option given: nothing to warn about
        model = unetzoo.create("unet-original", checkpoint=path, padding=True)
    assert model.border == 0 and model.config.options["padding"] is True
    x = torch.randn(1, 1, 48, 64)
    _assert_parity(ref, model, x)
    assert _forward(model, torch.randn(1, 1, 37, 50)).shape[-2:] == (37, 50)  # any size, as every padded net


def test_jvanvugt_batch_norm_and_upsample_checkpoints_are_named_as_such():
    sd = jvanvugt.UNet(wf=1).state_dict()
    with pytest.raises(ValueError, match=r"trained with batch_norm=True \(it has down_path.0.block.2.running_mean\)"):
        unetzoo.create("unet-original", checkpoint={**sd, "down_path.0.block.2.running_mean": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"trained with up_mode='upsample'"):
        unetzoo.create("unet-original", checkpoint={**sd, "up_path.0.up.1.weight": torch.zeros(2, 4, 1, 1)})


def test_a_failed_load_repeats_what_the_format_cannot_tell_and_the_cli_spelling():
    sd = jvanvugt.UNet(wf=1).state_dict()  # narrower than the paper's network
    with pytest.raises(ValueError, match=r"shape mismatches.*; of these checkpoints: a checkpoint trained with "
                                         r"padding=True"):
        unetzoo.create("unet-original", checkpoint=sd, padding=False)
    with pytest.raises(ValueError, match=r"loads into 'unet-original', not 'unet-classic': .*unetzoo convert: leave "
                                         r"out --model or pass --model unet-original"):
        unetzoo.create("unet-classic", checkpoint=sd)
