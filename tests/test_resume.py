"""A run killed with SIGKILL and resumed ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from train_utils import REPO, make_blobs, tiny_config

from unetzoo.train import fit
from unetzoo.train.checkpoint import STATE_NAME, load_state

EPOCHS, KILL_AFTER = 6, 2  # kill once epoch 2's checkpoint is committed, with 4 epochs still to go


def _train(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "unetzoo", "train", "--config", str(config), *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _committed_epoch(state: Path) -> int:
    try:
        return load_state(state)["epoch"] + 1
    except (FileNotFoundError, ValueError):
        return 0


def _kill_after_epoch(proc: subprocess.Popen, state: Path, epoch: int, timeout: float = 150) -> int:
    """SIGKILL ``proc`` as soon as ``state`` records ``epoch`` finished epochs; return what it records
    (0 if the process ended or stalled first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and _committed_epoch(state) >= epoch:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return _committed_epoch(state)
        time.sleep(0.005)
    if proc.poll() is None:
        proc.kill()
    print(proc.communicate()[0])
    return 0


def test_killed_run_resumes_to_identical_weights(tmp_path: Path) -> None:
    data = make_blobs(tmp_path / "data", n=16)
    configs = {}
    for name in ("straight", "killed"):
        cfg = tiny_config(data, tmp_path / name, epochs=EPOCHS, freeze_epochs=1, deterministic=True,
                          batch_size=2, overlays=2)
        cfg["data"]["transforms"].update(scale=[0.8, 1.25], rotation=10.0)  # augmentation draws random numbers
        configs[name] = cfg
    config_file = tmp_path / "killed.yaml"
    config_file.write_text(yaml.safe_dump(configs["killed"]))

    # the run to kill is a real process; the uninterrupted one runs here meanwhile
    killed = _train(config_file)
    committed: list[int] = []
    watcher = threading.Thread(
        target=lambda: committed.append(_kill_after_epoch(killed, tmp_path / "killed" / STATE_NAME, KILL_AFTER))
    )
    watcher.start()
    try:
        straight = fit(configs["straight"])
    finally:
        watcher.join()
    assert committed and KILL_AFTER <= committed[0] < EPOCHS, f"the kill must interrupt the run mid-way: {committed}"
    assert killed.returncode == -signal.SIGKILL

    resumed = fit(configs["killed"], ["resume=true"])
    assert len(resumed.history) == EPOCHS and resumed.history[committed[0]]["epoch"] == committed[0] + 1

    a = load_file(straight.last_dir / "model.safetensors")
    b = load_file(resumed.last_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = ("train_time_s", "imgs_per_s")
    rows = [[{k: v for k, v in r.items() if k not in strip} for r in load_state(run.state_path)["history"]]
            for run in (straight, resumed)]
    assert rows[0] == rows[1]
