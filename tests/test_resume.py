"""A run killed with SIGKILL and resumed ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
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


def _expected_lrs(base_lr: float, steps_per_epoch: int, epochs: int) -> list[float]:
    """The lr each epoch's last step trains with in an uninterrupted run, from a fresh scheduler
    stepped by hand (what the run records as the epoch's lr)."""
    from unetzoo.train.config import ScheduleSection
    from unetzoo.train.schedule import build_scheduler

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    sched = build_scheduler(opt, ScheduleSection("cosine", warmup_epochs=1), steps_per_epoch=steps_per_epoch,
                            epochs=epochs)
    out = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            used = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
        out.append(used)
    return out


def test_resume_with_another_batch_size_continues_the_schedule_in_its_steps(tmp_path: Path) -> None:
    """12 images, 9 for training: 4 steps per epoch at batch 2, then 3 at batch 3 after resuming."""
    data = make_blobs(tmp_path / "data", n=12)
    cfg = tiny_config(data, tmp_path / "run", epochs=2, batch_size=2)
    fit(cfg)
    resumed = fit({**cfg, "epochs": 4, "batch_size": 3, "resume": True})
    want = _expected_lrs(0.01, steps_per_epoch=3, epochs=4)
    assert [r["lr"] for r in resumed.history[2:]] == pytest.approx(want[2:], rel=1e-9)
    assert load_state(resumed.state_path)["scheduler"]["last_epoch"] == 4 * 3


def test_resume_says_that_new_optimizer_settings_are_not_applied(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_blobs(tmp_path / "data", n=12)  # 9 training images at batch 3: 3 steps per epoch
    cfg = tiny_config(data, tmp_path / "run", epochs=1)
    fit(cfg)
    capsys.readouterr()
    resumed = fit({**cfg, "epochs": 3, "optimizer": {**cfg["optimizer"], "lr": 0.5}, "resume": True})
    assert "note: optimizer.lr not applied: the optimizer continues with the saved run's settings" in capsys.readouterr().out
    assert resumed.history[1]["lr"] == pytest.approx(_expected_lrs(0.01, steps_per_epoch=3, epochs=3)[1], rel=1e-9)
    # the run records the settings it trains with, so a later resume compares against those
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["optimizer"]["lr"] == 0.01
    assert load_state(resumed.state_path)["config"]["optimizer"]["lr"] == 0.01


def test_resume_with_another_optimizer_continues_with_the_saved_one(tmp_path: Path, capsys) -> None:
    """adam -> sgd: the saved Adam state went into an SGD optimizer (KeyError 'momentum')."""
    data = make_blobs(tmp_path / "data", n=12)
    cfg = tiny_config(data, tmp_path / "run", epochs=1)
    fit(cfg)
    capsys.readouterr()
    resumed = fit({**cfg, "epochs": 2, "optimizer": {"name": "sgd", "lr": 0.1}, "resume": True})
    assert "note: optimizer.lr, optimizer.name not applied" in capsys.readouterr().out
    assert len(resumed.history) == 2
    state = load_state(resumed.state_path)
    assert state["config"]["optimizer"]["name"] == "adam"
    assert all("exp_avg" in s for s in state["optimizer"]["state"].values())  # Adam's moments, carried on


def test_a_resumed_run_records_a_config_that_starts_afresh(tmp_path: Path, capsys, monkeypatch) -> None:
    """config.yaml said resume: true after a resume, so `train -c run/config.yaml -o new` failed
    (no state there) and `-o run` silently resumed instead of starting afresh."""
    data = make_blobs(tmp_path / "data", n=12)
    cfg = tiny_config(data, tmp_path / "run", epochs=1)
    fit(cfg)
    monkeypatch.chdir(tmp_path)  # the same folder, relative: no note that output_dir changed
    resumed = fit({**cfg, "epochs": 2, "output_dir": "run", "resume": True})
    notes = [line for line in capsys.readouterr().out.splitlines() if "differs" in line]
    assert notes == ["note: the config differs from the saved run's in epochs"]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["resume"] is False
    assert load_state(resumed.state_path)["config"]["resume"] is False
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    fresh = fit({**saved, "output_dir": str(tmp_path / "copy")})
    assert len(fresh.history) == 2 and fresh.history[0]["epoch"] == 1


def test_resuming_a_finished_run_says_so_and_fewer_epochs_are_refused(tmp_path: Path, capsys) -> None:
    from unetzoo.train.config import ConfigError

    data = make_blobs(tmp_path / "data", n=12)
    cfg = tiny_config(data, tmp_path / "run", epochs=2)
    fit(cfg)
    config_before = (tmp_path / "run" / "config.yaml").read_text()
    capsys.readouterr()
    again = fit({**cfg, "resume": True})
    assert "has already trained all 2 epochs; nothing to do (resume with epochs=3 or more" in capsys.readouterr().out
    assert len(again.history) == 2 and (tmp_path / "run" / "config.yaml").read_text() == config_before
    with pytest.raises(ConfigError, match=r"epochs=1: it has already trained 2 epochs; resume with epochs=3"):
        fit({**cfg, "epochs": 1, "resume": True})


def test_a_failed_config_write_keeps_the_runs_config_and_says_so(tmp_path: Path, capsys, monkeypatch) -> None:
    """config.yaml was written in place: a full disk left a third of it, and the next --resume
    failed with a misleading config error."""
    from unetzoo.cli import main

    data = make_blobs(tmp_path / "data", n=12)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, tmp_path / "run", epochs=1)))
    assert main(["train", "--config", str(config)]) == 0
    saved = (tmp_path / "run" / "config.yaml").read_text()
    real = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        if self.name.startswith(".config.yaml."):
            real(self, text[: len(text) // 3], *args, **kwargs)
            raise OSError(28, "No space left on device", str(self))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    capsys.readouterr()
    assert main(["train", "-o", str(tmp_path / "run"), "--resume", "epochs=2"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "continue with --resume" in err and "Traceback" not in err
    assert (tmp_path / "run" / "config.yaml").read_text() == saved
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert main(["train", "-o", str(tmp_path / "run"), "--resume", "epochs=2"]) == 0


def test_a_fresh_run_sets_the_earlier_one_aside_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Starting afresh over a finished run moves its files to previous_run/ at once: a fresh run
    killed before its first epoch leaves no state that --resume would take for its own, and the
    earlier run's best model is kept. Files the run did not write (the user's notes, the data
    itself) stay where they are, however many runs follow."""
    from unetzoo.train import ConfigError, TrainConfig, Trainer

    run = tmp_path / "run"
    data = make_blobs(run / "data", n=12)  # inside the output folder
    (run / "notes.txt").write_text("mine")
    cfg = tiny_config(data, run, epochs=1)
    first = fit(cfg)
    best = (first.best_dir / "model.safetensors").read_bytes()
    capsys.readouterr()
    trainer = Trainer(TrainConfig.from_dict({**cfg, "epochs": 2}))  # set up, then "killed" before an epoch
    trainer.close()
    assert "moved it to" in capsys.readouterr().out
    assert not (run / STATE_NAME).exists() and (run / "previous_run" / STATE_NAME).exists()
    assert (run / "previous_run" / "best" / "model.safetensors").read_bytes() == best
    assert sorted(p.name for p in (run / "previous_run").iterdir()) == sorted(
        ["train_state.pt", "config.yaml", "best", "last", "metrics.jsonl", "metrics.csv", "curves.png", "overlays.png"])
    with pytest.raises(FileNotFoundError, match="no training state"):
        fit({**cfg, "epochs": 2, "resume": True})
    fit(cfg)  # a full fresh run: the set-aside run stays, and this one is set aside next time
    assert (run / STATE_NAME).exists() and (run / "previous_run" / "best" / "model.safetensors").read_bytes() == best
    fit(cfg)  # sets the second run aside, replacing the first
    assert (run / "previous_run" / STATE_NAME).exists() and (run / STATE_NAME).exists()
    assert (run / "notes.txt").read_text() == "mine" and len(list((run / "data" / "images").iterdir())) == 12
    # a previous_run/ that is not a set-aside run is never deleted
    for entry in (run / "previous_run").iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (run / "previous_run" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="holds no earlier run"):
        fit(cfg)
    assert (run / "previous_run" / "keep.txt").exists() and (run / STATE_NAME).exists()


def test_resume_with_another_monitor_starts_its_best_afresh(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_blobs(tmp_path / "data", n=12)
    cfg = tiny_config(data, tmp_path / "run", epochs=2, monitor="pixel_accuracy")
    fit(cfg)
    resumed = fit({**cfg, "epochs": 3, "monitor": "fg_iou", "resume": True})
    assert "monitor changed from 'pixel_accuracy' to 'fg_iou'" in capsys.readouterr().out
    last = resumed.history[-1]
    # the old best was a pixel accuracy (near 1); an fg_iou must not have to beat it
    assert last.get("best") is True and resumed.best_epoch == 3
    assert [r["epoch"] for r in resumed.history if r.get("best")] == [3]
    assert load_state(resumed.state_path)["best"] == pytest.approx(last["fg_iou"])


def _draws() -> tuple:
    import random

    import numpy as np

    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    from unetzoo.train.checkpoint import get_rng_state, set_rng_state

    torch.save(get_rng_state(), tmp_path / "rng.pt")
    expected = _draws()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def test_cuda_rng_states_are_restored_for_the_gpus_this_process_sees(monkeypatch):
    """Saved on 2 GPUs, resumed where 1 is visible: device 0 gets its state, and no IndexError."""
    from unetzoo.train.checkpoint import get_rng_state, set_rng_state

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((state, device)))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("sets every saved device"))
    state = {**get_rng_state(), "cuda": [torch.full((4,), 1, dtype=torch.uint8), torch.full((4,), 2, dtype=torch.uint8)]}
    set_rng_state(state)
    assert len(restored) == 1 and torch.equal(restored[0][0], state["cuda"][0]) and restored[0][1] == 0


# ------------------------------------------------------------------ best/ across a kill
def _always_improving(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every validation beats the last (the monitored metric is the epoch number), so every epoch stages a best."""
    from unetzoo.train import engine

    validate, calls = engine.Trainer.validate, []

    def improving(self):
        calls.append(1)
        return {**validate(self), "fg_iou": float(len(calls))}

    monkeypatch.setattr(engine.Trainer, "validate", improving)


def _die_on_call(monkeypatch: pytest.MonkeyPatch, name: str, n: int) -> None:
    """The n-th call of ``checkpoint.<name>`` raises, as if the process were killed there."""
    from unetzoo.train import checkpoint

    real, calls = getattr(checkpoint, name), []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt(f"killed in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, name, dying)


def _weights(folder: Path) -> bytes:
    return (folder / "model.safetensors").read_bytes()


def test_a_best_model_staged_but_not_committed_is_discarded_on_resume(tmp_path, monkeypatch, capsys):
    from unetzoo.train import TrainConfig, Trainer

    data = make_blobs(tmp_path / "data", n=12)
    cfg = tiny_config(data, tmp_path / "run", epochs=2)
    _always_improving(monkeypatch)
    _die_on_call(monkeypatch, "atomic_save", 2)  # epoch 2's best is staged, its state never written
    with pytest.raises(KeyboardInterrupt):
        fit(cfg)
    run = tmp_path / "run"
    epoch1 = _weights(run / "best")
    assert (run / ".best.staged" / "staged_epoch.txt").read_text() == "2\n"
    assert _weights(run / ".best.staged") != epoch1
    monkeypatch.undo()
    Trainer(TrainConfig.from_dict({**cfg, "resume": True})).close()
    assert "discarded a best model staged after epoch 2" in capsys.readouterr().out
    assert not (run / ".best.staged").exists() and _weights(run / "best") == epoch1


def test_a_best_model_committed_but_not_yet_moved_is_promoted_on_resume(tmp_path, monkeypatch, capsys):
    from unetzoo.train import TrainConfig, Trainer

    data = make_blobs(tmp_path / "data", n=12)
    cfg = tiny_config(data, tmp_path / "run", epochs=2)
    _always_improving(monkeypatch)
    _die_on_call(monkeypatch, "promote_best", 2)  # epoch 2's state is committed, best/ still epoch 1's
    with pytest.raises(KeyboardInterrupt):
        fit(cfg)
    run = tmp_path / "run"
    staged, epoch1 = _weights(run / ".best.staged"), _weights(run / "best")
    assert staged != epoch1 and load_state(run / STATE_NAME)["epoch"] == 1  # 0-based: epoch 2 committed
    monkeypatch.undo()
    Trainer(TrainConfig.from_dict({**cfg, "resume": True})).close()
    assert "promoted the best model of epoch 2" in capsys.readouterr().out
    assert not (run / ".best.staged").exists() and _weights(run / "best") == staged
    assert sorted(p.name for p in (run / "best").iterdir()) == ["README.md", "config.json", "model.safetensors"]
