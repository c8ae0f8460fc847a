"""The training engine: configs, schedules, the fit loop, outputs, freezing, precision, eval CLI."""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from train_utils import REPO, make_blobs, tiny_config

import unetzoo
from unetzoo.cli import main
from unetzoo.data import DataError
from unetzoo.train import ConfigError, TrainConfig, Trainer, fit, load_config
from unetzoo.train.checkpoint import STATE_NAME, atomic_save, load_state
from unetzoo.train.config import ScheduleSection
from unetzoo.train.schedule import build_scheduler

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_blobs(tmp_path_factory.mktemp("blobs"))


@pytest.fixture(scope="module")
def run(blobs: Path, tmp_path_factory: pytest.TempPathFactory):
    """One tiny 3-epoch run with the encoder frozen for the first epoch (shared by several tests)."""
    out = tmp_path_factory.mktemp("run")
    return fit(tiny_config(blobs, out, epochs=3, freeze_epochs=1))


# ---------------------------------------------------------------------------- configs


def test_config_rejects_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"optimizer": {"lr": 0.1, "momentun": 0.9}}))
    with pytest.raises(ConfigError, match=r"momentun.*valid keys.*momentum"):
        load_config(path)
    with pytest.raises(ConfigError, match="precision must be one of"):
        load_config(None, ["precision=fp64"])
    with pytest.raises(ConfigError, match="epochs must be an integer"):
        load_config(None, ["epochs=ten"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["epochs"])
    with pytest.raises(ConfigError, match="freeze_epochs"):
        load_config(None, ["epochs=2", "freeze_epochs=3"])
    with pytest.raises(ConfigError, match=r"data.transforms.elastic is a probability in \[0, 1\], got 1.5"):
        load_config(None, ["data.transforms.elastic=1.5"])
    with pytest.raises(ConfigError, match=r"data.transforms.blur is a probability in \[0, 1\], got -0.1"):
        load_config(None, ["data.transforms.blur=-0.1"])
    with pytest.raises(ConfigError, match=r"data.transforms.blur_sigma is \[min, max\] with 0 < min <= max, got \[0.0, 1.0\]"):
        load_config(None, ["data.transforms.blur_sigma=[0.0,1.0]"])
    # values torch takes without a word, and lists of the wrong length
    for override, message in [
        ("optimizer.encoder_lr=-0.001", "optimizer.encoder_lr must be >= 0"),
        ("optimizer.weight_decay=-0.5", "optimizer.weight_decay must be >= 0"),
        ("optimizer.betas=[0.9]", r"optimizer.betas is \[beta1, beta2\], each in \[0, 1\), got \[0.9\]"),
        ("schedule.warmup_start=-1", "schedule.warmup_start must be >= 0"),
        ("schedule.min_lr_ratio=2", r"schedule.min_lr_ratio is a factor in \[0, 1\]"),
        ("data.transforms.size=[32]", r"data.transforms.size is a side, \[height, width\] or null, got \[32\]"),
        ("data.transforms.eval_size=0", "data.transforms.eval_size is a side"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])
    assert load_config(None, ["optimizer.encoder_lr=0", "data.transforms.size=[32,48]"]).optimizer.encoder_lr == 0


def test_train_cli_reports_device_state_and_divergence_errors_in_one_line(blobs: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """Errors meant for users reach them as one line, not a traceback: an unknown or missing
    device, an unreadable training state on --resume, a resume with another network, a
    diverged loss."""
    from unetzoo.cli import main

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(blobs, tmp_path / "run", epochs=1)))
    base = ["train", "-c", str(cfg_path)]
    cases = [
        (["device=gpu0"], 2, "device='gpu0' is not a device"),
        *([] if torch.cuda.is_available() else [(["device=cuda"], 2, "CUDA is not available; use device=cpu")]),
        (["optimizer.lr=1e30", "optimizer.name=sgd", "schedule.warmup_epochs=0", "epochs=3"], 1, "the loss is"),
    ]
    for extra, code, needle in cases:
        assert main([*base, *extra]) == code, extra
        err = capsys.readouterr().err
        assert err.startswith("unetzoo train: error:") and needle in err and "Traceback" not in err, err
    assert main([*base, "-o", str(tmp_path / "ok")]) == 0
    capsys.readouterr()
    # without --config, --resume continues with the run's own config.yaml (the defaults would
    # name another network and data), and key=value still changes it
    assert main(["train", "-o", str(tmp_path / "ok"), "--resume", "epochs=2"]) == 0
    out = capsys.readouterr()
    assert f"resumed {tmp_path / 'ok'} after epoch 1 of 2" in out.out + out.err, out
    assert main(["train", "--resume"]) == 2
    assert "needs the run folder: unetzoo train -o RUN_DIR --resume" in capsys.readouterr().err
    assert main(["train", "-o", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "has no config.yaml" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "ok"), "--resume", "model.options.base_c=8"]) == 2
    err = capsys.readouterr().err
    assert "model.options.base_c differ from the saved run's" in err and "Traceback" not in err
    (tmp_path / "ok" / "train_state.pt").write_bytes(b"not a checkpoint")
    assert main([*base, "-o", str(tmp_path / "ok"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot read the training state" in err and "Traceback" not in err


def test_config_errors_name_their_source(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"epochs": 3}))
    with pytest.raises(ConfigError, match=r"monitor='fgiou' is not a validation metric; choose one of .*fg_iou"):
        load_config(None, ["monitor=fgiou"])  # before training, not as a missing best/ afterwards
    with pytest.raises(ConfigError, match=r"epochs must be an integer, got '--4' \(from the overrides epochs=--4\)"):
        load_config(path, ["epochs=--4"])
    with pytest.raises(ConfigError, match=r"batch_size must be >= 1 \(from the overrides batch_size=0\)$"):
        load_config(path, ["batch_size=0"])
    path.write_text(yaml.safe_dump({"epochs": 0}))
    with pytest.raises(ConfigError, match=rf"epochs must be >= 1 in {path}$"):
        load_config(path)
    with pytest.raises(ConfigError, match=rf"in {path} \(with the overrides batch_size=2\)$"):
        load_config(path, ["batch_size=2"])
    assert load_config(None, ["epochs=+4", "seed=-3"]).epochs == 4


def test_config_overrides_are_typed() -> None:
    cfg = load_config(None, ["optimizer.lr=1e-4", "model.options.decoder_channels=[64, 32]",
                             "data.transforms.size=96", "model.pretrained=in1k", "grad_clip=1"])
    assert cfg.optimizer.lr == pytest.approx(1e-4) and isinstance(cfg.optimizer.lr, float)
    assert cfg.model.options == {"decoder_channels": [64, 32]}
    assert cfg.data.transforms.size == 96 and cfg.model.pretrained == "in1k"
    assert cfg.grad_clip == 1.0
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # round trip


def test_config_augmentations_reach_the_training_pipeline(blobs: Path) -> None:
    from torchvision.transforms import v2

    from unetzoo.data import RandomTranspose
    from unetzoo.train.builders import build_datasets

    cfg = load_config(None, [f"data.root={blobs}", "data.transforms.transpose=0.25", "data.transforms.elastic=0.3",
                             "data.transforms.elastic_alpha=40", "data.transforms.elastic_sigma=4",
                             "data.transforms.blur=0.2", "data.transforms.blur_sigma=[0.5,1.5]"])
    steps = build_datasets(cfg.data, num_classes=2, in_chans=3, mean=[0.5], std=[0.25]).train.dataset.transform.transforms
    (transpose,) = [s for s in steps if isinstance(s, RandomTranspose)]
    elastic, blur = [s for s in steps if isinstance(s, v2.RandomApply)]
    assert transpose.p == 0.25 and elastic.p == 0.3 and blur.p == 0.2
    assert blur.transforms[0].sigma == [0.5, 1.5] and blur.transforms[0].kernel_size == (11, 11)
    assert elastic.transforms[0].alpha == [40.0, 40.0] and elastic.transforms[0].sigma == [4.0, 4.0]
    plain = build_datasets(load_config(None, [f"data.root={blobs}"]).data, num_classes=2, in_chans=3,
                           mean=[0.5], std=[0.25]).train.dataset.transform.transforms
    assert not any(isinstance(s, (RandomTranspose, v2.RandomApply)) for s in plain)  # both off by default


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model.name in unetzoo.list_models() or cfg.model.name.startswith("unet-")


def test_demo_yaml_is_the_demo_recipe() -> None:
    from unetzoo.train.recipes import NUCLEI_DEMO

    assert load_config(REPO / "configs" / "nuclei_demo.yaml") == TrainConfig.from_dict(NUCLEI_DEMO)


def test_demo_loss_scores_the_foreground_only() -> None:
    """The demo's Dice and Lovász terms leave out the background (README: +0.005 IoU over ce+dice)."""
    from unetzoo.train.builders import build_loss
    from unetzoo.train.recipes import NUCLEI_DEMO

    loss = build_loss(TrainConfig.from_dict(NUCLEI_DEMO))
    assert loss.names == ["ce", "dice", "lovasz"] and loss.weights == [1.0, 0.5, 0.5]
    # a hard prediction on a 4x4 image: 3 of the 4 foreground pixels found, 1 background pixel
    # marked, so the foreground IoU is 3 / 5 and the Lovász term of hard predictions is 1 - IoU
    # (with the background's IoU of 11 / 13 averaged in, it would be lower)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, :4] = 1
    pred = torch.zeros(1, 4, 4, dtype=torch.long)
    pred[0, 0, :3] = 1
    pred[0, 3, 3] = 1
    logits = torch.nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).float() * 40.0 - 20.0
    assert loss.losses[2](logits, target).item() == pytest.approx(1 - 3 / 5, abs=1e-6)
    assert loss.losses[1].include_background is False


def test_voc_recipe_matches_the_seed() -> None:
    """SEED_SYSTEMS.md §1: Adam 1e-4, frozen then unfrozen, batch 2, 512x512, CE ignoring 255."""
    cfg = load_config(REPO / "configs" / "voc_seed_recipe.yaml")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.batch_size) == ("adam", 1e-4, 2)
    assert 0 < cfg.freeze_epochs < cfg.epochs and cfg.data.transforms.size == 512
    assert cfg.loss.name == "ce" and cfg.data.ignore_index == 255 and cfg.model.num_classes == 21


# ---------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("name", ["cosine", "poly"])
def test_schedule_warmup_then_decay(name: str) -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    cfg = ScheduleSection(name=name, warmup_epochs=1, warmup_start=0.1, min_lr_ratio=0.0, power=2.0)
    sched = build_scheduler(opt, cfg, steps_per_epoch=10, epochs=3)  # 10 warm-up + 20 decay steps
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[5] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))
    assert lrs[10] == pytest.approx(0.1)
    expected = 0.1 * (0.5 * (1 + math.cos(math.pi * 0.5)) if name == "cosine" else 0.5**2)
    assert lrs[20] == pytest.approx(expected)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


# ---------------------------------------------------------------------------- the fit loop


def test_fit_writes_everything(run) -> None:
    out = run.output_dir
    for name in ("config.yaml", "metrics.csv", "metrics.jsonl", "curves.png", "overlays.png", STATE_NAME):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["encoder_frozen"] for r in rows] == [True, False, False]
    assert len(run.csv_path.read_text().splitlines()) == 4
    for key in ("pixel_accuracy", "mean_accuracy", "miou", "dice", "fg_iou", "per_class_iou"):
        assert key in run.metrics
    assert run.metrics["epoch"] == 3 and 1 <= run.best_epoch <= 3
    for png in (run.curves_path, run.overlays_path):
        assert Image.open(png).size[0] > 300
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_checkpoints_reload(run) -> None:
    state = torch.load(run.state_path, map_location="cpu", weights_only=True)  # no pickled objects
    assert state["epoch"] == 2 and set(state) >= {"optimizer", "scheduler", "rng", "history", "best"}
    last = unetzoo.from_pretrained(run.last_dir)
    for key, value in last.state_dict().items():
        assert torch.equal(value, state["model"][key]), key
    best = unetzoo.from_pretrained(run.best_dir)
    assert unetzoo.transforms_for(best).mean == unetzoo.transforms_for("unet-classic").mean


def test_frozen_epochs_keep_encoder_and_norm_stats(blobs: Path, tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig.from_dict(tiny_config(blobs, tmp_path, epochs=2, freeze_epochs=1)))
    model = trainer.model
    enc_keys = [k for k in model.state_dict() if k.startswith("encoder.")]
    assert any("running_mean" in k for k in enc_keys)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer._set_phase(0)
    trainer.train_epoch(0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in enc_keys)
    assert not torch.equal(before["head.weight"], after["head.weight"])
    trainer._set_phase(1)
    trainer.train_epoch(1)
    assert not all(torch.equal(before[k], model.state_dict()[k]) for k in enc_keys)
    trainer.close()


def test_fp16_on_cpu_is_a_clear_error(blobs: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU.*bf16"):
        fit(tiny_config(blobs, tmp_path, precision="fp16", device="cpu"))
    assert not (tmp_path / STATE_NAME).exists()


def test_bf16_autocast_trains_on_cpu(blobs: Path, tmp_path: Path) -> None:
    cfg = tiny_config(blobs, tmp_path, precision="bf16", epochs=1, channels_last=True, grad_clip=1.0)
    seen = []
    trainer = Trainer(TrainConfig.from_dict(cfg))
    trainer.model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.train_epoch(0)
    trainer.close()
    assert seen and set(seen) == {torch.bfloat16}


def test_the_papers_border_weighted_loss_trains_from_a_config(blobs: Path, tmp_path: Path) -> None:
    from unetzoo.losses import BorderWeightedCELoss

    cfg = tiny_config(blobs, tmp_path, epochs=1, precision="bf16")
    cfg["loss"] = {"name": "border_ce+dice", "options": {"w0": 10.0, "sigma": 3.0}}
    trainer = Trainer(TrainConfig.from_dict(cfg))
    term = trainer.loss_fn.losses[0]
    assert isinstance(term, BorderWeightedCELoss) and (term.w0, term.sigma) == (10.0, 3.0)
    stats = trainer.train_epoch(0)
    trainer.close()
    assert math.isfinite(stats["train_loss"]) and stats["train_loss"] > 0


def test_overlay_title_names_the_validated_epoch(blobs: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from unetzoo.train import plots

    titles: list[str] = []
    monkeypatch.setattr(plots, "plot_curves", lambda *a, **k: None)
    monkeypatch.setattr(plots, "plot_overlays", lambda *a, title, **k: titles.append(title))
    fit(tiny_config(blobs, tmp_path, epochs=4, eval_every=2, plot_every=1))
    # epochs 1 and 3 are not validated: epoch 3's grid still shows epoch 2's predictions
    assert [t.rsplit(" ", 1)[-1] for t in titles] == ["2", "2", "4"]


def test_models_ending_in_a_sigmoid_are_scored_on_their_probabilities() -> None:
    """unet-strided (sigmoid=True, as its seed built it): foreground where p > 0.5, as predict() labels it."""
    from unetzoo.train.evaluate import evaluate

    torch.manual_seed(0)
    model = unetzoo.create("unet-strided", num_classes=1, dropout=0.0).eval()
    with torch.no_grad():
        model.head.bias.fill_(-1.95)  # probabilities around 0.12: almost all background
    images = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 32, 32, dtype=torch.long)
    masks[:, :4] = 1
    with torch.no_grad():
        probs = model(images)[:, 0]
    loader = torch.utils.data.DataLoader(list(zip(images, masks)), batch_size=2)
    got = evaluate(model, loader, num_classes=2).metrics
    fg = probs > 0.5
    want = ((fg == (masks == 1)).float().mean()).item()
    assert got["pixel_accuracy"] == pytest.approx(want) and want > 0.5


def test_training_a_sigmoid_model_asks_for_logits(blobs: Path, tmp_path: Path) -> None:
    cfg = tiny_config(blobs, tmp_path)
    cfg["model"] = {"name": "unet-strided", "num_classes": 2, "in_chans": 3}
    with pytest.raises(ConfigError, match="ends in a sigmoid.*model.options.sigmoid=false"):
        fit(cfg)


def test_bad_data_fails_before_training(tmp_path: Path) -> None:
    root = make_blobs(tmp_path / "bad", n=6)
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "masks" / "img002.png")  # label 7, 2 classes
    with pytest.raises(DataError, match="img002"):
        fit(tiny_config(root, tmp_path / "out", data={**tiny_config(root, tmp_path)["data"], "binary": False}))
    assert not (tmp_path / "out" / STATE_NAME).exists()


def test_bad_files_in_both_splits_are_reported_together(tmp_path: Path) -> None:
    """One run shows every bad file, the validation split's too, not one split per attempt."""
    from unetzoo.data import SegmentationFolder, split_dataset

    root = make_blobs(tmp_path / "bad", n=12)
    train, val = split_dataset(SegmentationFolder(root), 0.25, 0)
    stems = [SegmentationFolder(root).files[part.indices[0]][0].stem for part in (train, val)]
    for stem in stems:
        Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "masks" / f"{stem}.png")
    cfg = tiny_config(root, tmp_path / "out")
    cfg["data"]["binary"] = False
    with pytest.raises(DataError) as err:
        fit(cfg)
    text = str(err.value)
    assert "training data:" in text and "validation data:" in text
    assert all(f"{stem}.png" in text for stem in stems)


def test_atomic_save_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = atomic_save({"a": torch.ones(2)}, tmp_path / "s.pt")

    def broken(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"a": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]
    with pytest.raises(ValueError, match="training state"):
        load_state(path)


# ---------------------------------------------------------------------------- command line


def test_train_cli_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", str(REPO / "configs" / "nuclei_demo.yaml"), "epochs=3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["epochs"] == 3 and printed["model"]["name"] == "unet-efficientnet_lite0"
    assert main(["train", "epochz=3"]) == 2


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.name=unet-nope", "model.name: unknown model 'unet-nope'"),
        ("model.options.foo=1", "model (unet-classic): unet-classic got unknown option(s) ['foo']"),
        ("model.options.base_c=-4", "model (unet-classic):"),
        ("loss.name=foo", "loss (foo): cannot read loss term 'foo'"),
        ("loss.options.bar=2", "loss (ce+dice): loss option(s) ['bar']"),
        ("num_workers=-1", "num_workers must be >= 0"),
        ("threads=-1", "threads must be >= 1"),
        ("val_batch_size=-2", "val_batch_size must be >= 1"),
        ("grad_clip=-1", "grad_clip is the largest gradient norm, > 0"),  # it reversed the gradients
        ("data.transforms.std=[0,0,0]", "data.transforms.std divides the images"),
        ("data.channels=1", "data.channels=1 but model.in_chans=3: the model takes the images the reader gives"),
        ("data.transforms.scale=[0,1]", "data.transforms.scale is [min, max] with 0 < min <= max"),  # crashed mid-epoch
        ("data.transforms.scale=[1.0]", "data.transforms.scale is [min, max]"),  # a raw IndexError
        ("data.transforms.rotation=-10", "data.transforms.rotation must be >= 0"),  # silently off
        ("data.transforms.color_jitter=-0.2", "data.transforms.color_jitter must be >= 0"),
        ("data.transforms={mean: [0.5, 0.4, 0.3], std: [0.2, 0.2]}", "data.transforms.mean and std differ in length"),
        # a 2-value mean on a 3-channel model was repeated to (0.5, 0.4, 0.5)
        ("data.transforms={mean: [0.5, 0.4], std: [0.2, 0.2]}", "data.transforms.mean/std have 2 values for "
                                                               "model.in_chans=3"),
        ("data.val_root=", "data.val_root is empty"),  # it validated on the training images
        ("model.in_chans=2", "model.in_chans=2: the image readers give 1 (grey) or 3 (RGB) channels"),
    ],
)
def test_train_cli_reports_bad_model_and_loss_settings_in_one_line(
    override: str, needle: str, blobs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(blobs, tmp_path / "out", epochs=1)))
    assert main(["train", "--config", str(config), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"unetzoo train: error: {needle}") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_train_cli_overrides_may_follow_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["train", "epochs=1", "-o", str(tmp_path), "seed=2", "--print-config", "epochs=4"]
    assert main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["epochs"], printed["seed"], printed["output_dir"]) == (4, 2, str(tmp_path))  # in order
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "epochs=1", "--bogus"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_config_yaml_reads_exponents_as_numbers_and_refuses_repeated_keys(tmp_path: Path) -> None:
    """PyYAML (YAML 1.1) reads 1e-5 as a string, which only the typed fields turned into a number;
    a key given twice silently dropped its first value."""
    cfg = load_config(None, ["loss.options={smooth: 1e-5}", "optimizer.lr=3E-4"])
    assert cfg.loss.options == {"smooth": 1e-5} and cfg.optimizer.lr == 3e-4
    path = tmp_path / "twice.yaml"
    path.write_text("optimizer:\n  name: sgd\n  lr: 0.1\nepochs: 2\noptimizer:\n  lr: 0.001\n")
    with pytest.raises(ConfigError, match=r"the key 'optimizer' is given twice; keep one"):
        load_config(path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("output_dir: r\xe9sultats\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"cannot read config {re.escape(str(latin1))}"):
        load_config(latin1)


def test_a_mapping_override_merges_into_its_section(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "unet-classic", "in_chans": 1,
                                              "options": {"base_c": 8, "bilinear": True}}}))
    cfg = load_config(path, ["model={num_classes: 3}", "model.options={base_c: 16}"])
    assert (cfg.model.name, cfg.model.in_chans, cfg.model.num_classes) == ("unet-classic", 1, 3)
    assert cfg.model.options == {"base_c": 16, "bilinear": True}


@pytest.mark.parametrize("folder", ["exp #3", "2024-06-01", "42", "off"])
def test_the_output_folder_is_taken_as_typed(folder: str, capsys: pytest.CaptureFixture[str]) -> None:
    """-o is a path, not YAML: '#' started a comment, a date or a number was refused."""
    assert main(["train", "-o", folder, "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["output_dir"] == folder


def test_demo_takes_output_dir_from_an_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import unetzoo.train

    seen = []

    def stop(cfg):
        seen.append(cfg.output_dir)
        raise FileNotFoundError("stopped before training")

    monkeypatch.setattr(unetzoo.train, "fit", stop)
    assert main(["demo", f"output_dir={tmp_path / 'a'}"]) == 2
    assert main(["demo", "-o", str(tmp_path / "b"), f"output_dir={tmp_path / 'a'}"]) == 2  # -o wins
    assert main(["demo"]) == 2
    assert seen == [str(tmp_path / "a"), str(tmp_path / "b"), "runs/demo"]


def test_a_home_relative_output_dir_is_expanded(blobs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It crashed after the first epoch, half the run under ./~ and half under $HOME."""
    monkeypatch.setenv("HOME", str(tmp_path))
    trainer = Trainer(TrainConfig.from_dict(tiny_config(blobs, Path("~/runs/tiny"), epochs=1)))
    try:
        assert trainer.out == tmp_path / "runs" / "tiny"
    finally:
        trainer.close()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ConfigError, match="is a file; give a folder"):
        Trainer(TrainConfig.from_dict(tiny_config(blobs, tmp_path / "a_file", epochs=1)))


def test_overlay_colours_tell_apart_classes_beyond_the_first_ten() -> None:
    from unetzoo.train.plots import _colour

    labels = np.arange(21)[None, :]  # VOC's 21 classes
    rgb, alpha = _colour(labels, ignore_index=255)
    colours = {tuple(np.round(c, 4)) for c in rgb[0, 1:]}
    assert len(colours) == 20 and alpha[0, 0] == 0 and (alpha[0, 1:] == 1).all()


def test_a_saved_model_scored_again_on_its_validation_images_matches_the_run(
    run, blobs: Path, tmp_path: Path
) -> None:
    from unetzoo.train.config import DataSection
    from unetzoo.train.evaluate import evaluate_saved

    data = TrainConfig.from_dict(tiny_config(blobs, tmp_path)).data  # the run's own data section, float32
    metrics, count = evaluate_saved(run.last_dir, data, validation=True)
    assert count == 3 and metrics["fg_iou"] == pytest.approx(run.metrics["fg_iou"], abs=1e-6)  # 25% of 12
    other = make_blobs(tmp_path / "other", n=5, seed=1)
    _, count = evaluate_saved(run.last_dir, DataSection(root=str(blobs), val_root=str(other)), validation=True)
    assert count == 5  # a separate validation folder, not a split of the training one


def test_demo_reports_the_saved_models_float32_figures_which_eval_reproduces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One short epoch of the real demo (lite0 ImageNet weights, bundled nuclei) under bfloat16
    autocast: the figures it prints are the saved model's in float32, as its re-evaluate line gives."""
    out = tmp_path / "demo"
    argv = ["demo", "-o", str(out), "epochs=1", "freeze_epochs=0", "schedule.warmup_epochs=0", "eval_every=1",
            "precision=bf16", "overlays=2", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    iou = float(re.search(r"foreground IoU (\d\.\d{4})   Dice", printed).group(1))
    trained = float(re.search(r"bf16 validation of the same model: foreground IoU (\d\.\d{4})", printed).group(1))
    command = re.search(r"^re-evaluate \(the same figures\): unetzoo (eval .*)$", printed, re.M).group(1)
    assert main([*command.split(), "--json", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["images"] == 20 and f"{evaluated['metrics']['fg_iou']:.4f}" == f"{iou:.4f}"
    assert 0.0 < trained <= 1.0 and "goal IoU >= 0.8 in < 5 min" in printed


def _independent_fg_iou(model_dir: Path, root: Path, stems: list[str], tta: bool = False) -> tuple[float, float]:
    """Foreground IoU over ``stems`` (pooled, and the mean of per-image IoUs) with plain numpy
    (no unetzoo data or metrics code); ``tta`` averages the softmax probabilities of the image
    and its horizontal, vertical and double flips, each flipped back with numpy (the rule of
    ``unetzoo.predict``'s labels, which ``eval --tta`` follows)."""
    model = unetzoo.from_pretrained(model_dir)
    pre = unetzoo.transforms_for(model)
    inter = union = 0
    per_image = []
    for stem in stems:
        image = torch.from_numpy(np.array(Image.open(root / "images" / f"{stem}.png").convert("RGB")))
        x = pre(image.permute(2, 0, 1))[None]
        flips = [(), (1,), (0,), (0, 1)] if tta else [()]  # axes of the HxW arrays
        probs = 0
        for axes in flips:
            flipped = torch.from_numpy(np.ascontiguousarray(np.flip(x.numpy(), [a + 2 for a in axes])))
            with torch.no_grad():
                y = model(flipped)[0].double().numpy()
            e = np.exp(y - y.max(0))
            probs = probs + np.flip(e / e.sum(0), [a + 1 for a in axes])
        pred = probs.argmax(0) == 1
        truth = np.asarray(Image.open(root / "masks" / f"{stem}.png")) > 127
        inter += (pred & truth).sum()
        union += (pred | truth).sum()
        if (pred | truth).any():
            per_image.append((pred & truth).sum() / (pred | truth).sum())
    return inter / union, float(np.mean(per_image))


def test_eval_cli_matches_an_independent_computation(run, blobs: Path, tmp_path: Path) -> None:
    report = tmp_path / "m.json"
    assert main(["eval", str(run.last_dir), "--data", str(blobs), "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())["metrics"]
    stems = sorted(p.stem for p in (blobs / "images").glob("*.png"))
    pooled, image_mean = _independent_fg_iou(run.last_dir, blobs, stems)
    assert metrics["fg_iou"] == pytest.approx(pooled, abs=1e-9)
    assert metrics["image_fg_iou"] == pytest.approx(image_mean, abs=1e-9)
    # the held-out quarter, as the run split it, equals the run's own final validation
    assert main(["eval", str(run.last_dir), "--data", str(blobs), "--holdout", "0.25", "--json", str(report)]) == 0
    held_out = json.loads(report.read_text())
    assert held_out["images"] == 3
    assert held_out["metrics"]["fg_iou"] == pytest.approx(run.metrics["fg_iou"], abs=1e-9)
    # tiled inference (16 px tiles on 32 px images) agrees with whole-image inference closely
    assert main(["eval", str(run.last_dir), "--data", str(blobs), "--tile", "16", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["metrics"]["pixel_accuracy"] == pytest.approx(
        metrics["pixel_accuracy"], abs=0.05)


def test_eval_cli_scores_a_runs_validation_data_as_the_run_read_it(blobs: Path, tmp_path: Path, capsys) -> None:
    """eval --data knows no label_map: a run trained on swapped labels was scored against the
    unswapped ones, silently. --config reads the data as the run did; --data says what it skips."""
    cfg = tiny_config(blobs, tmp_path / "swapped", epochs=1)
    cfg["data"]["label_map"] = {0: 1, 255: 0}  # the blobs are background, the rest foreground
    run = fit(cfg)
    capsys.readouterr()
    report = tmp_path / "m.json"
    assert main(["eval", str(run.last_dir), "--config", str(run.output_dir / "config.yaml"),
                 "--json", str(report)]) == 0
    scored = json.loads(report.read_text())
    assert scored["images"] == 3 and scored["metrics"]["fg_iou"] == pytest.approx(run.metrics["fg_iou"], abs=1e-9)
    assert main(["eval", str(run.last_dir), "--data", str(blobs), "--holdout", "0.25"]) == 0
    assert "reads its labels with label_map={0: 1, 255: 0}, which --data does not apply; pass --config" in (
        capsys.readouterr().err)
    assert main(["eval", str(run.last_dir)]) == 2
    assert "give --data ROOT (a data set) or --config RUN/config.yaml" in capsys.readouterr().err


def test_eval_json_is_strict_json(run, blobs: Path, tmp_path: Path, capsys) -> None:
    """A class absent from the data has NaN metrics: JSON has no NaN (JavaScript's parser refused
    the file); they are written as null. A folder as --json is refused before the evaluation."""
    report = tmp_path / "m.json"
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    for stem in ("a", "b"):  # background only: no foreground pixel anywhere
        Image.fromarray(np.full((32, 32, 3), 40, np.uint8)).save(empty / "images" / f"{stem}.png")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(empty / "masks" / f"{stem}.png")
    assert main(["eval", str(run.last_dir), "--data", str(empty), "--json", str(report)]) == 0
    text = report.read_text()
    assert "NaN" not in text and json.loads(text)["metrics"]["per_class_accuracy"][1] is None
    assert main(["eval", str(run.last_dir), "--data", str(empty), "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder; give a file name" in err and "image(s)" not in capsys.readouterr().out


def test_eval_cli_errors_are_one_line(run, blobs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [
        (["--json", str(tmp_path / "nowhere" / "m.json")], "nowhere"),  # before the evaluation, not after
        (["--device", "gpu"], "gpu"),
        (["--split", "val"], "--split val applies to --kind voc or drive; for folder data"),  # not ignored
    ]
    for extra, needle in cases:
        assert main(["eval", str(run.last_dir), "--data", str(blobs), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("unetzoo eval: error:") and needle in err and "Traceback" not in err


def test_eval_cli_flip_averaging_matches_an_independent_computation(run, blobs: Path, tmp_path: Path) -> None:
    report = tmp_path / "m.json"
    stems = sorted(p.stem for p in (blobs / "images").glob("*.png"))
    averaged = _independent_fg_iou(run.last_dir, blobs, stems, tta=True)
    assert averaged != _independent_fg_iou(run.last_dir, blobs, stems)  # the flips change predictions here
    assert main(["eval", str(run.last_dir), "--data", str(blobs), "--tta", "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())["metrics"]
    assert (metrics["fg_iou"], metrics["image_fg_iou"]) == pytest.approx(averaged, abs=1e-6)
    # the tiled path averages the same flips (16 px tiles on 32 px images: close, not equal) and
    # scores exactly the masks predict writes with the same tiles
    assert main(["eval", str(run.last_dir), "--data", str(blobs), "--tta", "--tile", "16", "--json", str(report)]) == 0
    tiled = json.loads(report.read_text())["metrics"]["fg_iou"]
    assert tiled == pytest.approx(averaged[0], abs=0.05)
    model = unetzoo.from_pretrained(run.last_dir)
    inter = union = 0
    for stem in stems:
        image = np.array(Image.open(blobs / "images" / f"{stem}.png").convert("RGB"))
        pred = unetzoo.predict(model, image, tile=16, tta=True, output="labels") == 1
        truth = np.asarray(Image.open(blobs / "masks" / f"{stem}.png")) > 127
        inter, union = inter + (pred & truth).sum(), union + (pred | truth).sum()
    assert tiled == pytest.approx(inter / union, abs=1e-9)


@pytest.mark.parametrize("tile", [None, 16])
def test_eval_scores_average_probabilities_as_predict_does(tile) -> None:
    """With flips (and with tiles), eval's argmax is that of predict's labels: both average
    probabilities. A random convolution's flips disagree enough for averaged logits to pick
    other labels somewhere, so the test tells the two rules apart."""
    from unetzoo.inference.predict import flip_averaged
    from unetzoo.train.evaluate import _logits

    torch.manual_seed(3)
    model = torch.nn.Conv2d(3, 3, 5, padding=2).eval()  # not flip-symmetric: flips disagree
    torch.nn.init.normal_(model.weight, std=0.5)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        ours = _logits(model, x, tile, None, tta=True).argmax(1)[0]
        by_logits = flip_averaged(model, x).argmax(1)[0]
    labels = torch.as_tensor(unetzoo.predict(model, x[0], tile=tile, tta=True, output="labels")).long()
    assert torch.equal(ours, labels)
    if tile is None:
        assert not torch.equal(by_logits, labels)


def test_eval_of_mixed_sizes_does_not_depend_on_the_batch(tmp_path: Path) -> None:
    """Padding a small image to its batch's largest puts zeros next to it, inside the network's
    receptive field: each size runs on its own, so batch size 4 scores what batch size 1 does,
    and the padding still counts in no metric."""
    from torch.utils.data import DataLoader

    from unetzoo.data import pad_collate
    from unetzoo.train.evaluate import evaluate

    torch.manual_seed(0)
    model = unetzoo.create("unet-resnet18", num_classes=2, decoder_channels=(16, 16, 8, 8), decoder_norm="gn")
    sizes = [(32, 32), (64, 48), (32, 32), (40, 72)]
    data = [(torch.randn(3, h, w), torch.randint(0, 2, (h, w))) for h, w in sizes]
    loss = torch.nn.CrossEntropyLoss(ignore_index=255)

    def run(batch_size: int, with_sizes: bool = True):
        collate = functools.partial(pad_collate, sizes=with_sizes)
        return evaluate(model, DataLoader(data, batch_size, collate_fn=collate), num_classes=2, loss_fn=loss)

    one, four = run(1), run(4)
    keys = ("pixel_accuracy", "miou", "fg_iou", "dice", "image_fg_iou")
    assert [four.metrics[k] for k in keys] == pytest.approx([one.metrics[k] for k in keys], abs=1e-12)
    assert four.pixels == one.pixels
    assert four.loss == pytest.approx(one.loss, rel=1e-6)  # the mean over images, whatever the batches
    padded = run(4, with_sizes=False)  # what the padding did before
    assert [padded.metrics[k] for k in keys] != pytest.approx([one.metrics[k] for k in keys], abs=1e-12)


def test_an_all_ignored_validation_image_adds_no_loss():
    """The validation loss is the mean over images that have a pixel to score: an image whose mask is
    all ignore_index has no loss (it halved the mean as a 0), and with only such images it is NaN."""
    from torch.utils.data import DataLoader

    from unetzoo.train.evaluate import evaluate

    torch.manual_seed(0)
    model = unetzoo.create("unet-resnet18", num_classes=2, decoder_channels=(16, 16, 8, 8), decoder_norm="gn")
    scored = (torch.randn(3, 32, 32), torch.randint(0, 2, (32, 32)))
    ignored = (torch.randn(3, 32, 32), torch.full((32, 32), 255))
    loss = torch.nn.CrossEntropyLoss(ignore_index=255)

    def run(data):
        return evaluate(model, DataLoader(data, 1), num_classes=2, loss_fn=loss)

    alone = run([scored])
    with torch.no_grad():
        model.eval()
        want = float(loss(model(scored[0][None]), scored[1][None]))
    assert alone.loss == pytest.approx(want, rel=1e-5)
    assert run([scored, ignored]).loss == pytest.approx(alone.loss, rel=1e-6)
    assert math.isnan(run([ignored]).loss)


def test_the_validation_loader_gives_the_sizes_before_padding(blobs: Path, tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig.from_dict(tiny_config(blobs, tmp_path, epochs=1)))
    try:
        images, masks, sizes = next(iter(trainer.val_loader))
        assert sizes.tolist() == [list(images.shape[-2:])] * images.shape[0]
    finally:
        trainer.close()
