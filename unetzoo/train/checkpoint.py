"""Checkpoints that survive a crash: atomic writes, model folders and the training state.

A run directory holds ``best/`` and ``last/`` (each a :meth:`save_pretrained` folder, loadable
with :func:`unetzoo.from_pretrained`) and ``train_state.pt``: the model, optimizer, scheduler
and grad-scaler states, the epoch, the RNG states of torch, numpy and Python, the best metric
and the metric history. The state file is written last and is the commit point of an epoch:
``--resume`` restarts from the epoch after the one it records.

A new best model is staged (``.best.staged/``, with the epoch it is from) before the commit
point and moved into ``best/`` after it, so that ``best/`` always holds the model the committed
state calls best: a run killed in between has the staged model promoted on ``--resume`` if the
state committed its epoch, and discarded if not (:func:`finish_best`).

Everything in the state file is a tensor, number, string, list or dict, so it loads with
``torch.load(weights_only=True)``: resuming never unpickles arbitrary objects.
"""

from __future__ import annotations

import fnmatch
import os
import random
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetzoo._atomic import atomic_path, link_or_copy, replace_dir
from unetzoo.train.config import ConfigError

__all__ = [
    "STATE_NAME",
    "atomic_save",
    "finish_best",
    "promote_best",
    "get_rng_state",
    "load_state",
    "save_model_dir",
    "seed_everything",
    "set_aside_run",
    "set_rng_state",
    "stage_best",
]

STATE_NAME = "train_state.pt"
STATE_VERSION = 1
BEST_NAME, STAGED_NAME, STAGED_EPOCH = "best", ".best.staged", "staged_epoch.txt"
PREVIOUS_NAME = "previous_run"


def _written_by_a_run(name: str, own: Iterable[str]) -> bool:
    """``name`` is one of ``own``, or the hidden ``.NAME.old`` / ``.NAME.tmp`` / ``.NAME.*.tmp`` of
    an atomic write of one."""
    return any(name == n or fnmatch.fnmatchcase(name, f".{n}.*") for n in own)


def set_aside_run(run_dir: str | os.PathLike, own: Iterable[str]) -> Path | None:
    """Move an earlier run in ``run_dir`` (one with a ``train_state.pt``) into
    ``run_dir/previous_run``, before a fresh run writes anything there; returns that folder, or
    ``None`` if there was no run.

    Only what a run writes is moved (``own``: :data:`unetzoo.train.result.RUN_FILES`); anything
    else in the folder stays where it is. The training state moves first, so a fresh run killed
    early leaves nothing that ``--resume`` would take for its own. A run set aside before is
    replaced.
    """
    run_dir = Path(run_dir)
    if not (run_dir / STATE_NAME).exists():
        return None
    previous = run_dir / PREVIOUS_NAME
    if previous.exists() and not (previous / STATE_NAME).exists():
        raise FileExistsError(f"{previous} exists but holds no earlier run; move it, or train into another folder")
    moving = run_dir / f".{PREVIOUS_NAME}.new"
    shutil.rmtree(moving, ignore_errors=True)
    moving.mkdir()
    (run_dir / STATE_NAME).rename(moving / STATE_NAME)
    for entry in list(run_dir.iterdir()):
        if _written_by_a_run(entry.name, own):
            entry.rename(moving / entry.name)
    shutil.rmtree(previous, ignore_errors=True)
    moving.rename(previous)
    return previous


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then renamed over ``path``.

    A reader (or a run resumed after the process was killed) sees the old file or the new one,
    never a partial one.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return path


def save_model_dir(model: torch.nn.Module, folder: str | os.PathLike, **card: Any) -> Path:
    """``model.save_pretrained`` into a temporary folder, then swapped in place of ``folder``.

    A crash leaves a complete ``folder`` or a complete ``.<name>.old`` next to it, which the
    next save puts back first (see :func:`unetzoo._atomic.replace_dir`). ``card`` goes to
    :func:`unetzoo.hub.save_pretrained` (e.g. ``metrics=``).
    """
    return replace_dir(folder, lambda tmp: model.save_pretrained(tmp, **card))


# ---------------------------------------------------------------------------- best/, in two phases
def stage_best(model: torch.nn.Module, run_dir: str | os.PathLike, epoch: int, **card: Any) -> Path:
    """Save ``model`` (the best so far, after ``epoch``, counted from 1) to ``run_dir/.best.staged``."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, **card)
        # inside the folder, so both appear in one rename
        (tmp / STAGED_EPOCH).write_text(f"{epoch}\n", encoding="utf-8")

    return replace_dir(Path(run_dir) / STAGED_NAME, write)


def promote_best(run_dir: str | os.PathLike) -> Path:
    """Swap the staged model in as ``run_dir/best`` (once the state that names it is committed).

    The staged folder is linked (or copied) into the new ``best/`` and removed only afterwards, so
    a crash at any point leaves it to be promoted again.
    """
    run_dir = Path(run_dir)
    staged = run_dir / STAGED_NAME

    def write(tmp: Path) -> None:
        tmp.mkdir()
        for f in staged.iterdir():
            if f.name != STAGED_EPOCH:
                link_or_copy(f, tmp / f.name)

    best = replace_dir(run_dir / BEST_NAME, write)
    shutil.rmtree(staged)
    return best


def finish_best(run_dir: str | os.PathLike, best_epoch: int) -> str | None:
    """On resume: promote a staged best model the committed state names (its ``best_epoch``), or
    discard one from an epoch it never committed. Returns what was done, or ``None``."""
    staged = Path(run_dir) / STAGED_NAME
    if not staged.exists():
        return None
    try:
        epoch = int((staged / STAGED_EPOCH).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        epoch = None
    if epoch is not None and epoch == best_epoch:
        promote_best(run_dir)
        return f"promoted the best model of epoch {epoch}, staged before the run stopped, to best/"
    shutil.rmtree(staged)
    return f"discarded a best model staged after epoch {epoch}, which the run did not commit"


# ---------------------------------------------------------------------------- RNG states


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def get_rng_state() -> dict[str, Any]:
    """The RNG states of torch (CPU and CUDA), numpy and Python as tensors and numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU the saving process saw; a resume may see fewer (CUDA_VISIBLE_DEVICES, another machine)
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


# ---------------------------------------------------------------------------- training state


def state_dict(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    epoch: int,
    best: float | None,
    history: list[dict[str, Any]],
    config: Mapping[str, Any],
    ema: Any = None,
    rng_ranks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The training state after ``epoch`` (0-based) has finished; ``rng_ranks``: the random
    generators of every process of a distributed run, by rank (this process's alone otherwise)."""
    return {
        "version": STATE_VERSION,
        "epoch": int(epoch),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": get_rng_state(),
        "rng_ranks": rng_ranks if rng_ranks is not None and len(rng_ranks) > 1 else None,
        "best": best,
        "history": history,
        "config": dict(config),
        "ema": ema.state_dict() if ema is not None else None,
    }


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training state with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: no state file (nothing to resume).
        ValueError: the file is corrupt or from an incompatible version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no training state at {path}; --resume needs a run that finished at least one epoch "
            "(or drop --resume to start afresh)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several kinds for a corrupt file
        raise ConfigError(f"cannot read the training state {path}: {err}; start a new run without --resume "
                          "(the earlier run's files are then set aside in previous_run/)") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ConfigError(f"{path} is not a unetzoo training state of version {STATE_VERSION}")
    return state
