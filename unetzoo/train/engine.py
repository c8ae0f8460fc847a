"""The fit loop: ``unetzoo.train.fit(config) -> FitResult``.

One epoch = one pass over the (shuffled, augmented) training set with a per-step learning-rate
schedule, then validation on whole images. The first ``freeze_epochs`` epochs train with the
encoder frozen (weights *and* norm statistics, :meth:`UnetZooModel.freeze_encoder`), the rest
with it unfrozen at ``optimizer.encoder_lr``: the seed projects' transfer recipe.

Under ``torchrun`` the model is wrapped in DistributedDataParallel (re-wrapped when the encoder
is unfrozen, since DDP only synchronises parameters that required gradients when it was built),
metrics are reduced over processes, and only rank 0 prints, plots and writes files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from unetzoo import cpu_memory
from unetzoo._atomic import atomic_path
from unetzoo.train import builders, checkpoint, distributed, plots, records
from unetzoo.train.config import ConfigError, TrainConfig, apply_overrides, config_diff, load_config
from unetzoo.train.depthwise import float32_depthwise, restore_depthwise
from unetzoo.train.ema import WeightEMA
from unetzoo.train.evaluate import EvalResult, center_crop_like, evaluate
from unetzoo.train.result import CURVES_NAME, OVERLAYS_NAME, RUN_FILES, FitResult
from unetzoo.train.schedule import build_scheduler

__all__ = ["FitResult", "Trainer", "fit"]


def fit(config: TrainConfig | Mapping[str, Any] | str | os.PathLike, overrides: Iterable[str] = ()) -> FitResult:
    """Train a model as ``config`` says and return the final metrics and output paths.

    Args:
        config: a :class:`TrainConfig`, a mapping of its sections, or a YAML file.
        overrides: ``key=value`` assignments applied on top (e.g. ``["epochs=2"]``).

    Example:
        >>> result = unetzoo.train.fit("configs/nuclei_demo.yaml", ["epochs=2"])
        >>> result.metrics["fg_iou"], result.best_dir
    """
    if isinstance(config, (TrainConfig, Mapping)):
        data = config.to_dict() if isinstance(config, TrainConfig) else config
        cfg = TrainConfig.from_dict(apply_overrides(data, overrides))
    else:
        cfg = load_config(config, overrides)
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        trainer.close()


def sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every BatchNorm synchronised across processes. timm's converter: torch's
    turns timm's ``BatchNormAct2d`` (EfficientNet, MobileNetV3: norm, then the activation) into a
    plain ``SyncBatchNorm`` whose forward drops the activation; timm's keeps it, and converts
    other BatchNorms as torch does."""
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(model)


class Trainer:
    """Holds the pieces of one run; :meth:`run` trains, :func:`fit` is the usual entry point."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self._owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        self._saved_globals = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        cfg = self.cfg
        self.dist, self.device = distributed.init_distributed(cfg.device)
        self.precision = builders.resolve_precision(cfg.precision, self.device)
        if self.device.type == "cpu":  # reuse freed activations instead of page-faulting them in each step
            cpu_memory.auto_tune_cpu_allocator()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.out = Path(cfg.output_dir).expanduser()  # as save_pretrained expands it
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"output_dir {self.out} is a file; give a folder for the run")
        self.pre = builders.preprocessing_for(cfg)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.model = self._build_model()
        checkpoint.seed_everything(cfg.seed + self.dist.rank)  # different augmentations per rank
        self.data = builders.build_datasets(
            cfg.data, num_classes=cfg.model.num_classes, in_chans=cfg.model.in_chans,
            mean=self.pre.mean, std=self.pre.std,
        )
        self.train_loader, self.val_loader, self.generator = builders.build_loaders(
            cfg, self.data, self.dist, self.device
        )
        self.loss_fn = builders.build_loss(cfg).to(self.device)
        self.optimizer = builders.build_optimizer(cfg.optimizer, self.model)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.schedule, steps_per_epoch=len(self.train_loader), epochs=cfg.epochs
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.ema = WeightEMA(self.model, cfg.ema) if cfg.ema is not None else None
        # bf16 depthwise backward passes are slow on CPUs; float32 ones are not (depthwise.py)
        self.fp32_depthwise_count = (float32_depthwise(self.model)
                                     if self.device.type == "cpu" and self.precision == "bf16" else 0)
        self.net: torch.nn.Module = self.model  # the DDP wrapper under torchrun
        self.start_epoch, self.best, self.best_epoch = 0, None, 0
        self._step_lr = math.nan  # the decoder's learning rate in the last optimizer step
        self.history: list[dict[str, Any]] = []
        self.last_eval: EvalResult | None = None
        if cfg.resume:
            self._restore()
            # what the run records (config.yaml, the state) starts the same run afresh when reused
            self.cfg = dataclasses.replace(self.cfg, resume=False)
        elif self.dist.is_main:
            try:
                previous = checkpoint.set_aside_run(self.out, RUN_FILES)
            except FileExistsError as err:
                raise ConfigError(str(err)) from None
            if previous is not None:
                self.log(f"note: {self.out} held an earlier run; moved it to {previous} (replacing the one there) "
                         "and starting afresh (use --resume to continue a run)")
            shutil.rmtree(self.out / checkpoint.STAGED_NAME, ignore_errors=True)  # an earlier run's, never committed

    # ------------------------------------------------------------------ set-up
    def _build_model(self) -> torch.nn.Module:
        model = builders.build_model(self.cfg.model)
        if isinstance(getattr(model, "activation", None), torch.nn.Sigmoid):
            raise ConfigError(f"{self.cfg.model.name} ends in a sigmoid, but unetzoo's losses take logits; "
                              "set model.options.sigmoid=false (the same weights, without the final sigmoid)")
        model.preprocessing = self.pre  # recorded in config.json by save_pretrained
        stages = len(model.encoder_stages())
        if self.cfg.frozen_stages > stages:
            raise ConfigError(f"frozen_stages={self.cfg.frozen_stages}, but {self.cfg.model.name}'s encoder has "
                              f"{stages} stage(s); use 0 to {stages}")
        if self.cfg.model.sync_bn and self.dist.enabled:
            if self.device.type == "cpu":
                raise ConfigError("model.sync_bn=true needs GPUs (SyncBatchNorm has no CPU kernel); "
                                  "set model.sync_bn=false for CPU (gloo) runs")
            model = sync_batchnorm(model)
        model.to(self.device)
        if self.cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _restore(self) -> None:
        state = checkpoint.load_state(self.out / checkpoint.STATE_NAME)
        saved_model = state["config"].get("model", {})
        changed = [f"model.{k}" for k in config_diff(saved_model, self.cfg.to_dict()["model"], ignore={"pretrained", "sync_bn"})]
        if changed:  # another network: its weights would not fit (or, worse, would fit differently)
            raise ConfigError(f"cannot resume {self.out}: {', '.join(changed)} differ from the saved run's; resume "
                              "with the saved model settings, or start a new run without --resume")
        changed = config_diff(state["config"], self.cfg.to_dict(), ignore={"resume", "progress"})
        saved_out = state["config"].get("output_dir")
        if saved_out and Path(saved_out).expanduser().resolve() == self.out.resolve():
            changed = [k for k in changed if k != "output_dir"]  # the same folder, spelled another way
        kept = [k for k in changed if k.startswith("optimizer.")]
        if kept:  # the saved state belongs to the saved optimizer (an SGD cannot take Adam's moments)
            saved = TrainConfig.from_dict({**self.cfg.to_dict(), "optimizer": state["config"]["optimizer"]})
            self.cfg = dataclasses.replace(self.cfg, optimizer=saved.optimizer)
            self.optimizer = builders.build_optimizer(self.cfg.optimizer, self.model)
            self.scheduler = build_scheduler(self.optimizer, self.cfg.schedule,
                                             steps_per_epoch=len(self.train_loader), epochs=self.cfg.epochs)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # the schedule's shape follows the current config (more epochs, another batch size): the
        # position is counted in the current run's steps, so a changed batch size neither skips nor
        # repeats part of the schedule
        self.scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [
            dict(f.__dict__) for f in self.scheduler.lr_lambdas]})
        self.scheduler.last_epoch = (state["epoch"] + 1) * len(self.train_loader)
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise ConfigError(f"{self.out} was trained without ema; resume it with ema=null or start afresh")
            self.ema.load_state_dict(state["ema"])
        self.start_epoch = state["epoch"] + 1
        if self.cfg.epochs < self.start_epoch:
            raise ConfigError(
                f"cannot resume {self.out} with epochs={self.cfg.epochs}: it has already trained {self.start_epoch} "
                f"epochs; resume with epochs={self.start_epoch + 1} or more to train longer (unetzoo eval "
                f"{self.out / 'last'} scores what it has)"
            )
        self.best, self.history = state["best"], list(state["history"])
        self.best_epoch = next((r["epoch"] for r in self.history if r.get("best")), 0)
        saved_monitor = state["config"].get("monitor")
        if saved_monitor is not None and saved_monitor != self.cfg.monitor:
            # the saved best is a value of another metric: best/ now follows the new monitor
            self.log(f"note: monitor changed from {saved_monitor!r} to {self.cfg.monitor!r}; "
                     f"best/ will hold the best {self.cfg.monitor} from epoch {self.start_epoch + 1} on")
            self.best, self.best_epoch = None, 0
            for r in self.history:
                r.pop("best", None)
        if self.dist.is_main:
            done = checkpoint.finish_best(self.out, self.best_epoch)
            if done:
                self.log(f"note: {done}")
        ranks = state.get("rng_ranks") or [state["rng"]]  # every process's generators (older states: rank 0's)
        if len(ranks) == self.dist.world_size:
            checkpoint.set_rng_state(ranks[self.dist.rank])
        elif self.dist.is_main:
            checkpoint.set_rng_state(state["rng"])
        else:  # saved by another number of processes: continue from a fresh, epoch-dependent seed
            checkpoint.seed_everything(self.cfg.seed + self.dist.rank + 1000 * self.start_epoch)
        self.log(f"resumed {self.out} after epoch {self.start_epoch} of {self.cfg.epochs}")
        if changed:
            self.log(f"note: the config differs from the saved run's in {', '.join(changed)}")
        if kept:  # the run records what it trains with (config.yaml, the state's config), not the ignored values
            self.log(f"note: {', '.join(kept)} not applied: the optimizer continues with the saved run's settings and "
                     "state (learning rates, weight decay, moments); start a new run to train with new ones")

    def log(self, message: str) -> None:
        if self.dist.is_main:
            from tqdm.auto import tqdm

            tqdm.write(message)

    def close(self) -> None:
        """Leave the process group (if this run joined it) and restore torch's global settings."""
        threads, deterministic = self._saved_globals
        if getattr(self, "fp32_depthwise_count", 0):
            restore_depthwise(self.model)
            self.fp32_depthwise_count = 0
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        if self._owns_group:
            distributed.cleanup()

    # ------------------------------------------------------------------ the loop
    def run(self) -> FitResult:
        from tqdm.auto import tqdm

        start = time.perf_counter()
        cfg = self.cfg
        if self.start_epoch >= cfg.epochs:  # a finished run resumed as it was: nothing to train or rewrite
            self.log(f"note: {self.out} has already trained all {cfg.epochs} epochs; nothing to do (resume with "
                     f"epochs={cfg.epochs + 1} or more to train longer)")
            return self._result(0.0)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.out / "config.yaml") as tmp:  # what --resume reads: never half written
                tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
            dw = f" ({n} depthwise convolutions train in fp32)" if (n := self.fp32_depthwise_count) else ""
            self.log(f"{cfg.model.name} on {self.device} ({self.dist.world_size} process(es)), precision "
                     f"{self.precision}{dw}, output {self.out}\n{self.data.summary}")
            if self.ema is not None:
                self._note_ema_warmup()
        bar = tqdm(range(self.start_epoch, cfg.epochs), desc="epochs", unit="epoch",
                   initial=self.start_epoch, total=cfg.epochs, disable=not (self.dist.is_main and cfg.progress))
        for epoch in bar:
            self._set_phase(epoch)
            record = self.train_epoch(epoch)
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                record.update(self.validate())
            self.history.append(record)
            self._end_epoch(epoch, record)
            bar.set_postfix({k: f"{record[k]:.4f}" for k in ("train_loss", cfg.monitor) if record.get(k) is not None})
        bar.close()
        return self._result(time.perf_counter() - start)

    def _note_ema_warmup(self) -> None:
        """Say so when the run is too short for the average's decay to reach ``ema``."""
        decay, steps = self.cfg.ema, len(self.train_loader) * self.cfg.epochs
        needed = WeightEMA.warmup_steps(decay)
        if steps < needed:
            self.log(f"note: ema={decay} is reached after {needed} steps (the decay warms up as (1 + t) / (10 + t)); "
                     f"this run has {steps}, so its average ends at decay {WeightEMA.warmed_decay(decay, steps):.3f}")

    def _set_phase(self, epoch: int) -> None:
        """The whole encoder frozen for ``freeze_epochs``, then all but its first ``frozen_stages``."""
        target = None if epoch < self.cfg.freeze_epochs else self.cfg.frozen_stages  # None: all of it
        changed = target != self.model.frozen_stages
        if changed:
            if target == 0:
                self.model.unfreeze_encoder()
            else:
                self.model.freeze_encoder(stages=target)
        if self.dist.enabled and (changed or self.net is self.model):
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training data; returns the epoch's record (loss, lr, throughput)."""
        from tqdm.auto import tqdm

        cfg, loader = self.cfg, self.train_loader
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        # sample order and worker seeds depend on the epoch (and rank) only, not on what ran before
        self.generator.manual_seed(cfg.seed + epoch + 100_003 * self.dist.rank)
        self.net.train()
        loss_sum, seen, started = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not (self.dist.is_main and cfg.progress))
        for step, (images, masks) in enumerate(bar):
            loss = self.train_step(images, masks, epoch, step)
            loss_sum += loss * images.shape[0]
            seen += images.shape[0]
            rate = seen * self.dist.world_size / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{rate:.1f}", lr=f"{self._step_lr:.2e}")
        bar.close()
        elapsed = time.perf_counter() - started
        loss_sum, seen = distributed.all_reduce_sum([loss_sum, seen], self.device)
        return {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "lr": self._step_lr,  # what the epoch's last step trained with (the scheduler has moved on)
            "encoder_frozen": epoch < cfg.freeze_epochs,
            "imgs_per_s": seen / elapsed,
            "train_time_s": elapsed,
        }

    def train_step(self, images: torch.Tensor, masks: torch.Tensor, epoch: int, step: int) -> float:
        """Forward, backward, (clip,) optimizer and scheduler step; returns the batch loss."""
        cfg = self.cfg
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with builders.autocast(self.precision, self.device):
            logits = self.net(images)
            loss = self.loss_fn(logits, center_crop_like(masks, logits))
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; lower optimizer.lr, "
                "set grad_clip, or train in precision=fp32"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self._step_lr = self._decoder_lr()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return float(loss.detach())

    def _decoder_lr(self) -> float:
        groups = [g for g in self.optimizer.param_groups if g.get("name", "").startswith("decoder")]
        return float((groups or self.optimizer.param_groups)[0]["lr"])

    @property
    def eval_model(self) -> torch.nn.Module:
        """The model that is evaluated and saved: the weight average with ``ema``, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self) -> dict[str, Any]:
        """Metrics of the current model on the validation set (all processes together)."""
        cfg = self.cfg
        # DDP syncs norm statistics at each forward only: after the last step every process has its
        # own; all score with rank 0's, the model that is saved
        distributed.broadcast_buffers(self.eval_model)
        self.last_eval = evaluate(
            self.eval_model, self.val_loader, num_classes=cfg.model.num_classes, ignore_index=cfg.data.ignore_index,
            device=self.device, autocast=builders.autocast(self.precision, self.device), loss_fn=self.loss_fn,
            keep=cfg.overlays if self.dist.is_main else 0, channels_last=cfg.channels_last, tta=cfg.val_tta,
        )
        return {"val_loss": self.last_eval.loss, "val_pixels": self.last_eval.pixels, **self.last_eval.metrics}

    # ------------------------------------------------------------------ bookkeeping
    def _end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        value = record.get(self.cfg.monitor)  # None in epochs without validation
        improved = value is not None and not math.isnan(value) and (self.best is None or value > self.best)
        if improved:
            self.best, self.best_epoch = float(value), epoch + 1
            for r in self.history:
                r.pop("best", None)
            record["best"] = True
        rng_ranks = distributed.all_gather_object(checkpoint.get_rng_state())  # each process's, for --resume
        if self.dist.is_main:
            self.log(records.format_record(record))
            self._write_outputs(epoch, record, improved, rng_ranks)
        distributed.barrier()

    def _write_outputs(self, epoch: int, record: dict[str, Any], improved: bool,
                       rng_ranks: list[dict[str, Any]] | None = None) -> None:
        cfg = self.cfg
        records.write_history(self.history, self.out)
        if (epoch + 1) % cfg.plot_every == 0 or epoch + 1 == cfg.epochs:
            self._plot(epoch)
        metrics = {k: round(v, 4) for k, v in record.items() if k in ("miou", "fg_iou", "dice", "pixel_accuracy")}
        if improved:  # staged, and moved into best/ once the state that calls it best is committed
            checkpoint.stage_best(self.eval_model, self.out, epoch + 1, metrics=metrics)
        checkpoint.save_model_dir(self.eval_model, self.out / "last", metrics=metrics)
        state = checkpoint.state_dict(
            model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
            epoch=epoch, best=self.best, history=self.history, config=cfg.to_dict(), ema=self.ema,
            rng_ranks=rng_ranks,
        )
        checkpoint.atomic_save(state, self.out / checkpoint.STATE_NAME)  # the commit point of the epoch
        if improved:
            checkpoint.promote_best(self.out)

    def _plot(self, epoch: int) -> None:
        cfg = self.cfg
        title = f"{cfg.model.name} on {cfg.data.root if cfg.data.kind == 'folder' else cfg.data.kind}"
        plots.plot_curves(self.history, self.out / CURVES_NAME, title=title)
        if self.last_eval is not None and self.last_eval.samples:
            validated = next(r["epoch"] for r in reversed(self.history) if "val_loss" in r)
            plots.plot_overlays(self.last_eval.samples, self.out / OVERLAYS_NAME, mean=self.pre.mean,
                                std=self.pre.std, ignore_index=cfg.data.ignore_index,
                                title=f"{title}: validation images after epoch {validated}")

    def _result(self, elapsed: float) -> FitResult:
        evaluated = [r for r in self.history if "miou" in r]
        last = evaluated[-1] if evaluated else {}
        best = next((r for r in self.history if r.get("best")), last)
        return FitResult(
            metrics=dict(last), best_metrics=dict(best), best_epoch=self.best_epoch,
            output_dir=self.out, history=self.history, elapsed_s=elapsed,
        )
