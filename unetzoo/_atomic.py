"""Atomic writes (standard library only): a file or a folder is replaced whole, or not at all.

A reader, or a run resumed after the process was killed, finds either the old content or the
new one, never a torn file. Used by every writer in unetzoo: images, checkpoints, downloads,
``save_pretrained`` folders.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = ["atomic_path", "atomic_paths", "link_or_copy", "replace_dir"]


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step.

    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` less the
    umask), not ``mkstemp``'s private ``0o600``. On an exception the temporary file is removed
    and ``path`` is left as it was. ``keep_suffix``: the temporary name ends in ``path``'s
    suffix too, for writers that choose the format by it (``.pt2``, ``.onnx``).

    Example:
        >>> with atomic_path("out/model.bin") as tmp:
        ...     tmp.write_bytes(data)
    """
    with atomic_paths([path], keep_suffix=keep_suffix) as (tmp,):
        yield tmp


def _temporary_beside(path: Path, keep_suffix: bool = False) -> Path:
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name")
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {path.parent} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        raise type(err)(err.errno, err.strerror, str(path)) from None
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike], *, keep_suffix: bool = False) -> Iterator[list[Path]]:
    """:func:`atomic_path` for a set of files that belong together (weights and their config).

    Every temporary file is written in full before any of ``paths`` is touched, so a failure
    while writing (a full disk, a value that cannot be encoded) leaves all of them as they were.
    Then the last path, the one whose presence marks the set complete, is removed first and
    replaced last: a process killed between the renames leaves an incomplete set that does not
    pass for a whole one, never old and new files that look like one. A single path is
    replaced in one step, never removed.
    """
    paths = [Path(p) for p in paths]
    tmps: list[Path] = []
    try:
        mode = 0o666 & ~_umask()
        for path in paths:
            tmps.append(_temporary_beside(path, keep_suffix))
        yield list(tmps)
        for tmp in tmps:  # after writing: a writer may have replaced the file (safetensors' save_file makes 0o600)
            os.chmod(tmp, mode)  # os.fchmod is POSIX-only before Python 3.13
        if len(paths) > 1:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths[-1])
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    except BaseException as err:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        named = {str(t): p for t, p in zip(tmps, paths)}
        if isinstance(err, OSError) and str(err.filename) in named:  # name the user's file, not the temporary one
            path = named[str(err.filename)]
            raise type(err)(err.errno, err.strerror, str(path)) from None
        raise


def replace_dir(folder: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_folder)``, then swap the finished folder in place of ``folder``.

    The old folder is renamed to ``.<name>.old`` before the new one takes its name, so a crash
    leaves a complete ``folder`` or a complete ``.<name>.old`` beside it; the next call puts such
    a stranded ``.old`` back before it starts, so the last complete version is never deleted.
    """
    folder = Path(folder)
    tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    if old.exists() and not folder.exists():  # killed between the two renames of an earlier call
        os.replace(old, folder)
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    write(tmp)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link of ``src`` at ``dst`` (no copy of the weights), or a copy where the
    filesystem cannot link."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
