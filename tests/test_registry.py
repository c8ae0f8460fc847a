"""The registry: name grammar, listing, specs, errors, and a fast network-free import."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

import unetzoo
from unetzoo.registry import EncoderSpec, ModelSpec, UnknownModelError, get_spec, parse_name, register_model


def test_import_is_fast_and_lazy():
    code = (
        "import sys, time; t = time.perf_counter(); import unetzoo; dt = time.perf_counter() - t; "
        "print(dt, 'torch' in sys.modules, 'timm' in sys.modules, 'huggingface_hub' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) < 1.5
    assert out[1:] == ["False", "False", "False"], "import unetzoo must not import torch, timm or the hub client"


def test_dir_lists_the_public_names_and_loaded_subpackages_only():
    code = (
        "import unetzoo; before = dir(unetzoo); import unetzoo.metrics; after = dir(unetzoo); "
        "print(' '.join(before)); print(' '.join(after))"
    )
    before, after = (
        line.split()
        for line in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        .stdout.splitlines()
    )
    assert before == sorted(unetzoo.__all__)
    assert after == sorted([*unetzoo.__all__, "metrics"])
    for helper in ("importlib", "types", "TYPE_CHECKING", "Any", "annotations"):
        assert helper not in after


@pytest.mark.parametrize(
    "name, expected",
    [
        ("unet-resnet50", ("unet-resnet50", None)),
        ("unet-resnet50.a1_in1k", ("unet-resnet50", "a1_in1k")),
        ("unet-convnext_tiny", ("unet-convnext_tiny", None)),
        ("unet-efficientnet_lite0.in1k", ("unet-efficientnet_lite0", "in1k")),
    ],
)
def test_parse_name(name, expected):
    assert parse_name(name) == expected


@pytest.mark.parametrize("bad", ["resnet50", "unet_resnet50", "unet-resnet50.", "unet-res net"])
def test_parse_name_rejects_bad_grammar(bad):
    with pytest.raises(UnknownModelError, match="<arch>-<encoder>"):
        parse_name(bad)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError) as err:
        get_spec("unet-resnet500")
    msg = str(err.value)
    assert "unet-resnet50" in msg and "Did you mean" in msg
    with pytest.raises(UnknownModelError) as err:
        get_spec("unet-resnet5")  # curated and timm both know unet-resnet50: suggested once
    close = str(err.value).split("Did you mean: ")[1].split("?")[0].split(", ")
    assert len(close) == len(set(close)) == 5 and "unet-resnet50" in close


@pytest.mark.parametrize("typed,meant", [("unet-efficientnet-lite0", "unet-efficientnet_lite0"),
                                          ("unet-convnext-tiny", "unet-convnext_tiny"), ("resnet50", "unet-resnet50"),
                                          ("unet_resnet50", "unet-resnet50")])
def test_a_malformed_name_suggests_the_model_it_most_likely_means(typed, meant):
    with pytest.raises(UnknownModelError, match=f"invalid model name '{typed}': .*Did you mean '{meant}'\\?"):
        get_spec(typed)
    with pytest.raises(UnknownModelError) as err:
        get_spec("not a name")
    assert "Did you mean" not in str(err.value)


def test_registering_twice_raises():
    spec = get_spec("unet-vgg16")
    with pytest.raises(ValueError, match="already registered"):
        register_model(spec)


def test_specs_are_frozen():
    spec = get_spec("unet-resnet50")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"
    with pytest.raises(TypeError):
        spec.defaults["num_classes"] = 3  # read-only mapping


def test_spec_validation():
    with pytest.raises(ValueError, match="lower case"):
        ModelSpec(name="unet-ResNet", arch="unet", builder="m:f")
    with pytest.raises(ValueError, match="default_tag"):
        ModelSpec(name="unet-x", arch="unet", builder="m:f", default_tag="nope")


def test_list_models_curated_and_timm():
    curated = unetzoo.list_models(curated_only=True)
    for name in ["unet-vgg16", "unet-resnet50", "unet-efficientnet_lite0", "unet-classic", "unet-original"]:
        assert name in curated
    everything = unetzoo.list_models()
    assert len(everything) > 500, "every timm features_only backbone should be listed"
    assert everything[: len(curated)] == curated, "curated models come first"
    assert "unet-convnext_tiny" in everything and "unet-regnetx_002" in everything
    assert len(set(everything)) == len(everything)


def test_list_models_patterns():
    res = unetzoo.list_models("unet-res*", exclude="*resnet5*")
    assert res and all(n.startswith("unet-res") for n in res)
    assert not any("resnet5" in n for n in res)
    assert unetzoo.list_models(["unet-vgg16", "unet-classic"], curated_only=True) == ["unet-classic", "unet-vgg16"]


def test_list_models_pretrained_tags():
    tagged = unetzoo.list_models("unet-resnet50*", pretrained=True, curated_only=True)
    assert "unet-resnet50.tv_in1k" in tagged and "unet-resnet50.a1_in1k" in tagged
    assert "unet-classic" not in unetzoo.list_models(pretrained=True, curated_only=True)
    assert "unet-classic" in unetzoo.list_models(pretrained=False, curated_only=True)
    # with timm: a curated model lists timm's other tags for its encoder too, which create() loads
    listed = unetzoo.list_models("unet-resnet18.*", pretrained=True)
    assert {"unet-resnet18.tv_in1k", "unet-resnet18.a2_in1k", "unet-resnet18.gluon_in1k"} <= set(listed)
    from unetzoo.weights.loader import resolve_weights

    assert all(resolve_weights(get_spec(n), n.split(".", 1)[1]).location.endswith(n.split(".", 1)[1])
               for n in listed)


def test_timm_backbones_are_reachable_without_registration():
    spec = get_spec("unet-regnetx_002")
    assert spec.encoder == EncoderSpec("timm", "regnetx_002")
    assert not spec.curated
    assert get_spec("unet-regnetx_002") is spec  # cached


def test_model_info_reads_the_backbone():
    import timm

    info = unetzoo.model_info("unet-efficientnet_lite0")
    feat = timm.create_model("tf_efficientnet_lite0", features_only=True)
    assert info.channels == tuple(feat.feature_info.channels())
    assert info.reductions == tuple(feat.feature_info.reduction())
    assert info.encoder_source == "timm" and info.default_weights.tag == "in1k"
    assert info.default_weights.mean == (0.5, 0.5, 0.5)
    tv = unetzoo.model_info("unet-resnet50")
    assert tv.channels == (64, 256, 512, 1024, 2048) and tv.reductions == (2, 4, 8, 16, 32)
    assert tv.num_params == 43_934_101  # SEED_SYSTEMS.md §1, num_classes=21


def test_unknown_options_raise_type_error():
    with pytest.raises(TypeError, match="unknown option.*decoder_chanels.*valid options"):
        unetzoo.create("unet-resnet18", decoder_chanels=(16, 16, 16, 16))


@pytest.mark.parametrize("name, options, match", [
    ("unet-resnet18", {"num_classes": 0}, r"num_classes must be a positive whole number.*got 0"),
    ("unet-original", {"in_chans": 0}, r"in_chans must be a positive whole number.*got 0"),
    ("unet-classic", {"num_classes": 2.5}, r"num_classes .* got 2\.5"),
    ("unet-resnet18", {"in_chans": "3"}, r"in_chans .* got '3'"),
    ("unet-resnet18", {"decoder_channels": 64}, r"decoder_channels must be a list of positive widths.*got 64"),
    ("unet-resnet18", {"decoder_channels": [64, 0, 32, 16]}, r"decoder_channels .* got \[64, 0, 32, 16\]"),
    ("unet-resnet18", {"out_indices": (0, 1, 2, 3, 4, 5)}, r"'resnet18' has 5 feature levels.*within 0\.\.4"),
    ("unet-vgg11", {"drop_path_rate": 0.1}, r"'vgg11' does not take the option\(s\) \['drop_path_rate'\].*drop them"),
    ("unet-vgg16", {"maxpool_quirk": True}, r"only to torchvision ResNet encoders .* not torchvision 'vgg16'; drop"),
])
def test_bad_options_name_the_value_and_the_fix(name, options, match):
    with torch.device("meta"), pytest.raises(ValueError, match=match):
        unetzoo.create(name, **options)


def test_numpy_integers_are_taken_as_ints():
    with torch.device("meta"):
        model = unetzoo.create("unet-resnet18", num_classes=np.int64(3), decoder_channels=[np.int64(32), 16, 16, 8])
    assert model.config.num_classes == 3 and type(model.config.num_classes) is int
    assert model.head.out_channels == 3


def test_config_name_is_the_architecture_without_the_weights_tag():
    model = unetzoo.create("unet-resnet18.tv_in1k", pretrained=False, num_classes=2)
    assert model.config.name == "unet-resnet18"  # rebuilt with create(config.name) it loads no weights
    assert model.weights_spec is None


def test_upper_case_name_gets_the_fix():
    with pytest.raises(UnknownModelError, match="use 'unet-resnet50'"):
        parse_name("UNet-ResNet50")


def test_timm_weights_licenses_match_timms_pretrained_configs():
    """The license shown by `unetzoo info` and written to model cards is the one timm publishes."""
    import timm

    checked = 0
    for name in unetzoo.list_models(curated_only=True):
        spec = get_spec(name)
        for weights in spec.weights:
            if weights.source == "timm":
                assert weights.license == timm.models.get_pretrained_cfg(weights.location).license, weights.location
                checked += 1
    assert checked >= 6
