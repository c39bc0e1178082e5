"""Training and evaluation engine: the step, the loop and its hooks, run directories."""

from pamc.engine.callbacks import Callback, LoggingCallback
from pamc.engine.checkpoint import Checkpoint, load_checkpoint, load_model_state, save_checkpoint
from pamc.engine.hooks import Hook
from pamc.engine.resume import load_last
from pamc.engine.rundir import (
    LAST_CHECKPOINT, RunDir, RunResults, TrainedRun, load_trained, make_model, restore_model,
)
from pamc.engine.trainer import (
    EvalLabels, RunResult, Trainer, evaluate, evaluate_at_alphas, fit, predict, resolve_device, train_one_epoch,
)

__all__ = [
    "Callback", "LoggingCallback", "Checkpoint", "load_checkpoint", "load_model_state",
    "save_checkpoint", "Hook", "RunDir", "RunResults", "TrainedRun", "load_trained", "EvalLabels",
    "RunResult", "Trainer", "evaluate", "evaluate_at_alphas", "fit", "make_model", "predict",
    "resolve_device", "restore_model", "train_one_epoch", "LAST_CHECKPOINT", "load_last",
]
