"""Fine-tuning: typed configs, the fit loop, checkpoints, DDP, evaluation and plots.

    >>> from unetzoo.train import fit, load_config
    >>> result = fit(load_config("configs/nuclei_demo.yaml", ["epochs=2"]))
    >>> result.metrics["fg_iou"], result.best_dir

The command line equivalents are ``unetzoo train --config FILE [key=value ...]``,
``unetzoo eval MODEL_DIR --data ROOT`` and ``unetzoo demo``.
"""

from unetzoo.train.config import ConfigError, TrainConfig, apply_overrides, load_config
from unetzoo.train.engine import FitResult, Trainer, fit
from unetzoo.train.evaluate import EvalResult, evaluate

__all__ = [
    "ConfigError",
    "EvalResult",
    "FitResult",
    "TrainConfig",
    "Trainer",
    "apply_overrides",
    "evaluate",
    "fit",
    "load_config",
]
