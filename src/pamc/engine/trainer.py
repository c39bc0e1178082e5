"""The training engine: a short step, the :class:`Trainer` loop around it, evaluation, :func:`fit`.

Protocol (Kim et al. 2022/2023): Adam with the classifier head at ``head_lr_mult`` times the
backbone learning rate; the training pool is split 80/20 into train/validation; the model is
selected on validation mAP (full labels by default, optionally observed labels), or the last
epoch is kept when validation cannot rank models (``train.select``,
:func:`pamc.engine.hooks.resolve_selection`); the kept checkpoint is evaluated on the test set.
Everything around the step (the loss's schedule, label correction, validation and selection,
checkpoints, metrics, progress) is a hook (:mod:`pamc.engine.hooks`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from pamc.config import RunConfig
from pamc.data import ArrayLoader, DatasetBundle, DeviceTransform, Split, build_dataset
from pamc.data.catalog import resolve_data_facts
from pamc.engine.callbacks import Callback, LoggingCallback
from pamc.engine.checkpoint import check_compatible, load_checkpoint, load_model_state
from pamc.engine.distributed import (
    SINGLE_PROCESS, DistContext, ProcessGroupCollective, ShardedLoader, all_reduce_sum, broadcast_module_state,
    cleanup_distributed, eval_shard, evaluate_gathered, init_distributed, local_batch_size, run_on_main, wrap_ddp,
)
from pamc.engine.frozen import cache_frozen_features
from pamc.engine.hooks import (
    BackboneFreeze, Checkpointer, Hook, LabelCorrection, LossSchedule, MetricsWriter, ProgressReporter,
    StepOutcome, Validation, resolve_selection,
)
from pamc.engine.precision import Precision, eval_autocast, maybe_compile
from pamc.engine.resume import EpochProgress, TrainingState, capture_rng, config_mismatch, restore_rng
from pamc.engine.rundir import RunDir, RunResults, TrainedRun, make_model, restore_model
from pamc.engine.threads import intra_op_threads, resolve_threads
from pamc.errors import CheckpointError, PamcError, TrainingError
from pamc.evaluation import MultiLabelEvaluator
from pamc.losses import PartialLabelLoss, loss_from_config
from pamc.models import CAMClassifier

log = logging.getLogger(__name__)

__all__ = ["Trainer", "train_one_epoch", "evaluate", "predict", "fit", "RunResult", "EvalLabels",
           "evaluate_at_alphas", "make_model", "restore_model", "resolve_device", "seed_everything"]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PamcError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PamcError(f"device {name!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


class Trainer:
    """The training loop: the pieces of the step, the loop's position, and the hooks around it.

    ``model`` is what trains (possibly wrapped by DDP or ``torch.compile``). ``full_labels``
    feeds the full label matrix (``full``); ``flip`` augments; ``on_nonfinite`` is ``stop``
    (raise :class:`TrainingError`) or ``skip`` (drop the batch). Under ``dist_ctx`` the epoch's
    statistics are summed over ranks.
    """

    def __init__(self, model: nn.Module, criterion: PartialLabelLoss, optimizer: torch.optim.Optimizer,
                 loader: ArrayLoader, transform: DeviceTransform, *, precision: Precision | None = None,
                 full_labels: bool = False, flip: bool = True, on_nonfinite: str = "stop",
                 dist_ctx: DistContext = SINGLE_PROCESS) -> None:
        self.model, self.criterion, self.optimizer, self.loader, self.transform = (
            model, criterion, optimizer, loader, transform)
        self.precision = precision or Precision(transform.device)
        self.full_labels, self.flip, self.on_nonfinite, self.dist_ctx = full_labels, flip, on_nonfinite, dist_ctx
        self.hooks: list[Hook] = []
        self.epoch, self.global_step, self.resumed = 1, 0, False
        self.progress = EpochProgress(1)
        self.history: list[dict[str, Any]] = []
        self.record: dict[str, Any] = {}
        self.last: StepOutcome | None = None
        self.epoch_rng = loader.generator.get_state()

    def register(self, *hooks: Hook) -> None:
        names = [h.name for h in (*self.hooks, *hooks) if h.name]
        if len(names) != len(set(names)):
            raise ValueError(f"two hooks share a state name: {names}")
        self.hooks.extend(hooks)

    def call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self)

    def train(self, num_epochs: int) -> None:
        """Run (or continue) epochs ``progress.epoch .. num_epochs`` with the hooks around them."""
        self.call("before_train")
        for epoch in range(self.progress.epoch, num_epochs + 1):
            self.epoch = epoch
            if self.progress.step == 0:
                self.progress = EpochProgress(epoch)
            if isinstance(self.loader, ShardedLoader):
                self.loader.set_epoch(epoch)
            self.epoch_rng = self.loader.generator.get_state()  # the shuffle order is drawn from this
            self.model.train()
            self.criterion.train()
            self.call("before_epoch")
            self.record = {"epoch": epoch, **train_one_epoch(self)}
            self.history.append(self.record)
            self.progress = EpochProgress(epoch + 1)
            self.call("after_epoch")
        self.call("after_train")

    def training_state(self, loader_rng: torch.Tensor) -> TrainingState:
        """Everything a resume needs besides the weights; ``loader_rng``: the shuffle generator
        at the start of ``progress.epoch``."""
        return TrainingState(
            progress=EpochProgress(**vars(self.progress)), global_step=self.global_step, history=list(self.history),
            optimizer=self.optimizer.state_dict(), rng=capture_rng(loader_rng, self.transform),
            hooks={h.name: h.state_dict() for h in self.hooks if h.name},
        )

    def load_training_state(self, state: TrainingState, source: Path) -> None:
        """Inverse of :meth:`training_state`; a mismatch is a :class:`CheckpointError`."""
        try:
            self.optimizer.load_state_dict(state.optimizer)
            for hook in self.hooks:
                if hook.name:
                    hook.load_state_dict(state.hooks[hook.name])
            restore_rng(state.rng, self.loader, self.transform)
        except (PamcError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, IndexError) as exc:
            text = str(exc).strip().splitlines()
            raise CheckpointError(f"training state in {source} does not match this run: "
                                  f"{text[0] if text else type(exc).__name__}") from None
        self.progress, self.global_step, self.history = state.progress, state.global_step, state.history
        self.resumed = True


def train_one_epoch(trainer: Trainer) -> dict[str, float]:
    """Load, forward, loss, backward, step for each batch of the epoch not done yet; the
    trainer's hooks run after every step. Returns the epoch's statistics."""
    t, p = trainer, trainer.progress
    device = t.transform.device
    first_step, images_before, start = p.step, p.images, time.perf_counter()
    for step, batch in enumerate(t.loader):
        if step < first_step:  # a resumed epoch: these batches are done
            continue
        images = t.precision.prepare_input(t.transform(batch.images, flip=t.flip))
        targets = batch.full if t.full_labels else batch.observed
        if targets is None:
            raise PamcError("this method needs full labels, but the dataset has none")
        with t.precision.autocast():
            out = t.criterion(t.model(images), targets.to(device), batch.index.to(device))
        n, loss, finite = batch.images.shape[0], float(out.loss.detach()), bool(torch.isfinite(out.loss))
        if finite:
            t.optimizer.zero_grad(set_to_none=True)
            t.precision.backward_step(out.loss, t.optimizer, before_step=t.criterion.sync_gradients)
            p.loss_sum, p.images = p.loss_sum + loss * n, p.images + n
        else:
            where = f"epoch {t.epoch}, step {step + 1} of {len(t.loader)}"
            if t.on_nonfinite != "skip":
                raise TrainingError(f"non-finite loss ({loss}) at {where}")
            log.warning("non-finite loss (%s) at %s: batch skipped", loss, where)
            p.skipped += 1
        p.step, t.global_step = step + 1, t.global_step + 1
        t.last = StepOutcome(step, batch.index, out, loss, n, finite)
        t.call("after_step")
    loss_sum, images_total, images_new = all_reduce_sum(
        [p.loss_sum, float(p.images), float(p.images - images_before)], t.dist_ctx)
    return {"train_loss": loss_sum / max(images_total, 1),
            "train_images_per_s": images_new / max(time.perf_counter() - start, 1e-9),
            "corrected_labels": p.corrected, "skipped_batches": p.skipped}


class EvalLabels(str, Enum):
    """The labels :func:`evaluate` scores against."""

    FULL = "full"
    OBSERVED = "observed"


@torch.inference_mode()
def predict(model: CAMClassifier, loader: ArrayLoader, transform: DeviceTransform) -> np.ndarray:
    """Sigmoid scores (N, C) float32 for every sample of ``loader``, in loader order."""
    model.eval()
    chunks = [torch.sigmoid(model(transform(b.images))).float().cpu() for b in loader]
    return torch.cat(chunks).numpy()


@torch.inference_mode()
def evaluate(
    model: CAMClassifier,
    loader: ArrayLoader,
    transform: DeviceTransform,
    *,
    labels: EvalLabels | str = EvalLabels.FULL,
    ignore_unobserved: bool = False,
    class_frequency: np.ndarray | None = None,
    precision: Precision | None = None,
    dist_ctx: DistContext = SINGLE_PROCESS,
    unannotated: str = "skip",
) -> dict[str, Any]:
    """mAP (percent) and per-class AP of ``model`` on ``loader`` against ``labels`` (full or observed).

    ``unannotated``: classes without an annotated entry are left out (``skip``) or count 0.

    Under ``dist_ctx`` each rank scores its shard and every rank returns the metrics over
    all shards.
    """
    try:
        labels = EvalLabels(labels)
    except ValueError:
        raise PamcError(f"unknown evaluation labels {labels!r}; choose one of: full, observed") from None
    model.eval()
    evaluator = MultiLabelEvaluator(loader.split.observed.shape[1], ignore_unobserved=ignore_unobserved,
                                    class_frequency=class_frequency, unannotated=unannotated)
    for batch in loader:
        target = batch.full if labels is EvalLabels.FULL else batch.observed
        if target is None:
            raise PamcError("evaluation needs full labels, but this split has none")
        with eval_autocast(precision):
            images = transform(batch.images) if precision is None else precision.prepare_input(transform(batch.images))
            scores = torch.sigmoid(model(images).float()).cpu()
        evaluator.process(scores, target)
    return evaluate_gathered(evaluator, dist_ctx)


def evaluate_at_alphas(trained: TrainedRun, split: Split, alphas: Sequence[float], *,
                       ignore_unobserved: bool = False, batch_size: int = 256,
                       class_frequency: np.ndarray | None = None, unannotated: str = "skip") -> list[dict[str, Any]]:
    """``[{"alpha", "map", "ap": {class: AP}, "num_classes_scored", "num_classes_left_out"}]`` (and
    ``"group_map"`` with ``class_frequency``) of a trained run's model on ``split`` for each
    inference BoostLU alpha; the model's own alpha is restored afterwards."""
    model = trained.model
    loader = ArrayLoader(split, batch_size)
    transform = trained.preprocess.transform(next(model.parameters()).device)  # the run's normalisation
    original, rows = model.eval_alpha, []
    try:
        for alpha in alphas:
            model.set_eval_alpha(alpha)
            result = evaluate(model, loader, transform, ignore_unobserved=ignore_unobserved,
                              class_frequency=class_frequency, unannotated=unannotated)
            row = {"alpha": float(alpha), "map": result["map"], "ap": dict(zip(trained.class_names, result["ap"])),
                   "num_classes_scored": result["num_classes_scored"],
                   "num_classes_left_out": result["num_classes_left_out"]}
            if "group_map" in result:
                row["group_map"] = result["group_map"]
            rows.append(row)
    finally:
        model.set_eval_alpha(original)
    return rows


@dataclass
class RunResult:
    """What :func:`fit` produced."""

    output_dir: Path
    best_epoch: int
    best_val_map: float
    test_map: float
    history: list[dict[str, Any]]


def fit(
    cfg: RunConfig,
    *,
    dataset: DatasetBundle | None = None,
    callbacks: Sequence[Callback] = (LoggingCallback(),),
    resume: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Train, select on validation mAP, test the selected checkpoint; write the run directory.

    With ``resume=True``, ``cfg.output_dir`` is an interrupted run and training continues exactly
    where its ``last`` checkpoint stopped. A run that fails before its first ``last`` checkpoint
    leaves no run directory behind. ``overwrite`` replaces a previous pamc run in ``cfg.output_dir``
    (see :meth:`RunDir.create`). The run directory is locked while this process writes it. The run
    uses ``train.threads`` intra-op threads (the caller's count is restored afterwards). With
    ``train.linear_init`` the run has two phases (:mod:`pamc.engine.phases`).
    """
    if cfg.train.linear_init is not None:
        from pamc.engine.phases import fit_in_two_phases

        return fit_in_two_phases(cfg, dataset=dataset, callbacks=callbacks, resume=resume, overwrite=overwrite)
    with intra_op_threads(resolve_threads(cfg.train.threads, deterministic=cfg.train.deterministic)):
        return _fit(cfg, dataset, callbacks, resume, overwrite)


def _fit(cfg: RunConfig, dataset: DatasetBundle | None, callbacks: Sequence[Callback], resume: bool,
         overwrite: bool) -> RunResult:
    dist_ctx, device = init_distributed(resolve_device(cfg.train.device))
    if resume and dist_ctx.enabled:
        raise PamcError("--resume is supported for single-process runs only")
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    bundle = dataset if dataset is not None else build_dataset(cfg.data)
    cfg = resolve_data_facts(cfg, bundle)  # image size, normalisation, method defaults: recorded
    criterion = loss_from_config(cfg)
    model = make_model(cfg, bundle.num_classes).to(device)
    precision = Precision.from_config(cfg.train, device)
    precision.prepare_model(model)
    run = RunDir.for_resume(cfg.output_dir) if resume else RunDir(cfg.output_dir)
    resumed = _locked_resume_point(run, model, cfg, bundle) if resume else None
    criterion.bind(bundle.train.observed, cfg.train.epochs)  # the label store itself, never densified
    if cfg.train.init_from is not None and resumed is None:  # weights and loss state, fresh optimizer
        _init_from(cfg, model, criterion, bundle)
    criterion.to(device)
    if dist_ctx.enabled:  # LL's top-k, ROLE's estimates and APL's predictions span all ranks
        criterion.bind_collective(ProcessGroupCollective(dist_ctx))
    model, bundle, transform = _inputs(cfg, model, bundle, precision, dist_ctx)
    train_loader, val_loader, test_loader = _loaders(cfg, bundle, dist_ctx)
    trainer = Trainer(maybe_compile(wrap_ddp(model, device, dist_ctx), cfg.train.compile), criterion,
                      _optimizer(cfg, model, criterion), train_loader, transform, precision=precision,
                      full_labels=criterion.uses_full_labels, flip=cfg.train.flip and not cfg.train.frozen_features,
                      on_nonfinite=cfg.train.on_nonfinite, dist_ctx=dist_ctx)
    val_ignore = cfg.train.select_on == "observed" or bundle.partial_test_labels
    policy = resolve_selection(cfg.train.select, bundle.val.full if cfg.train.select_on == "full"
                               else bundle.val.observed, val_ignore)
    select = Validation(lambda: evaluate(
        model, val_loader, transform, labels=cfg.train.select_on, precision=precision, dist_ctx=dist_ctx,
        ignore_unobserved=val_ignore, unannotated=cfg.eval.unannotated_classes), policy)
    trainer.register(LossSchedule(criterion), BackboneFreeze(model, lambda epoch: cfg.train.frozen_features
                                                             or criterion.backbone_frozen(epoch)),
                     LabelCorrection(bundle.train.observed, dist_ctx), select)
    if dist_ctx.is_main:  # only rank 0 writes files or reports
        trainer.register(Checkpointer(run, model, cfg, bundle.class_names, criterion, select,
                                      cfg.train.checkpoint_every_steps), MetricsWriter(run), ProgressReporter(callbacks))
    if not resume:  # rank 0 creates the directory (and remembers what it created)
        run = run_on_main(lambda: RunDir.create(run.path, overwrite=overwrite), dist_ctx) or run
    with run.discard_on_failure() if dist_ctx.is_main else contextlib.nullcontext():
        if resumed is not None:
            trainer.load_training_state(resumed, run.last_path)
            log.info("resuming %s at epoch %d, step %d", run.path, trainer.progress.epoch, trainer.progress.step)
        elif dist_ctx.is_main:
            run.write_config(cfg)
        try:
            trainer.train(cfg.train.epochs)
        except TrainingError as exc:
            raise TrainingError(f"{exc}; {run.last_good()}") from None
        results = _test_selected(run, model, cfg, bundle, select, test_loader, transform, precision, dist_ctx)
    cleanup_distributed(dist_ctx)
    log.info("test mAP %.2f (best epoch %d)", results.test_map, results.best_epoch)
    return RunResult(run.path, results.best_epoch, results.best_val_map, results.test_map, trainer.history)


def _inputs(cfg: RunConfig, model: CAMClassifier, bundle: DatasetBundle, precision: Precision,
            dist_ctx: DistContext) -> tuple[nn.Module, DatasetBundle, DeviceTransform]:
    """The training input transform; with ``train.frozen_features`` the backbone runs once here
    and the head-only model and cached-feature splits replace the model and the data."""
    generator = torch.Generator().manual_seed(cfg.train.seed + dist_ctx.rank)
    # the batch is written in the model's memory format into one reused buffer (see DeviceTransform)
    transform = DeviceTransform(precision.device, cfg.data.mean, cfg.data.std, generator=generator,
                                channels_last=precision.channels_last, reuse_output=True)
    if cfg.train.frozen_features:  # pamc.engine.frozen
        return cache_frozen_features(model, bundle, transform)
    return model, bundle, transform


def _locked_resume_point(run: RunDir, model: nn.Module, cfg: RunConfig, bundle: DatasetBundle) -> TrainingState:
    """:func:`_resume_point` with the run locked (refused while another process writes it) and
    its orphan temporaries removed; the lock is released if this fails."""
    run.lock()
    try:
        run.remove_temp_files()
        return _resume_point(run, model, cfg, bundle)
    except BaseException:
        run.release()
        raise


def _resume_point(run: RunDir, model: nn.Module, cfg: RunConfig, bundle: DatasetBundle) -> TrainingState:
    """The training state of an interrupted run, after loading its ``last`` weights into ``model``."""
    last, state = run.load_last()
    check_compatible(last, run.last_path, backbone=cfg.model.backbone, class_names=bundle.class_names)
    mismatch = config_mismatch(last.config, cfg)
    if mismatch:
        raise CheckpointError(f"cannot resume {run.path}: {mismatch}")
    load_model_state(model, last, run.last_path)
    return state


def _init_from(cfg: RunConfig, model: nn.Module, criterion: PartialLabelLoss, bundle: DatasetBundle) -> None:
    """Start from ``train.init_from``'s weights and loss state (phase 2 of ``train.linear_init``)."""
    init = load_checkpoint(cfg.train.init_from)
    check_compatible(init, cfg.train.init_from, backbone=cfg.model.backbone, class_names=bundle.class_names)
    load_model_state(model, init, cfg.train.init_from)
    criterion.load_state_dict(init.criterion_state)


def _loaders(cfg: RunConfig, bundle: DatasetBundle, dist_ctx: DistContext) -> tuple[Any, ArrayLoader, ArrayLoader]:
    """Training (shuffled; sharded over ranks), validation and test loaders."""
    eval_bs = max(cfg.train.batch_size, 64)
    if not dist_ctx.enabled:
        train: Any = ArrayLoader(bundle.train, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                                 drop_last=cfg.train.drop_last)
        val, test = ArrayLoader(bundle.val, eval_bs), ArrayLoader(bundle.test, eval_bs)
    else:
        train = ShardedLoader(bundle.train, local_batch_size(cfg.train.batch_size, dist_ctx), dist_ctx,
                              seed=cfg.train.seed, drop_last=cfg.train.drop_last)
        val = ArrayLoader(bundle.val, eval_bs, indices=eval_shard(len(bundle.val), dist_ctx))
        test = ArrayLoader(bundle.test, eval_bs, indices=eval_shard(len(bundle.test), dist_ctx))
    if len(train) == 0:
        raise PamcError(f"train.drop_last with batch size {cfg.train.batch_size} leaves no batch of the "
                        f"{len(bundle.train)} training images")
    return train, val, test


def _optimizer(cfg: RunConfig, model: nn.Module, criterion: PartialLabelLoss) -> torch.optim.Optimizer:
    """Adam; the head at ``head_lr_mult`` x lr, the loss's own parameters (e.g. ROLE's estimates)
    at ``loss_lr_mult`` x lr (``head_lr_mult`` when unset)."""
    groups = model.param_groups(cfg.train.lr, cfg.train.head_lr_mult)
    extra = [p for p in criterion.parameters() if p.requires_grad]
    if extra:
        mult = cfg.train.head_lr_mult if cfg.train.loss_lr_mult is None else cfg.train.loss_lr_mult
        groups.append({"params": extra, "lr": cfg.train.lr * mult})
    return torch.optim.Adam(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def _test_selected(run: RunDir, model: nn.Module, cfg: RunConfig, bundle: DatasetBundle, select: Validation,
                   loader: ArrayLoader, transform: DeviceTransform, precision: Precision,
                   dist_ctx: DistContext) -> RunResults:
    """Score the selected (``best``) weights on the test split; rank 0 writes the results."""
    if dist_ctx.is_main:
        load_model_state(model, run.load_best(), run.best_path)
    broadcast_module_state(model, dist_ctx)  # the best weights, from rank 0
    test = evaluate(model, loader, transform, ignore_unobserved=bundle.partial_test_labels,
                    class_frequency=bundle.class_frequency, precision=precision, dist_ctx=dist_ctx,
                    unannotated=cfg.eval.unannotated_classes)
    results = RunResults(
        dataset=bundle.name, method=cfg.method.name, train_alpha=cfg.model.train_alpha,
        eval_alpha=cfg.model.resolved_eval_alpha, best_epoch=select.best_epoch, best_val_map=select.best_map,
        test_map=test["map"], test_ap=dict(zip(bundle.class_names, test["ap"])),
        test_group_map=test.get("group_map"),  # classes in 5 groups by training frequency, rarest first
        select=select.policy.value,
        num_classes_scored=test["num_classes_scored"], num_classes_left_out=test["num_classes_left_out"],
    )
    if dist_ctx.is_main:
        run.write_results(results)
    return results
