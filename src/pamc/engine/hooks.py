"""What happens around the training step: hooks.

The :class:`~pamc.engine.trainer.Trainer` runs ``before_train``; then for each epoch
``before_epoch``, the step for each batch followed by ``after_step``, ``after_epoch``; and
finally ``after_train``, calling every registered hook in registration order. A hook keeps
what it needs (the loss, a label store, a run directory) from its constructor and reads the
loop's progress from the trainer it is called with:

* ``trainer.epoch``: the epoch running (1-based);
* ``trainer.progress``: batches done in it and running totals; in ``after_epoch`` it already
  points at the next epoch (where a checkpoint written then resumes);
* ``trainer.last``: the outcome of the step just done (:class:`StepOutcome`), in ``after_step``;
* ``trainer.record``: the epoch's metrics record (the last entry of ``trainer.history``),
  which ``after_epoch`` hooks add their numbers to;
* ``trainer.resumed``: whether the trainer's state was restored from a checkpoint.

A hook with a ``name`` has state that survives a resume: :meth:`Hook.state_dict` goes into
the training state under that name and :meth:`Hook.load_state_dict` gets it back. A new
per-epoch behaviour (an LR schedule, EMA weights, a label-correction pass) is one new hook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pamc.config import RunConfig
from pamc.engine.callbacks import Callback
from pamc.engine.distributed import (
    SINGLE_PROCESS, DistContext, all_gather_objects, label_store_digest, sync_label_updates,
)
from pamc.engine.frozen import freeze_backbone_for_epoch
from pamc.engine.rundir import RunDir
from pamc.errors import CheckpointError, PamcError
from pamc.losses import LossOutput, PartialLabelLoss

if TYPE_CHECKING:
    from pamc.engine.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepOutcome:
    """One training step: its index in the epoch (0-based), the batch's dataset indices (CPU),
    what the loss returned, its value, the batch size and whether the loss was finite (a
    non-finite batch is skipped and changes nothing)."""

    step: int
    index: Tensor
    output: LossOutput
    loss: float
    num_images: int
    finite: bool


class Hook:
    """No-op base of the training hooks; override what you need (see the module docstring)."""

    #: key of this hook's state in the training state; empty for a hook without state
    name: str = ""

    def before_train(self, trainer: "Trainer") -> None:
        pass

    def before_epoch(self, trainer: "Trainer") -> None:
        pass

    def after_step(self, trainer: "Trainer") -> None:
        pass

    def after_epoch(self, trainer: "Trainer") -> None:
        pass

    def after_train(self, trainer: "Trainer") -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class LossSchedule(Hook):
    """The loss's epoch schedule (LL's clean rate, APL's pseudo-labels, GR's weights) and its
    state: ``on_epoch_start`` before a fresh epoch, ``on_epoch_end`` after each, and the loss's
    :meth:`~pamc.losses.PartialLabelLoss.epoch_metrics` into the epoch's record."""

    name = "loss"

    def __init__(self, criterion: PartialLabelLoss) -> None:
        self.criterion = criterion

    def before_epoch(self, trainer: "Trainer") -> None:
        if trainer.progress.step == 0:  # a resumed epoch has had its start already
            self.criterion.on_epoch_start(trainer.epoch)

    def after_epoch(self, trainer: "Trainer") -> None:
        self.criterion.on_epoch_end(trainer.epoch)
        trainer.record.update(self.criterion.epoch_metrics())

    def state_dict(self) -> dict[str, Any]:
        return self.criterion.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.criterion.load_state_dict(state)


class BackboneFreeze(Hook):
    """Freezes the backbone (no gradients, BatchNorm in eval mode) in the epochs where
    ``frozen_in(epoch)`` holds: ROLE-LI's linear initialisation, frozen-features mode."""

    def __init__(self, model: nn.Module, frozen_in: Callable[[int], bool]) -> None:
        self.model = model
        self.frozen_in = frozen_in

    def before_epoch(self, trainer: "Trainer") -> None:
        freeze_backbone_for_epoch(self.model, self.frozen_in(trainer.epoch))


class LabelCorrection(Hook):
    """Writes the loss's permanent corrections (LL-Cp) into the training label store after each
    step; data-parallel, every rank applies every rank's corrections in rank order. Its state is
    the store in the store's own form (sparse stays sparse)."""

    name = "labels"

    def __init__(self, labels: Any, dist_ctx: DistContext = SINGLE_PROCESS) -> None:
        self.labels = labels
        self.dist_ctx = dist_ctx

    def after_step(self, trainer: "Trainer") -> None:
        last = trainer.last
        if last is None or not last.finite or last.output.corrections is None:
            return
        rows, cols = torch.nonzero(last.output.corrections, as_tuple=True)
        rows, cols = sync_label_updates(last.index[rows.cpu()], cols.cpu(), self.dist_ctx)
        if rows.numel():
            self.labels.set_positive(rows, cols)
            trainer.progress.corrected += int(rows.numel())

    def after_epoch(self, trainer: "Trainer") -> None:
        if self.dist_ctx.enabled:  # every rank's training labels, to show they agree
            trainer.record["world_size"] = self.dist_ctx.world_size
            trainer.record["label_digests"] = all_gather_objects(label_store_digest(self.labels), self.dist_ctx)

    def state_dict(self) -> dict[str, Any]:
        return self.labels.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels.load_state_dict(state)


class Selection(str, Enum):
    """Which epoch's weights a run keeps as ``best`` (one policy so far)."""

    BEST_VAL = "best_val"  # the epoch of the highest validation mAP (the first on ties)


class Validation(Hook):
    """Scores the model on the validation split after each epoch (``val_map``) and selects the
    epoch to keep (``is_best``) by ``policy``; keeps the selected epoch and its score."""

    name = "selection"

    def __init__(self, evaluate: Callable[[], dict[str, Any]], policy: Selection | str = Selection.BEST_VAL) -> None:
        self.evaluate = evaluate
        try:
            self.policy = Selection(policy)
        except ValueError:
            raise PamcError(f"unknown selection policy {policy!r}; choose one of: "
                            + ", ".join(s.value for s in Selection)) from None
        self.best_map, self.best_epoch = -1.0, 0

    def after_epoch(self, trainer: "Trainer") -> None:
        val_map = self.evaluate()["map"]
        trainer.record["val_map"] = val_map
        trainer.record["is_best"] = val_map > self.best_map  # Selection.BEST_VAL
        if trainer.record["is_best"]:
            self.best_map, self.best_epoch = val_map, trainer.epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best_map": self.best_map, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_map, self.best_epoch = float(state["best_map"]), int(state["best_epoch"])


class Checkpointer(Hook):
    """Writes ``last`` (weights + training state) at every epoch end and every ``every_steps``
    steps inside an epoch, and ``best`` when the selection picks the epoch. The epoch's
    ``last`` is committed first; a crash before ``best`` is written is repaired on resume."""

    def __init__(self, run: RunDir, model: nn.Module, cfg: RunConfig, class_names: tuple[str, ...],
                 criterion: PartialLabelLoss, selection: Validation, every_steps: int = 0) -> None:
        self.run, self.model, self.cfg, self.class_names = run, model, cfg, class_names
        self.criterion, self.selection, self.every_steps = criterion, selection, every_steps

    def before_train(self, trainer: "Trainer") -> None:
        if trainer.resumed:
            self._repair_best(trainer)

    def after_step(self, trainer: "Trainer") -> None:
        every = self.every_steps
        if every and trainer.global_step % every == 0 and trainer.progress.step < len(trainer.loader):
            self._save_last(trainer, trainer.epoch_rng)

    def after_epoch(self, trainer: "Trainer") -> None:
        self._save_last(trainer, trainer.loader.generator.get_state())
        if trainer.record["is_best"]:
            self._save_best(trainer.epoch)

    def _save_last(self, trainer: "Trainer", loader_rng: Tensor) -> None:
        self.run.save_last(self.model, self.cfg, self.class_names, trainer.training_state(loader_rng))

    def _save_best(self, epoch: int) -> None:
        self.run.save_best(self.model, self.cfg, self.class_names, {"epoch": epoch, "val_map": self.selection.best_map},
                           criterion_state=self.criterion.state_dict())

    def _repair_best(self, trainer: "Trainer") -> None:
        """Make ``best`` agree with the restored selection after a crash between the two writes."""
        best_epoch = self.selection.best_epoch
        if best_epoch == 0:
            return
        path = self.run.best_path
        on_disk = self.run.load_best().extra.get("epoch") if path.exists() else None
        if on_disk == best_epoch:
            return
        if trainer.progress.step == 0 and trainer.progress.epoch == best_epoch + 1:
            self._save_best(best_epoch)  # `last` was written at the end of the best epoch: it holds its weights
            return
        raise CheckpointError(f"{path} (epoch {on_disk}) does not match the training state (best epoch {best_epoch})")


class MetricsWriter(Hook):
    """Rewrites ``metrics.jsonl`` from the trainer's history after each epoch (and on resume)."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def before_train(self, trainer: "Trainer") -> None:
        if trainer.resumed:
            self.run.write_metrics(trainer.history)

    def after_epoch(self, trainer: "Trainer") -> None:
        self.run.write_metrics(trainer.history)


class ProgressReporter(Hook):
    """Forwards the loop's progress to :class:`~pamc.engine.callbacks.Callback` objects (log
    lines, the CLI's progress bars)."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = tuple(callbacks)

    def before_epoch(self, trainer: "Trainer") -> None:
        for cb in self.callbacks:
            cb.on_epoch_start(trainer.epoch, len(trainer.loader))

    def after_step(self, trainer: "Trainer") -> None:
        last = trainer.last
        for cb in self.callbacks:
            cb.on_batch_end(trainer.epoch, last.step, last.loss, last.num_images)

    def after_epoch(self, trainer: "Trainer") -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(trainer.epoch, trainer.record)
