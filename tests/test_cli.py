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
