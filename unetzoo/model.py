"""Model classes: what every unetzoo network can do, and the encoder-decoder U-Net.

:class:`UnetZooModel` is the base of every network in the zoo (timm/torchvision U-Nets and
the classic reproductions). It carries the constructor configuration (for saving and
reloading), input validation, padding to the network's stride, transfer-learning controls
(freezing with norm statistics frozen too, stage-wise freezing, optimizer parameter groups)
and the Hub methods.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ModelConfig", "UnetZooModel", "SegmentationModel"]


@dataclass(frozen=True)
class ModelConfig:
    """The constructor arguments a model was built with: enough to build it again.

    Attributes:
        name: registry name without the weights tag (``unet-resnet18``, also for
            ``unet-resnet18.tv_in1k``): the architecture only. The weights loaded are
            described by the model's ``weights_spec``.
        num_classes, in_chans: output and input channels.
        options: every other architecture option, resolved (defaults included).
    """

    name: str
    num_classes: int
    in_chans: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`unetzoo.create` that rebuild this architecture."""
        return {"num_classes": self.num_classes, "in_chans": self.in_chans, **self.options}


class UnetZooModel(nn.Module):
    """Base class of every network in the zoo.

    Subclasses implement :meth:`encoder_stages` (the contracting path, stage by stage) and
    set :attr:`in_chans`, :attr:`num_classes` and :attr:`pad_multiple`.
    """

    config: ModelConfig | None = None
    in_chans: int
    num_classes: int
    #: inputs are zero-padded to a multiple of this (then cropped back); None = no padding
    pad_multiple: int | None = None
    #: pixels lost per side by valid (unpadded) convolutions: the output is the input minus
    #: ``2 * border`` in each dimension (92 for unet-original); 0 for same-size networks
    border: int = 0

    def __init__(self) -> None:
        super().__init__()
        self._frozen_stages: int = 0  # how many encoder stages are frozen (-1 = the whole encoder)
        self._kept_frozen: set[str] = set()  # parameters frozen before freeze_encoder: unfreezing keeps them

    # ------------------------------------------------------------------ structure
    def encoder_stages(self) -> list[nn.Module]:
        """The contracting path, stage by stage (stage ``i`` ends at feature ``i``)."""
        raise NotImplementedError

    def encoder_modules(self) -> list[nn.Module]:
        """Every module of the encoder (by default: the stages)."""
        return self.encoder_stages()

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        seen: set[int] = set()
        for module in self.encoder_modules():
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter that is not the encoder's (decoder and head)."""
        enc = {id(p) for p in self.encoder_parameters()}
        return (p for p in self.parameters() if id(p) not in enc)

    # ------------------------------------------------------------------ input handling
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a float (N, in_chans, H, W) tensor."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of shape (N, {self.in_chans}, H, W), got {type(x).__name__}")
        if x.ndim != 4:
            fix = ("add a batch dimension with x.unsqueeze(0)" if x.ndim == 3
                   else f"reshape it to (N, {self.in_chans}, H, W)")
            raise ValueError(f"expected a 4-d input (N, {self.in_chans}, H, W), got shape {tuple(x.shape)}; {fix}")
        if x.shape[1] != self.in_chans:
            if x.shape[-1] == self.in_chans:
                fix = "it looks channels-last (N, H, W, C): use x.permute(0, 3, 1, 2)"
            else:
                fix = f"build the model with in_chans={x.shape[1]} or convert the images"
            raise ValueError(
                f"expected {self.in_chans} input channels (N, {self.in_chans}, H, W), got shape {tuple(x.shape)}; {fix}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"expected a floating-point input, got {x.dtype}; convert with x.float() (and normalise, "
                "e.g. unetzoo.transforms_for(model))"
            )

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        h, w = x.shape[-2:]
        m = self.pad_multiple
        if not m:
            return x, h, w
        ph, pw = (h + m - 1) // m * m - h, (w + m - 1) // m * m - w  # not (-h) % m: inductor fails on a
        # symbolic modulo once torch.compile turns the size dynamic (the second input size)
        if torch.compiler.is_compiling() or ph or pw:  # no guard on the size when tracing
            x = F.pad(x, (0, pw, 0, ph))
        return x, h, w

    @staticmethod
    def _crop(out: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Undo :meth:`_pad`: a view in eager mode; under torch.compile/export a negative pad,
        whose contiguous output lets the graph keep height and width dynamic."""
        if torch.compiler.is_compiling():
            return F.pad(out, (0, w - out.shape[-1], 0, h - out.shape[-2]))
        return out[..., :h, :w]

    # ------------------------------------------------------------------ transfer learning
    def freeze_encoder(self, stages: int | None = None) -> "UnetZooModel":
        """Freeze the encoder, or only its first ``stages`` stages.

        Frozen parameters get ``requires_grad=False`` and no gradient (one left from earlier steps
        would still move them in AdamW), and frozen modules stay in eval mode (norm running
        statistics do not change, dropout is off), also after ``model.train()``. Parameters that
        were already frozen stay frozen after :meth:`unfreeze_encoder`. Returns the model, so
        calls chain.
        """
        self.unfreeze_encoder()
        if stages is None:
            self._frozen_stages = -1
        else:
            n = len(self.encoder_stages())
            if not 0 <= stages <= n:
                raise ValueError(f"stages must be between 0 and {n} (this encoder has {n} stages), got {stages}")
            self._frozen_stages = stages
        params = self._frozen_parameters()
        self._kept_frozen = {name for name, p in params.items() if not p.requires_grad}
        for p in params.values():
            p.requires_grad_(False)
            p.grad = None
        self._apply_frozen_modes()
        return self

    def unfreeze_encoder(self) -> "UnetZooModel":
        """Undo :meth:`freeze_encoder`: gradients on again (except for parameters that were frozen
        before it), and modules follow ``model.training``."""
        for name, p in self._frozen_parameters().items():
            if name not in self._kept_frozen:
                p.requires_grad_(True)
        for module in self._frozen_modules():
            module.train(self.training)
        self._frozen_stages, self._kept_frozen = 0, set()
        return self

    def _frozen_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters of the frozen modules, by name."""
        ids = {id(p) for module in self._frozen_modules() for p in module.parameters()}
        return {name: p for name, p in self.named_parameters() if id(p) in ids} if ids else {}

    # the seed project's names
    def freeze_backbone(self) -> "UnetZooModel":
        """Alias of :meth:`freeze_encoder` (the name used by bubbliiiing/unet-pytorch)."""
        return self.freeze_encoder()

    def unfreeze_backbone(self) -> "UnetZooModel":
        """Alias of :meth:`unfreeze_encoder`."""
        return self.unfreeze_encoder()

    @property
    def frozen_stages(self) -> int | None:
        """Number of frozen encoder stages; ``None`` when the whole encoder is frozen."""
        return None if self._frozen_stages == -1 else self._frozen_stages

    def _frozen_modules(self) -> list[nn.Module]:
        if self._frozen_stages == 0:  # nothing frozen: no need to know the stages (finding them may
            return []  # take a probe pass, which train()/eval() must not run, nor count in FLOPs)
        if self._frozen_stages == -1:
            return self.encoder_modules()
        return self.encoder_stages()[: self._frozen_stages]

    def _apply_frozen_modes(self) -> None:
        for module in self._frozen_modules():
            module.eval()

    def train(self, mode: bool = True) -> "UnetZooModel":
        super().train(mode)
        self._apply_frozen_modes()
        return self

    def param_groups(
        self,
        *,
        decoder_lr: float,
        encoder_lr: float | None = None,
        weight_decay: float = 0.0,
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups: encoder and decoder, each split by weight decay.

        Biases and norm weights (every parameter with fewer than 2 dimensions) get no weight
        decay. Frozen parameters are included, so the same optimizer keeps working after
        :meth:`unfreeze_encoder` (they have no gradient while frozen, and optimizers skip them).

        Example:
            >>> opt = torch.optim.AdamW(model.param_groups(encoder_lr=1e-5, decoder_lr=1e-4, weight_decay=1e-2))
        """
        encoder_lr = decoder_lr if encoder_lr is None else encoder_lr
        groups = []
        for name, params, lr in (
            ("encoder", list(self.encoder_parameters()), encoder_lr),
            ("decoder", list(self.decoder_parameters()), decoder_lr),
        ):
            decay = [p for p in params if p.ndim > 1]
            no_decay = [p for p in params if p.ndim <= 1]
            for suffix, ps, wd in (("", decay, weight_decay), ("_no_decay", no_decay, 0.0)):
                if ps:
                    groups.append({"name": name + suffix, "params": ps, "lr": lr, "weight_decay": wd})
        return groups

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory, **kwargs):
        """Write ``model.safetensors`` + ``config.json`` + ``README.md`` (see :mod:`unetzoo.hub`)."""
        from unetzoo.hub import save_pretrained

        return save_pretrained(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Publish the model to the Hugging Face Hub (see :func:`unetzoo.hub.push_to_hub`)."""
        from unetzoo.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def optimize_for_inference(self, **kwargs: Any) -> "UnetZooModel":
        """Fold norms, channels-last, bfloat16 where native, optional compile; in place.

        See :func:`unetzoo.fast.optimize_for_inference` for the options and tolerances.
        """
        from unetzoo.fast import optimize_for_inference

        return optimize_for_inference(self, **kwargs)


class SegmentationModel(UnetZooModel):
    """Encoder + U-Net decoder + head; returns full-resolution logits for any input size.

    Inputs whose height or width is not a multiple of the encoder's output stride are
    zero-padded at the bottom/right and the output is cropped back, so the output always has
    the input's size; on sizes that need no padding the result is exactly the unpadded network's.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head = head
        self.in_chans = encoder.in_chans
        self.num_classes = head.out_channels
        # backbones built for one input size (ViT, LeViT, EfficientViT) take it as it is: padding it to
        # the stride would give a size they refuse (224 is no multiple of LeViT's 64); halo attention
        # asks for more than the stride (the encoder's pad_multiple)
        self.pad_multiple = (None if getattr(encoder, "fixed_input_size", None)
                             else getattr(encoder, "pad_multiple", encoder.output_stride))

    def encoder_stages(self) -> list[nn.Module]:
        return self.encoder.stages()

    def check_input(self, x: torch.Tensor) -> None:
        """:meth:`UnetZooModel.check_input`, and the size of backbones built for one (ViT, Swin)."""
        super().check_input(x)
        fixed = getattr(self.encoder, "fixed_input_size", None)
        if fixed is not None and tuple(x.shape[-2:]) != tuple(fixed):
            h, w = fixed
            raise ValueError(
                f"the backbone of this model only accepts {h}x{w} inputs (timm fixed_input_size), got "
                f"{x.shape[-2]}x{x.shape[-1]}; resize the images, or run unetzoo.predict(model, image), "
                f"which takes any size in {h}x{w} tiles"
            )

    def encoder_modules(self) -> list[nn.Module]:
        return [self.encoder]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x, h, w = self._pad(x)
        if torch.compiler.is_compiling():
            features = self.encoder(x)
        else:
            try:
                features = self.encoder(x)
            except RuntimeError as err:
                raise self._size_error(x, h, w, err) from err
        out = self.head(self.decoder(features))
        if out.shape[-2:] != x.shape[-2:]:
            # backbones of unpadded convolutions (inception_v3/v4, inception_resnet_v2) give features a few
            # pixels short of input / stride, and the decoder's 2x steps then fall short of the input
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        # logits in the default layout whatever the network ran in: cheap (few channels), what
        # callers expect, and the loss's gradient then flows back in the layers' own layout
        return self._crop(out, h, w).contiguous()

    def _size_error(self, x: torch.Tensor, h: int, w: int, err: RuntimeError) -> Exception:
        """A backbone of unpadded convolutions (inception_v3) that cannot run an input this small
        fails deep inside torch ("Kernel size can't be greater than actual input size"): name the
        smallest side it runs instead. Any other error is returned as it was."""
        if not any(s in str(err) for s in ("Kernel size", "padded input size", "Output size is too small")):
            return err
        smallest = self.min_input_size
        if min(h, w) >= smallest:
            return err
        return ValueError(
            f"input {h}x{w} is too small for {self.encoder_name}: its unpadded convolutions need both sides at "
            f"least {smallest} px; pad or resize the image (unetzoo.predict pads small images for you)"
        )

    @functools.cached_property
    def min_input_size(self) -> int:
        """The shortest side this network runs. 1 for most; more for backbones of unpadded
        convolutions (inception_v3: 65 px), found once by running the encoder on zero images of
        growing size (eval mode, no gradients). :func:`unetzoo.predict` zero-pads smaller images
        to it."""
        m = self.pad_multiple
        param = next(self.encoder.parameters(), None)
        smallest = 1
        if m and param is not None and param.device.type != "meta":
            from unetzoo._modes import evaluating

            with evaluating(self.encoder), torch.no_grad():
                for padded in range(m, 17 * m, m):
                    probe = torch.zeros(1, self.in_chans, padded, padded, dtype=param.dtype, device=param.device)
                    try:
                        self.encoder(probe)
                    except RuntimeError:
                        continue
                    smallest = padded - m + 1
                    break
        return smallest

    @property
    def encoder_name(self) -> str:
        return str(getattr(self.encoder, "name", type(self.encoder).__name__))

    def features(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        """The encoder's feature pyramid for ``x`` (already padded to the stride)."""
        return self.encoder(x)
