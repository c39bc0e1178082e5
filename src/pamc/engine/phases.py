"""Two-phase training: a linear phase on a frozen backbone, then fine-tuning from its best epoch.

Cole et al.'s LinearInit (the paper's "ROLE + LI" row) first trains the classifier head (and
ROLE's label estimates) on a frozen backbone with its own learning rate and batch size, keeps
the epoch that scores best on validation, and then fine-tunes the whole network from those
weights with a fresh optimizer. With ``train.linear_init`` set, :func:`fit_in_two_phases` runs
exactly that as two ordinary runs: phase 1 in ``<output_dir>/linear-init`` (its method's
``linear_init_epochs`` = all of its epochs), phase 2 in ``<output_dir>`` itself, started with
``train.init_from`` = phase 1's best checkpoint (weights and loss state, no optimizer state) and
``linear_init_epochs = 0``. Each phase is resumable on its own; a finished phase 1 is reused.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Sequence

from pamc.config import RunConfig, replace
from pamc.engine.rundir import LOCK_FILE, RunDir
from pamc.errors import PamcError
from pamc.losses import LOSSES

LINEAR_INIT_DIR = "linear-init"


def phase_configs(cfg: RunConfig) -> tuple[RunConfig, RunConfig]:
    """(phase 1, phase 2) configs of a run with ``train.linear_init``."""
    li = cfg.train.linear_init
    if li is None:
        raise ValueError("phase_configs needs train.linear_init")
    if "linear_init_epochs" not in inspect.signature(LOSSES.get(cfg.method.name)).parameters:
        raise PamcError(f"train.linear_init needs a method with a linear phase (role-li); {cfg.method.name} has none")
    out = Path(cfg.output_dir)
    params = dict(cfg.method.params)
    first = replace(cfg, train__linear_init=None, train__epochs=li.epochs, train__lr=li.lr,
                    train__batch_size=li.batch_size, method__params={**params, "linear_init_epochs": li.epochs},
                    output_dir=str(out / LINEAR_INIT_DIR))
    second = replace(cfg, train__linear_init=None, train__init_from=str(RunDir(out / LINEAR_INIT_DIR).best_path),
                     method__params={**params, "linear_init_epochs": 0})
    return first, second


def fit_in_two_phases(cfg: RunConfig, *, dataset: Any = None, callbacks: Sequence[Any] = (),
                      resume: bool = False, overwrite: bool = False) -> Any:
    """Phase 1 (skipped when finished, resumed when ``resume`` and interrupted), then phase 2."""
    from pamc.engine.trainer import fit

    first, second = phase_configs(cfg)
    first_run, run = RunDir(first.output_dir), RunDir(second.output_dir)
    if not resume and not (run.path / LOCK_FILE).exists():  # the run's own directory holds phase 1
        RunDir.create(run.path, overwrite=overwrite).release()
    if overwrite or not first_run.is_finished:
        fit(first, dataset=dataset, callbacks=callbacks, resume=resume and first_run.has_last, overwrite=overwrite)
    return fit(second, dataset=dataset, callbacks=callbacks, resume=resume and run.has_last, overwrite=overwrite)


def has_progress(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds an interrupted run (of either phase) to continue."""
    return RunDir(run_dir).has_last or (Path(run_dir) / LINEAR_INIT_DIR).is_dir()
