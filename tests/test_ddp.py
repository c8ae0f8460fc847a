"""Two-process DistributedDataParallel training on CPU (gloo), launched with torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_utils import REPO, make_blobs, tiny_config

from unetzoo.cli import main
from unetzoo.train.checkpoint import STATE_NAME, load_state


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(config: Path, *extra: str) -> str:
    """``torchrun --nproc_per_node=2 -m unetzoo train --config CONFIG EXTRA...``; returns the log."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "unetzoo", "train", "--config", str(config), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    return log


needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@needs_gloo
def test_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    data = make_blobs(tmp_path / "data", n=14)
    out = tmp_path / "run"
    config = tmp_path / "ddp.yaml"
    # epoch 1 with the encoder frozen, epoch 2 unfrozen: DDP is re-wrapped around the unfrozen parameters
    config.write_text(yaml.safe_dump(tiny_config(data, out, epochs=2, freeze_epochs=1, batch_size=2, device="cpu")))
    log = _torchrun(config)
    assert "(2 process(es))" in log
    assert log.count("epoch 1  loss") == 1, "only rank 0 logs"
    assert log.count("final: mIoU") == 1, "only rank 0 reports"

    history = load_state(out / STATE_NAME)["history"]
    assert [r["encoder_frozen"] for r in history] == [True, False]
    record = history[-1]
    # 10 training images: 5 per process, 2 steps of 2 (the partial batch is dropped)
    assert record["epoch"] == 2 and (out / "last" / "model.safetensors").is_file()
    # validation metrics were reduced over both processes: they equal one process over all held-out images
    report = tmp_path / "eval.json"
    assert main(["eval", str(out / "last"), "--data", str(data), "--holdout", "0.25", "--json", str(report)]) == 0
    single = json.loads(report.read_text())
    assert single["images"] == 4  # 2 per process
    assert record["val_pixels"] == 4 * 32 * 32
    # every process scores with rank 0's norm statistics, those of the saved model (DDP leaves each
    # process its own after the last step)
    for key in ("pixel_accuracy", "fg_iou", "miou"):
        assert record[key] == pytest.approx(single["metrics"][key], abs=1e-6), key


_SAVE_BUFFERS = """
import sys, torch, torch.distributed as dist, yaml
from unetzoo.train.config import TrainConfig
from unetzoo.train.engine import Trainer
trainer = Trainer(TrainConfig.from_dict(yaml.safe_load(open(sys.argv[1]))))
try:
    trainer.run()  # validation comes last: what the processes scored with
    torch.save({k: v for k, v in trainer.eval_model.state_dict().items() if "running" in k},
               f"{sys.argv[2]}/buffers{dist.get_rank()}.pt")
finally:
    trainer.close()
"""


@needs_gloo
def test_every_process_validates_with_the_saved_models_norm_statistics(tmp_path: Path) -> None:
    """After the last step each DDP process had its own running statistics (DDP syncs them at the
    next forward only); rank 1 scored its shard with a model that was never saved."""
    data = make_blobs(tmp_path / "data", n=14)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, tmp_path / "run", epochs=1, batch_size=2, device="cpu")))
    script = tmp_path / "buffers.py"
    script.write_text(_SAVE_BUFFERS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(script), str(config), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = (torch.load(tmp_path / f"buffers{r}.pt", weights_only=True) for r in (0, 1))
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@needs_gloo
def test_a_resumed_two_process_run_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    """Every process's random generators are saved: with augmentation drawing random numbers, a
    run of 1 epoch resumed to 2 ends with the weights of a run of 2 (only rank 0's were restored)."""
    data = make_blobs(tmp_path / "data", n=14)
    outs = {}
    for name in ("straight", "resumed"):
        cfg = tiny_config(data, tmp_path / name, epochs=2, batch_size=2, device="cpu", deterministic=True)
        cfg["data"]["transforms"].update(scale=[0.8, 1.25], rotation=10.0)
        cfg["schedule"] = {"name": "constant"}
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(cfg))
        outs[name] = (config, tmp_path / name)
    _torchrun(outs["straight"][0])
    _torchrun(outs["resumed"][0], "epochs=1")
    _torchrun(outs["resumed"][0], "--resume")
    a, b = (load_file(out / "last" / "model.safetensors") for _, out in outs.values())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unetzoo.train import ConfigError, fit

    data = make_blobs(tmp_path / "data", n=6)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: None)
    cfg = tiny_config(data, tmp_path / "run", device="cpu")
    cfg["model"]["sync_bn"] = True
    with pytest.raises(ConfigError, match="sync_bn.*GPUs"):
        fit(cfg)
