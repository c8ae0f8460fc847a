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
