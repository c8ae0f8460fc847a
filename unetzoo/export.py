"""Export a model to ONNX, TorchScript or a ``torch.export`` program, with dynamic batch/height/width.

    >>> model = unetzoo.create("unet-resnet18", num_classes=2)
    >>> export_model(model, "unet.onnx", format="onnx")          # onnxruntime-ready
    >>> export_model(model, "unet.pt2", format="exported-program")   # torch.export.load(...)
    >>> export_model(model, "unet.ts", format="torchscript")     # torch.jit.load(...)

All three accept any batch size and, for same-size networks, any height and width: the
padding to the encoder's stride and the crop back are part of the exported graph. Networks
with valid convolutions (unet-original) accept the sizes they accept in eager mode.

One exception: a ``torch.export`` program refuses heights or widths of the encoder's stride
or less (32 px for most backbones), where the deepest feature is 1 px: batch norm and
interpolation branch on that size, and the export records guards against it. Exporting
size-obliviously lifts that for ResNets but makes ConvNeXt refuse batch 1 and fails for
unet-original, so it is not done.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetzoo._atomic import atomic_path
from unetzoo._modes import evaluating, fixed_input_size, param_dtype

__all__ = [
    "FORMATS",
    "load_model",
    "export_model",
    "export_program",
    "export_torchscript",
    "save_onnx",
    "export_example",
    "onnx_max_abs_diff",
]

FORMATS = ("onnx", "torchscript", "exported-program")
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def load_model(
    ref: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    **options: Any,
) -> nn.Module:
    """A model from a registry name, a saved directory, or a name plus ``checkpoint``.

    Args:
        ref: ``"unet-resnet50"`` (random init unless ``checkpoint`` is given), or a directory
            written by ``save_pretrained`` (``config.json`` + ``model.safetensors``).
        checkpoint: whole-model checkpoint for the registry name (see :func:`unetzoo.create`).
        num_classes, in_chans, options: passed to :func:`unetzoo.create` for registry names.
    """
    import unetzoo

    path = Path(ref)
    if path.is_dir():
        if checkpoint is not None or options or in_chans is not None or num_classes is not None:
            # a new num_classes would replace the trained head with a random one: never what an export wants
            raise ValueError(f"{path} is a saved model; --checkpoint, --num-classes, --in-chans and options apply "
                             "only to registry names")
        return unetzoo.from_pretrained(path).eval()
    if path.suffix in (".pth", ".pt", ".safetensors", ".onnx") or path.exists():
        raise ValueError(
            f"{ref!r} is a file, not a registry name or a saved-model directory; "
            f"pass the architecture and the file: MODEL --checkpoint {ref}"
        )
    if any(sep in str(ref) for sep in ("/", os.sep)):
        raise ValueError(f"there is no folder {ref} (MODEL is a registry name such as unet-resnet50, or a folder "
                         "written by save_pretrained)")
    return unetzoo.create(str(ref), checkpoint=checkpoint, num_classes=num_classes, in_chans=in_chans, **options).eval()


def export_example(model: nn.Module, *, batch: int = 2) -> torch.Tensor:
    """An example input for tracing: batch 2 (so the batch dimension stays symbolic) and, for
    same-size networks, a size that is *not* a multiple of the stride (so padding is traced).
    A float32 input, found with the model in float32 (bfloat16 weights are cast back after)."""
    from unetzoo.fast import example_input

    with _exporting(model, torch.float32):
        x = example_input(model, batch=batch)
    if not getattr(model, "border", 0) and fixed_input_size(model) is None:  # same-size network: any size
        h, w = x.shape[-2:]
        x = torch.randn(batch, x.shape[1], h + 3, w + 5, dtype=x.dtype, device=x.device)
    return x


def _valid_grid(model: nn.Module, side: int, in_chans: int) -> tuple[int, int, int] | None:
    """``(stride, offset, smallest)`` of a valid-convolution network (``border > 0``), whose
    inputs lie on a grid of its ``output_stride`` (unet-original: 16 k + 124, from 188), found from
    an accepted ``side`` and the model's own ``check_input``; ``None`` for same-size networks."""
    stride = getattr(model, "output_stride", None)
    if not getattr(model, "border", 0) or not stride:
        return None
    smallest = side
    while smallest - stride > 0:
        try:
            model.check_input(torch.zeros(1, in_chans, smallest - stride, smallest - stride))
        except ValueError:
            break
        smallest -= stride
    return stride, side % stride, smallest


def _size_dim(model: nn.Module, x: torch.Tensor, name: str):
    """``Dim.AUTO`` for same-size networks; for valid-convolution networks ``stride * k + offset``
    with the smallest ``k`` the model accepts (:func:`_valid_grid`)."""
    grid = _valid_grid(model, x.shape[-2] if name == "height" else x.shape[-1], x.shape[1])
    if grid is None:
        return torch.export.Dim.AUTO
    stride, offset, smallest = grid
    return stride * torch.export.Dim(f"{name}_steps", min=smallest // stride, max=4096) + offset


class _StaticSamePad(nn.Module):
    """A TensorFlow-"same" convolution whose padding is fixed: F.pad with constants, then conv."""

    def __init__(self, conv: nn.Conv2d, pad: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0,
                              conv.dilation, conv.groups, conv.bias is not None, device=conv.weight.device)
        self.conv.weight, self.conv.bias = conv.weight, conv.bias
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


def static_same_padding(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` whose timm ``Conv2dSame`` layers pad by constants, when that is exact.

    TF-"same" padding of a stride-``s`` convolution depends on the input size only through
    ``size % s``; unetzoo pads every input to a multiple of ``pad_multiple``, so a layer whose
    input is a multiple of its stride for every such size pads by the same amounts at every
    size. Fixed pads keep the exported graph's shape arithmetic simple (dynamic ``ceil``/``max``
    pads make ``torch.export`` take minutes). Returns ``model`` itself if nothing applies.
    """
    import copy

    from timm.layers import Conv2dSame
    from timm.layers.padding import get_same_padding

    m = getattr(model, "pad_multiple", None)
    if not m or not any(type(mod) is Conv2dSame for mod in model.modules()):
        return model
    padded = [-(-n // m) * m for n in example.shape[-2:]]
    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            sizes.setdefault(name, tuple(args[0].shape[-2:]))

        return hook

    hooks = [mod.register_forward_pre_hook(record(name)) for name, mod in model.named_modules()
             if type(mod) is Conv2dSame]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    copy_ = copy.deepcopy(model)
    for name, (ih, iw) in sizes.items():
        conv = copy_.get_submodule(name)
        ok = all(p % n == 0 and m % (p // n * s) == 0 for p, n, s in zip(padded, (ih, iw), conv.stride))
        if not ok:
            return model  # some layer's padding really varies with the size: keep the dynamic one
        ph = get_same_padding(ih, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        pw = get_same_padding(iw, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        parent, _, attr = name.rpartition(".")
        setattr(copy_.get_submodule(parent) if parent else copy_, attr,
                _StaticSamePad(conv, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))
    return copy_


def export_program(
    model: nn.Module, example: torch.Tensor | None = None, *, dynamic: bool = True, strict: bool = True
) -> torch.export.ExportedProgram:
    """``torch.export.export`` with batch, height and width symbolic (``Dim.AUTO``: dimensions
    the network constrains, e.g. unet-original's sizes, are kept as exported guards)."""
    with _exporting(model):
        x = _batch_example(model, example, dynamic)
        model = static_same_padding(model, x)
        shapes = None
        if dynamic:
            auto = torch.export.Dim.AUTO
            shapes = ({0: auto} if fixed_input_size(model) is not None  # its one size: only the batch varies
                      else {0: auto, 2: _size_dim(model, x, "height"), 3: _size_dim(model, x, "width")},)
        with torch.no_grad():
            return torch.export.export(model, (x,), dynamic_shapes=shapes, strict=strict)


def _batch_example(model: nn.Module, example: torch.Tensor | None, dynamic: bool) -> torch.Tensor:
    """The tracing input: ``example``, or :func:`export_example`. A batch of one is doubled when
    the batch is to stay symbolic: torch.export specialises a size-1 dimension to 1, and the file
    then refused every other batch."""
    x = export_example(model) if example is None else example
    return torch.cat([x, x]) if dynamic and x.shape[0] == 1 else x


@contextlib.contextmanager
def _exporting(model: nn.Module, dtype: torch.dtype | None = None) -> Iterator[None]:
    """The model in eval mode (and ``dtype``) for an export, and back as the caller had it after:
    training modes, and the dtype (float32 holds bfloat16/float16 weights exactly)."""
    original = param_dtype(model, None)
    cast = dtype is not None and original not in (None, dtype)
    with evaluating(model):
        if cast:
            model.to(dtype)
        try:
            yield
        finally:
            if cast:
                model.to(original)


class _PadToStride(nn.Module):
    """TorchScript glue: pad to the stride, run the traced network, crop back (all scripted)."""

    def __init__(self, core: torch.jit.ScriptModule, multiple: int) -> None:
        super().__init__()
        self.core = core
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        ph = (self.multiple - h % self.multiple) % self.multiple
        pw = (self.multiple - w % self.multiple) % self.multiple
        out = self.core(F.pad(x, [0, pw, 0, ph]))
        return out[:, :, :h, :w]


class _ValidSizes(nn.Module):
    """TorchScript glue for valid-convolution networks: refuse the sizes eager mode refuses (the
    trace itself would run them and return a wrong-sized, meaningless output)."""

    def __init__(self, core: torch.jit.ScriptModule, grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.core = core
        self.stride, self.offset, self.smallest = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for side in (x.shape[2], x.shape[3]):
            if side < self.smallest or side % self.stride != self.offset:
                raise ValueError("input {}x{} is not valid for this network: sides must be {} k + {}, at least {}".format(
                    x.shape[2], x.shape[3], self.stride, self.offset, self.smallest))
        return self.core(x)


TORCHSCRIPT_DEPRECATED = (
    "PyTorch deprecates TorchScript (torch.jit.trace / script / load): the file works with this "
    "torch, but for new deployments export format='exported-program' (torch.export.load) or "
    "format='onnx' instead"
)


def export_torchscript(model: nn.Module, example: torch.Tensor | None = None) -> torch.jit.ScriptModule:
    """Trace the network on a stride-aligned input and script the padding around it.

    Warns once (``FutureWarning``) that PyTorch deprecates TorchScript, naming the formats to use
    instead; torch's own per-call warnings from inside this function are not repeated.
    """
    import warnings

    warnings.warn(TORCHSCRIPT_DEPRECATED, FutureWarning, stacklevel=2)
    with _exporting(model):
        x = export_example(model) if example is None else example
        m = getattr(model, "pad_multiple", None)
        if m:  # up to the stride, not down: some backbones (inception) cannot run the smaller size
            h, w = (-(-n // m) * m for n in x.shape[-2:])
            x = torch.randn(*x.shape[:-2], h, w, dtype=x.dtype, device=x.device)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # python-int shapes: harmless here
            warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)  # said above
            core = torch.jit.trace(model, x, check_trace=False)
            if m:
                return torch.jit.script(_PadToStride(core, m))
            grid = _valid_grid(model, x.shape[-2], x.shape[1])
            return torch.jit.script(_ValidSizes(core, grid)) if grid is not None else core


@contextlib.contextmanager
def _held_logs(name: str) -> Iterator[list[logging.LogRecord]]:
    """Keep what logger ``name`` logs from reaching the console (onnxscript prints a whole
    traceback when a version conversion fails) and hand the records to the caller."""
    held: list[logging.LogRecord] = []
    logger = logging.getLogger(name)

    class _Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            held.append(record)

    handler, propagate = _Hold(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield held
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def save_onnx(program: torch.export.ExportedProgram, path: str | os.PathLike, *, opset: int | None = None) -> Path:
    """Translate an exported program (see :func:`export_program`) to ONNX and write it."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency)
    except ImportError as err:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install 'unetzoo[export]'") from err
    kwargs = {"opset_version": opset} if opset else {}
    with _held_logs("onnxscript.version_converter") as held:
        onnx_program = torch.onnx.export(
            program, dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], external_data=False, **kwargs
        )
    written = next((o.version for o in onnx_program.model_proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset and written != opset:  # the converter gave up and torch kept its own opset
        reasons = [str(r.exc_info[1]).rsplit(": ", 1)[-1] for r in held if r.exc_info and r.exc_info[1]]
        why = f" ({reasons[-1]})" if reasons else ""
        raise ValueError(f"{path}: torch's ONNX exporter could not convert this model to opset {opset}{why}; it "
                         f"stays at opset {written}: use opset {written} or newer, or leave the opset unset")
    onnx_program.save(str(path))
    return Path(path)


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    format: str = "onnx",
    example: torch.Tensor | None = None,
    dynamic: bool = True,
    opset: int | None = None,
) -> Path:
    """Write ``model`` to ``path`` in ``format`` (one of :data:`FORMATS`); returns the path.

    Args:
        example: tracing input (default :func:`export_example`).
        dynamic: keep batch, height and width symbolic (ONNX / exported program); ``False`` is an
            error for TorchScript, which has no such setting.
        opset: ONNX opset (default: the exporter's).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "torchscript" and not dynamic:
        raise ValueError("a fixed input size (dynamic=False, --static) applies to onnx and exported-program; a "
                         "TorchScript trace has no such setting: export to one of those formats for a static file")
    path = Path(path)
    if format == "exported-program" and path.suffix != ".pt2":
        raise ValueError(f"{path}: torch.export.load only reads .pt2 archives; name the file {path.with_suffix('.pt2')}")
    # written beside path and renamed: a failed write (a full disk) leaves an earlier file whole
    with _exporting(model, torch.float32), atomic_path(path, keep_suffix=True) as tmp:
        try:
            if format == "onnx":
                save_onnx(export_program(model, example, dynamic=dynamic), tmp, opset=opset)
            elif format == "exported-program":
                torch.export.save(export_program(model, example, dynamic=dynamic), str(tmp))
            else:
                export_torchscript(model, example).save(str(tmp))  # warns: TorchScript is deprecated
        except ValueError as err:  # save_onnx names the file it was given: the user's
            raise ValueError(str(err).replace(str(tmp), str(path))) from None
        except RuntimeError as err:
            if "file" not in str(err).lower():  # an export error, not a write error: as it is
                raise
            raise OSError(f"cannot write {path}: {str(err).splitlines()[0]}") from err
    return path


def onnx_max_abs_diff(path: str | os.PathLike, model: nn.Module, inputs: list[torch.Tensor]) -> float:
    """Largest ``|onnxruntime - PyTorch|`` over ``inputs`` (float32, eval mode)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        with _exporting(model, torch.float32), torch.no_grad():  # modes and dtype back as they were after
            ref = model(x.float()).float().numpy()
        out = session.run(None, {INPUT_NAME: x.float().numpy()})[0]
        if out.shape != ref.shape:
            raise AssertionError(f"onnxruntime output {out.shape} != PyTorch output {ref.shape} for input {tuple(x.shape)}")
        worst = max(worst, float(abs(out - ref).max()))
    return worst
