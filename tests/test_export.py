"""Export: ONNX (checked with onnxruntime), torch.export (strict), TorchScript, torch.compile.

Every exported graph must accept batch sizes and image sizes other than the example's, and
give the eager model's output there. Small models and inputs keep this quick on 2 CPU cores;
the whole curated registry is exported in the slow tests.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

import unetzoo
from unetzoo.export import (
    TORCHSCRIPT_DEPRECATED,
    export_example,
    export_model,
    export_program,
    load_model,
    onnx_max_abs_diff,
    save_onnx,
)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SMALL = {"unet-classic": {"base_c": 8}, "unet-resnet18": {"decoder_channels": (32, 16, 16, 8)}}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return unetzoo.create(name, num_classes=3, **SMALL.get(name, {})).eval()


def _jit_load(path: Path) -> torch.jit.ScriptModule:
    """Read a TorchScript file back without torch's deprecation warning (the test is of the file)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", FutureWarning)
        return torch.jit.load(str(path))


def _other_inputs(model: torch.nn.Module) -> list[torch.Tensor]:
    """Shapes the export never saw: another batch size, odd heights and widths."""
    x = export_example(model)
    c, h, w = x.shape[1:]
    if getattr(model, "border", 0):  # valid-convolution nets: stay on their size grid
        return [torch.randn(1, c, h, w), torch.randn(3, c, h + 16, w + 32)]
    return [torch.randn(1, c, h, w), torch.randn(3, c, h + 29, w - 3)]


@pytest.fixture(scope="module")
def resnet18_program():
    """unet-resnet18 exported once (torch.export is the slow part) for the ONNX and .pt2 tests."""
    model = _model("unet-resnet18")
    return model, export_program(model)


def test_onnx_via_export_model_matches_onnxruntime_at_new_shapes(tmp_path):
    model = _model("unet-classic")
    path = export_model(model, tmp_path / "m.onnx", format="onnx")
    assert onnx_max_abs_diff(path, model, _other_inputs(model)) <= 1e-4


def test_onnx_of_a_timm_unet_matches_onnxruntime(resnet18_program, tmp_path):
    model, program = resnet18_program
    path = save_onnx(program, tmp_path / "m.onnx")
    assert onnx_max_abs_diff(path, model, _other_inputs(model)) <= 1e-4


def test_exported_program_is_strict_dynamic_and_reloads(resnet18_program, tmp_path):
    model, program = resnet18_program
    torch.export.save(program, str(tmp_path / "m.pt2"))
    loaded = torch.export.load(str(tmp_path / "m.pt2")).module()
    for x in _other_inputs(model):
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_torchscript_pads_and_crops_any_size(tmp_path):
    model = _model("unet-resnet18")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_model(model, tmp_path / "m.ts", format="torchscript")
    # one warning of ours naming the replacements, none of torch's per-call ones
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == [TORCHSCRIPT_DEPRECATED]
    assert "exported-program" in TORCHSCRIPT_DEPRECATED and "onnx" in TORCHSCRIPT_DEPRECATED
    loaded = _jit_load(path)
    for x in _other_inputs(model):
        with torch.no_grad():
            out = loaded(x)
        assert out.shape == (x.shape[0], 3, *x.shape[-2:])
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:PyTorch deprecates TorchScript:FutureWarning")
def test_export_leaves_the_callers_model_as_it_was(tmp_path):
    """Exporting runs the model in eval mode and float32; the caller's training mode and
    bfloat16 weights are back afterwards, unchanged."""
    model = _model("unet-resnet18").train().to(torch.bfloat16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for fmt, name in (("torchscript", "m.ts"), ("exported-program", "m.pt2")):
        export_model(model, tmp_path / name, format=fmt)
        assert all(m.training for m in model.modules())
        assert all(torch.equal(v, model.state_dict()[k]) and v.dtype == model.state_dict()[k].dtype
                   for k, v in state.items())


@pytest.mark.filterwarnings("ignore:PyTorch deprecates TorchScript:FutureWarning")
def test_torchscript_traces_backbones_that_cannot_run_below_the_stride(tmp_path):
    """inception_v3 cannot run 64 px; the trace size is rounded up to the stride, not down."""
    torch.manual_seed(0)
    model = unetzoo.create("unet-inception_v3", num_classes=2, decoder_channels=(16, 16, 16, 16)).eval()
    loaded = _jit_load(export_model(model, tmp_path / "inception.ts", format="torchscript"))
    x = torch.randn(1, 3, 100, 120)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-3)


def test_compile_fullgraph_captures_without_graph_breaks():
    """fullgraph=True fails on any graph break; the eager backend skips the slow C++ codegen
    (inductor runs in the slow tests below)."""
    model = _model("unet-classic")
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    for x in _other_inputs(model)[:1]:
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_model_takes_a_second_input_size():
    """The second size makes torch.compile recompile with dynamic sizes; the padding's symbolic
    modulo broke inductor there (bilinear upsampling of a padded, unaligned input)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = unetzoo.create("unet-resnet18", num_classes=1, decoder_channels=(32, 16, 8, 8)).eval()
    compiled = torch.compile(model)
    with torch.no_grad():
        for size in [(70, 45), (64, 96)]:
            x = torch.randn(1, 3, *size)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


def test_load_model_from_a_saved_folder(tmp_path):
    model = _model("unet-classic")
    model.save_pretrained(tmp_path / "saved")
    loaded = load_model(tmp_path / "saved")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_load_model_rejects_a_weights_file_as_model(tmp_path):
    weights = tmp_path / "unet.pth"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="--checkpoint"):
        load_model(weights)


def test_unknown_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="onnx, torchscript, exported-program"):
        export_model(_model("unet-classic"), tmp_path / "m.x", format="tflite")


def test_onnx_opset_is_the_one_asked_for_or_an_error(tmp_path, capfd, caplog):
    import onnx

    model = _model("unet-classic")
    path = export_model(model, tmp_path / "m20.onnx", format="onnx", opset=20)
    assert [o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")] == [20]
    # torch cannot lower this network's padding below opset 18: the converter's reason is in the
    # one error, and its traceback is not printed on the way
    capfd.readouterr()
    with pytest.raises(ValueError, match=r"m13\.onnx: .*could not convert this model to opset 13 \(.*Pad\); "
                                         r"it stays at opset \d+"):
        export_model(model, tmp_path / "m13.onnx", format="onnx", opset=13)
    assert not (tmp_path / "m13.onnx").exists()
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.name.startswith("onnxscript.version_converter")]


def test_exported_program_needs_a_pt2_name(tmp_path):
    with pytest.raises(ValueError, match=r"m\.pt2"):
        export_model(_model("unet-classic"), tmp_path / "m.ep", format="exported-program")


def test_cli_export_torchscript(tmp_path, capsys):
    from unetzoo.cli import main

    out = tmp_path / "classic.ts"
    assert main(["export", "unet-classic", "-o", "base_c=8", "--format", "torchscript", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote {out} (torchscript)"  # a trace has no static/dynamic setting
    assert captured.err.strip() == f"note: {TORCHSCRIPT_DEPRECATED}"
    loaded = _jit_load(out)
    assert loaded(torch.randn(2, 3, 37, 41)).shape == (2, 2, 37, 41)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["unet-nosuchnet"], "unet-nosuchnet"),
        (["unet-classic", "-o", "no_such_option=1"], "no_such_option"),
        (["unet-classic", "--checkpoint", "{tmp}/missing.pth"], "missing.pth"),
        (["{tmp}/weights.png"], "weights.png"),
        (["unet-classic", "-o", "base_c=8", "--static"], "applies to onnx and exported-program"),
    ],
    ids=["unknown-model", "unknown-option", "missing-checkpoint", "not-a-model", "static-torchscript"],
)
def test_cli_export_errors_are_one_line_not_a_traceback(tmp_path, capsys, args, needle):
    from unetzoo.cli import main

    (tmp_path / "weights.png").write_bytes(b"not a model")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["export", *args, "--format", "torchscript", "--out", str(tmp_path / "m.ts")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("unetzoo export: error:") and needle in err and "Traceback" not in err
    assert not (tmp_path / "m.ts").exists()


CURATED = unetzoo.list_models(curated_only=True)
SUFFIX = {"onnx": ".onnx", "torchscript": ".ts", "exported-program": ".pt2"}
#: the front-door models and the offline-pretrained one: every format, checked at new shapes
FEW = ["unet-vgg16", "unet-resnet50", "unet-efficientnet_lite0"]


def _check_export(name: str, fmt: str, tmp_path) -> None:
    model = _model(name)
    with warnings.catch_warnings():  # TorchScript's deprecation note has its own test above
        warnings.filterwarnings("ignore", re.escape(TORCHSCRIPT_DEPRECATED), FutureWarning)
        path = export_model(model, tmp_path / ("m" + SUFFIX[fmt]), format=fmt)
    inputs = _other_inputs(model)
    if fmt == "onnx":
        assert onnx_max_abs_diff(path, model, inputs) <= 1e-4
        return
    loaded = _jit_load(path) if fmt == "torchscript" else torch.export.load(str(path)).module()
    for x in inputs:
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", CURATED)
def test_every_curated_model_exports_strict(name):
    """torch.export (strict) captures the whole curated registry. Dynamic batch/height/width
    are checked at new shapes for FEW below (the ONNX path exports with dynamic shapes)."""
    model = _model(name)
    x = export_example(model)
    program = export_program(model, x, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", FEW)
def test_curated_models_export_to_onnx_and_torchscript(name, fmt, tmp_path):
    _check_export(name, fmt, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", CURATED)
def test_every_curated_model_compiles_fullgraph(name):
    """Dynamo captures each curated model as one graph (fullgraph=True fails on any graph break).

    The "eager" backend runs the captured graph without Inductor's code generation, which is
    torch's part and takes ~30 s a model here; Inductor itself is exercised below and in
    test_fast / test_inputs."""
    torch._dynamo.reset()  # every model recompiles the same forward code: stay below dynamo's recompile limit
    model = _model(name)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = export_example(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_curated_model_compiles_with_inductor():
    torch._dynamo.reset()
    model = _model("unet-efficientnet_lite0")
    compiled = torch.compile(model, fullgraph=True)
    x = export_example(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_batch_of_one_example_keeps_the_batch_dynamic(tmp_path):
    """torch.export specialises a size-1 dimension: the file took batch 1 only."""
    model = _model("unet-classic")
    path = export_model(model, tmp_path / "m.onnx", example=torch.randn(1, 3, 64, 64))
    assert onnx_max_abs_diff(path, model, [torch.randn(3, 3, 48, 80)]) <= 1e-4


@pytest.mark.filterwarnings("ignore:PyTorch deprecates TorchScript:FutureWarning")
def test_a_fixed_size_backbone_exports_with_only_the_batch_dynamic(tmp_path):
    """A ViT takes its one size: the example is that size (it was enlarged by a few pixels and
    every format failed) and only the batch stays symbolic."""
    torch.manual_seed(0)
    model = unetzoo.create("unet-vit_tiny_patch16_224", num_classes=2).eval()
    assert tuple(export_example(model).shape[-2:]) == (224, 224)
    x = [torch.randn(1, 3, 224, 224), torch.randn(3, 3, 224, 224)]
    assert onnx_max_abs_diff(export_model(model, tmp_path / "m.onnx"), model, x) <= 1e-4
    loaded = _jit_load(export_model(model, tmp_path / "m.ts", format="torchscript"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x[1]), model(x[1]), rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:PyTorch deprecates TorchScript:FutureWarning")
def test_torchscript_of_a_valid_convolution_network_refuses_the_sizes_eager_refuses(tmp_path):
    """The trace ran 196 px and returned a 4x4 output where eager mode raises."""
    torch.manual_seed(0)
    model = unetzoo.create("unet-original").eval()
    loaded = _jit_load(export_model(model, tmp_path / "m.ts", format="torchscript"))
    x = torch.randn(1, 1, 204, 220)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-4)
    for h, w in ((196, 204), (204, 190)):
        with pytest.raises(ValueError):
            model(torch.randn(1, 1, h, w))
        with pytest.raises(Exception, match=rf"input {h}x{w} is not valid for this network: sides must be 16 k \+ 12, "
                                            r"at least 188"):
            loaded(torch.randn(1, 1, h, w))


def test_cli_export_static_takes_the_size_asked_and_says_it(tmp_path, capsys):
    from unetzoo.cli import main

    out = tmp_path / "s.onnx"
    assert main(["export", "unet-classic", "-o", "base_c=4", "--format", "onnx", "--static", "--batch", "1",
                 "--size", "48", "64", "--out", str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "static input 1x3x48x64" in printed and "max abs diff" in printed
    import onnx

    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 48, 64]


def test_cli_export_check_of_a_bfloat16_model(tmp_path, capsys):
    """The check ran a float32 input through the bfloat16 weights (after the export had put them back)."""
    from unetzoo.cli import main

    unetzoo.create("unet-classic", base_c=4).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert main(["export", str(tmp_path / "bf16"), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                 "--check"]) == 0
    assert "onnxruntime vs PyTorch: max abs diff" in capsys.readouterr().out
    assert unetzoo.from_pretrained(tmp_path / "bf16").head.weight.dtype == torch.bfloat16


def test_onnx_check_leaves_the_models_modes_as_they_were(tmp_path):
    model = _model("unet-classic").train()
    norm = model.get_submodule("encoder.0.block.conv1.1")
    norm.eval()  # a norm frozen by hand
    path = export_model(model, tmp_path / "m.onnx")
    onnx_max_abs_diff(path, model, [torch.randn(1, 3, 32, 32)])
    assert model.training and not norm.training


def test_a_failed_export_leaves_an_earlier_file_whole(tmp_path, monkeypatch):
    """The file was written in place: a full disk left a truncated ONNX/TorchScript file where a
    good one had been."""
    import unetzoo.export as export

    model = _model("unet-classic")
    path = export_model(model, tmp_path / "m.onnx")
    good = path.read_bytes()

    def fails_half_way(program, target, *, opset=None):
        Path(target).write_bytes(good[: len(good) // 3])
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(export, "save_onnx", fails_half_way)
    with pytest.raises(OSError, match="No space left on device") as err:
        export_model(model, path)
    assert err.value.filename == str(path)  # the user's file, not the temporary one
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(IsADirectoryError, match="folder.onnx is a folder"):
        export_model(model, tmp_path / "folder.onnx")
