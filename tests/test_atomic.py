"""Atomic files and folders: permissions, failures part-way, and a swap killed between its renames."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

import unetzoo
from unetzoo._atomic import atomic_path, replace_dir
from unetzoo.train.checkpoint import save_model_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_files_get_the_umask_permissions_not_mkstemps(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"x")
        (tmp_path / "plain.bin").write_bytes(b"x")  # what open() gives
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.bin") == _mode(tmp_path / "plain.bin") == 0o666 & ~umask


def test_saved_model_files_are_all_readable_as_plain_files_are(tmp_path: Path) -> None:
    """safetensors' save_file makes its file 0o600 (it writes a new file and renames it): the
    weights of a folder shared with a group, or read by a service running as another user, were
    the one file they could not read."""
    old = os.umask(0o022)
    try:
        folder = unetzoo.create("unet-classic", base_c=4).save_pretrained(tmp_path / "saved")
    finally:
        os.umask(old)
    modes = {p.name: _mode(p) for p in folder.iterdir()}
    assert modes == {"model.safetensors": 0o644, "config.json": 0o644, "README.md": 0o644}


def test_replace_dir_puts_a_stranded_old_folder_back(tmp_path: Path) -> None:
    """A save killed between 'folder -> .folder.old' and '.folder.tmp -> folder' loses nothing."""
    stranded = tmp_path / ".best.old"
    stranded.mkdir()
    (stranded / "model.safetensors").write_text("the last complete save")

    def crash(folder: Path) -> None:
        folder.mkdir()
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_dir(tmp_path / "best", crash)
    assert (tmp_path / "best" / "model.safetensors").read_text() == "the last complete save"
    replace_dir(tmp_path / "best", lambda folder: (folder.mkdir(), (folder / "new").write_text("1")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["new"]


def test_save_model_dir_swaps_whole_folders(tmp_path: Path) -> None:
    model = unetzoo.create("unet-classic", base_c=4)
    save_model_dir(model, tmp_path / "last")
    first = (tmp_path / "last" / "model.safetensors").read_bytes()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    save_model_dir(model, tmp_path / "last")
    assert (tmp_path / "last" / "model.safetensors").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_save_pretrained_failing_part_way_keeps_the_previous_files(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    model = unetzoo.create("unet-classic", base_c=4)
    model.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def torn(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("no space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", torn)
    with pytest.raises(OSError, match="no space left"):
        unetzoo.create("unet-classic", base_c=4, num_classes=3).save_pretrained(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no torn or temporary files
    unetzoo.from_pretrained(tmp_path)


def test_a_save_killed_between_its_renames_leaves_no_model_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Over an earlier model, a save killed after its weights were renamed into place (the
    config not yet) leaves no config.json, so the folder is refused, never loaded as the old
    config over the new weights."""
    from unetzoo import _atomic

    unetzoo.create("unet-classic", base_c=4).save_pretrained(tmp_path)
    real = os.replace

    def killed_at_config(src, dst):
        if Path(dst).name == "config.json":
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(_atomic.os, "replace", killed_at_config)
    with pytest.raises(KeyboardInterrupt):
        unetzoo.create("unet-classic", base_c=4, num_classes=3).save_pretrained(tmp_path)
    monkeypatch.setattr(_atomic.os, "replace", real)
    assert not (tmp_path / "config.json").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        unetzoo.from_pretrained(tmp_path)


def test_a_save_failing_after_its_weights_keeps_the_whole_earlier_model(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The weights are written first; a failure while writing the card or config after them
    must not leave the new weights beside the old config (a silently different model)."""
    model = unetzoo.create("unet-classic", base_c=4)
    model.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = Path.write_text

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        unetzoo.create("unet-classic", base_c=4, num_classes=3).save_pretrained(tmp_path)
    monkeypatch.setattr(Path, "write_text", real)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert unetzoo.from_pretrained(tmp_path).num_classes == model.num_classes


def test_atomic_writes_do_not_need_fchmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.fchmod is missing on Windows before Python 3.13; every atomic write went through it."""
    monkeypatch.delattr(os, "fchmod", raising=False)
    with atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.bin").read_bytes() == b"x" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
