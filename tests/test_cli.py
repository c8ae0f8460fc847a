"""Every command's --help renders (argparse formats help strings lazily, so a stray % breaks it)."""

from __future__ import annotations

import pytest

from unetzoo.cli import _command_modules, main

COMMANDS = [name.removesuffix("_cmd") for name in _command_modules()]


def test_commands_are_discovered():
    assert {"train", "eval", "demo", "bench", "export", "predict", "convert", "push", "pull"} <= set(COMMANDS)


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in COMMANDS], ids=lambda a: " ".join(a))
def test_help_renders(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: unetzoo")
    if argv == ["--help"]:
        assert all(c in out for c in COMMANDS)


def test_a_closed_pipe_ends_the_command_quietly(tmp_path, monkeypatch):
    """``unetzoo list | head -1``: once the reader is gone, writing fails with BrokenPipeError;
    the command stops with the shell's SIGPIPE status instead of a traceback, and stdout is
    pointed at /dev/null so the interpreter's last flush does not fail again."""
    import os
    import sys

    sink = open(tmp_path / "stdout", "w")  # a real descriptor for the handler to redirect

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return sink.fileno()

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    try:
        assert main(["list", "--curated"]) == 141
        os.write(sink.fileno(), b"after")  # now /dev/null
    finally:
        sink.close()
    assert (tmp_path / "stdout").read_bytes() == b""


def test_an_unknown_option_is_reported_by_its_command(capsys):
    """The command's own usage line comes with the error; train and demo point at KEY=VALUE."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: unetzoo train") and "unrecognized arguments: --no-progress" in err
    assert "KEY=VALUE overrides" in err
    with pytest.raises(SystemExit):
        main(["predict", "x.png", "--tilesize", "3"])
    err = capsys.readouterr().err
    assert err.startswith("usage: unetzoo predict") and "KEY=VALUE" not in err


def test_export_names_a_missing_folder_and_keeps_a_saved_head(tmp_path, capsys):
    import unetzoo

    assert main(["export", str(tmp_path / "nope"), "--format", "onnx"]) != 0
    assert f"there is no folder {tmp_path / 'nope'}" in capsys.readouterr().err
    unetzoo.create("unet-classic", base_c=4).save_pretrained(tmp_path / "saved")
    assert main(["export", str(tmp_path / "saved"), "--format", "onnx", "--num-classes", "5"]) != 0
    assert "--num-classes" in capsys.readouterr().err and not list(tmp_path.glob("*.onnx"))


def test_shortening_a_run_names_the_freeze_epochs_fix():
    from unetzoo.train import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"freeze_epochs=2 must be between 0 and epochs=1; lower it "
                                          r"\(freeze_epochs=0\)"):
        load_config(None, ["epochs=1", "freeze_epochs=2"])


def test_eval_help_says_tta_averages_probabilities(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "average the class probabilities over flips" in out and "logits" not in out


@pytest.mark.parametrize("command,flags,canonical", [
    ("eval", ["--precision", "--dtype"], {"bf16": "bf16", "bfloat16": "bf16", "float16": "fp16", "FP32": "fp32"}),
    ("predict", ["--dtype", "--precision"], {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16"}),
])
def test_eval_and_predict_take_either_dtype_flag_and_spelling(command, flags, canonical):
    from unetzoo.cli import build_parser

    parser = build_parser()
    positional = {"eval": ["saved", "--data", "d"], "predict": ["saved", "x.png", "-o", "out"]}[command]
    for flag in flags:
        for text, expected in canonical.items():
            args = parser.parse_args([command, *positional, flag, text])
            assert (args.precision if command == "eval" else args.dtype) == expected, (flag, text)


@pytest.mark.parametrize("argv,needle", [
    (["--dtype", "half"], "unknown dtype 'half'; choose fp32, bf16 or fp16"),
    (["--tile", "0"], "argument --tile: must be a positive integer, got 0"),
    (["--batch-size", "-1"], "argument --batch-size: must be a positive integer, got -1"),
    (["--holdout", "1"], "argument --holdout: must be between 0 and 1"),
    (["--holdout", "twenty"], "argument --holdout: expected a fraction between 0 and 1, got 'twenty'"),
])
def test_eval_refuses_bad_values_before_loading_anything(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "no-such-model", "--data", "no-such-data", *argv])
    assert exit_info.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--repeats", "0"], "argument --repeats: must be a positive integer, got 0"),
    (["--batch-size", "0"], "argument --batch/--batch-size: must be a positive integer, got 0"),
    (["--train-size", "-8"], "argument --train-size: must be a positive integer, got -8"),
])
def test_bench_refuses_bad_numbers_before_any_work(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "unet-classic", *argv])
    assert exit_info.value.code == 2 and needle in capsys.readouterr().err


def test_bench_refuses_an_unknown_device_in_one_line(capsys, monkeypatch):
    import unetzoo.bench.run as bench_run

    monkeypatch.setattr(bench_run, "run_benchmark", lambda *a, **k: pytest.fail("benchmark started"))
    assert main(["bench", "unet-classic", "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unetzoo bench: error: --device:") and "use auto, cpu, cuda or cuda:N" in err
