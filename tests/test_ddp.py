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
from train_utils import REPO, make_blobs, tiny_config

from unetzoo.cli import main
from unetzoo.train.checkpoint import STATE_NAME, load_state


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    data = make_blobs(tmp_path / "data", n=14)
    out = tmp_path / "run"
    config = tmp_path / "ddp.yaml"
    # epoch 1 with the encoder frozen, epoch 2 unfrozen: DDP is re-wrapped around the unfrozen parameters
    config.write_text(yaml.safe_dump(tiny_config(data, out, epochs=2, freeze_epochs=1, batch_size=2, device="cpu")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "unetzoo", "train", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
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
    # (a nearly untrained model: batching differently may flip a pixel or two whose logits tie)
    for key in ("pixel_accuracy", "fg_iou", "miou"):
        assert record[key] == pytest.approx(single["metrics"][key], abs=2e-3), key


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
