"""The training engine: plain functions for one epoch and for evaluation, and :func:`fit`.

Protocol (Kim et al. 2022/2023): Adam with the classifier head at ``head_lr_mult`` times the
backbone learning rate; the training pool is split 80/20 into train/validation; the model is
selected on validation mAP (full labels by default, optionally observed labels); the best
checkpoint is evaluated on the test set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml

from pamc.config import RunConfig, replace
from pamc.data import ArrayLoader, DatasetBundle, DeviceTransform, Split, build_dataset
from pamc.engine.callbacks import Callback, LoggingCallback
from pamc.engine.checkpoint import (
    Checkpoint, atomic_write_text, check_compatible, load_checkpoint, load_model_state, save_checkpoint,
)
from pamc.engine.resume import (
    LAST_CHECKPOINT, EpochProgress, TrainingState, capture_rng, config_mismatch, load_last,
    restore_training_state, save_last,
)
from pamc.engine.rundir import discard_on_failure, first_missing_ancestor
from pamc.engine.distributed import (
    SINGLE_PROCESS, DistContext, ProcessGroupCollective, ShardedLoader, all_gather_objects, all_reduce_sum,
    broadcast_module_state, cleanup_distributed, eval_shard, evaluate_gathered, init_distributed,
    label_store_digest, local_batch_size, run_on_main, sync_label_updates, wrap_ddp,
)
from pamc.engine.frozen import backbone_frozen_in, cache_frozen_features, freeze_backbone_for_epoch
from pamc.engine.precision import Precision, eval_autocast, maybe_compile
from pamc.errors import CheckpointError, OutputError, PamcError, TrainingError
from pamc.evaluation import MultiLabelEvaluator
from pamc.losses import PartialLabelLoss, loss_from_config
from pamc.models import CAMClassifier, build_model

log = logging.getLogger(__name__)

BEST_CHECKPOINT = "best.safetensors"
METRICS_FILE = "metrics.jsonl"
TEST_RESULTS = "test_results.json"
CONFIG_FILE = "config.yaml"


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


def train_one_epoch(
    model: CAMClassifier,
    criterion: PartialLabelLoss,
    optimizer: torch.optim.Optimizer,
    loader: ArrayLoader,
    transform: DeviceTransform,
    epoch: int,
    *,
    full_labels: bool = False,
    flip: bool = True,
    callbacks: Sequence[Callback] = (),
    progress: EpochProgress | None = None,
    on_nonfinite: str = "stop",
    after_step: Callable[[EpochProgress], None] | None = None,
    precision: Precision | None = None,
    dist_ctx: DistContext = SINGLE_PROCESS,
    freeze_backbone: bool = False,
) -> dict[str, float]:
    """One pass over ``loader``; applies label corrections returned by the loss.

    ``progress`` carries the running totals; when it says ``step`` batches are done (a
    resumed epoch), those first batches of the loader's order are skipped. A non-finite
    loss raises :class:`TrainingError` (``on_nonfinite="stop"``) or skips the batch
    (``"skip"``). ``after_step`` is called after every batch (step checkpoints).
    ``precision`` sets autocast, memory format and grad scaling (default fp32). Under
    ``dist_ctx`` the corrections of all ranks are applied on every rank and the returned
    statistics are summed over ranks.
    """
    precision = precision or Precision(transform.device)
    model.train()
    core = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    freeze_backbone_for_epoch(getattr(core, "module", core), freeze_backbone)  # DDP wrapper
    criterion.train()
    device = transform.device
    progress = progress if progress is not None else EpochProgress(epoch)
    first_step, images_before = progress.step, progress.images
    start = time.perf_counter()
    for cb in callbacks:
        cb.on_epoch_start(epoch, len(loader))
    for step, batch in enumerate(loader):
        if step < first_step:
            continue
        images = precision.prepare_input(transform(batch.images, flip=flip))
        targets = batch.full if full_labels else batch.observed
        if targets is None:
            raise PamcError("this method needs full labels, but the dataset has none")
        with precision.autocast():
            logits = model(images)
            out = criterion(logits, targets.to(device), batch.index.to(device))
        n = batch.images.shape[0]
        loss = float(out.loss.detach())
        if not torch.isfinite(out.loss):
            where = f"epoch {epoch}, step {step + 1} of {len(loader)}"
            if on_nonfinite != "skip":
                raise TrainingError(f"non-finite loss ({loss}) at {where}")
            log.warning("non-finite loss (%s) at %s: batch skipped", loss, where)
            progress.skipped += 1
        else:
            optimizer.zero_grad(set_to_none=True)
            precision.backward_step(out.loss, optimizer, before_step=criterion.sync_gradients)
            if out.corrections is not None:
                rows, cols = torch.nonzero(out.corrections, as_tuple=True)
                rows, cols = sync_label_updates(batch.index[rows.cpu()], cols.cpu(), dist_ctx)
                if rows.numel():
                    loader.split.observed.set_positive(rows, cols)
                    progress.corrected += int(rows.numel())
            progress.loss_sum += loss * n
            progress.images += n
        progress.step = step + 1
        if after_step is not None:
            after_step(progress)
        for cb in callbacks:
            cb.on_batch_end(epoch, step, loss, n)
    elapsed = time.perf_counter() - start
    loss_sum, images_total, images_new = all_reduce_sum(
        [progress.loss_sum, float(progress.images), float(progress.images - images_before)], dist_ctx)
    return {
        "train_loss": loss_sum / max(images_total, 1),
        "train_images_per_s": images_new / max(elapsed, 1e-9),
        "corrected_labels": progress.corrected,
        "skipped_batches": progress.skipped,
    }


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
    labels: str = "full",
    ignore_unobserved: bool = False,
    class_frequency: np.ndarray | None = None,
    precision: Precision | None = None,
    dist_ctx: DistContext = SINGLE_PROCESS,
    unannotated: str = "skip",
) -> dict[str, Any]:
    """mAP (percent) and per-class AP of ``model`` on ``loader`` against ``labels``.

    ``unannotated``: classes without an annotated entry are left out (``skip``) or count 0.

    Under ``dist_ctx`` each rank scores its shard and every rank returns the metrics over
    all shards.
    """
    model.eval()
    evaluator = MultiLabelEvaluator(loader.split.observed.shape[1], ignore_unobserved=ignore_unobserved,
                                    class_frequency=class_frequency, unannotated=unannotated)
    for batch in loader:
        target = batch.full if labels == "full" else batch.observed
        if target is None:
            raise PamcError("evaluation needs full labels, but this split has none")
        with eval_autocast(precision):
            images = transform(batch.images) if precision is None else precision.prepare_input(transform(batch.images))
            scores = torch.sigmoid(model(images).float()).cpu()
        evaluator.process(scores, target)
    return evaluate_gathered(evaluator, dist_ctx)


@dataclass
class RunResult:
    """What :func:`fit` produced."""

    output_dir: Path
    best_epoch: int
    best_val_map: float
    test_map: float
    history: list[dict[str, Any]]


def make_model(cfg: RunConfig, num_classes: int) -> CAMClassifier:
    return build_model(
        cfg.model.backbone,
        num_classes,
        pretrained=cfg.model.pretrained,
        train_alpha=cfg.model.train_alpha,
        eval_alpha=cfg.model.resolved_eval_alpha,
    )


def restore_model(ckpt: Checkpoint, path: str | Path) -> CAMClassifier:
    """Rebuild the model of a loaded checkpoint (read from ``path``), with its weights, on the CPU.

    The checkpoint holds every weight, so the backbone file the run was initialised from
    (``model.pretrained``) is not read again: it may have moved since training.
    """
    model = make_model(replace(ckpt.config, model__pretrained=None), len(ckpt.class_names))
    load_model_state(model, ckpt, path)
    return model


def prepare_output_dir(path: Path) -> Path:
    """Create the run directory; refuses to overwrite a finished or interrupted run."""
    path = Path(path)
    created = first_missing_ancestor(path)
    if (path / LAST_CHECKPOINT).exists() and not (path / TEST_RESULTS).exists():
        raise PamcError(f"output directory {path} holds an interrupted run; continue it with "
                        f"--resume {path} or choose another --output-dir")
    if (path / TEST_RESULTS).exists() or (path / BEST_CHECKPOINT).exists():
        raise PamcError(f"output directory {path} already holds a run; choose another --output-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise OutputError(f"cannot write to output directory {path}: {exc.strerror or exc}") from None
    return path


def fit(
    cfg: RunConfig,
    *,
    dataset: DatasetBundle | None = None,
    callbacks: Sequence[Callback] = (LoggingCallback(),),
    resume: bool = False,
) -> RunResult:
    """Train, select on validation mAP, test the best checkpoint; write the run directory.

    A ``last`` checkpoint with the full training state is written at every epoch end (and
    every ``train.checkpoint_every_steps`` batches). With ``resume=True``, ``cfg.output_dir``
    is an interrupted run and training continues exactly where its ``last`` checkpoint stopped.
    A run that fails before its first ``last`` checkpoint leaves no run directory behind.
    With ``train.linear_init`` the run has two phases (:mod:`pamc.engine.phases`).
    """
    if cfg.train.linear_init is not None:
        from pamc.engine.phases import fit_in_two_phases

        return fit_in_two_phases(cfg, dataset=dataset, callbacks=callbacks, resume=resume)
    criterion = loss_from_config(cfg)
    device = resolve_device(cfg.train.device)
    # --- distributed / precision setup (pamc.engine.distributed, pamc.engine.precision) ---
    dist_ctx, device = init_distributed(device)
    local_bs = local_batch_size(cfg.train.batch_size, dist_ctx)
    callbacks = tuple(callbacks) if dist_ctx.is_main else ()
    if resume and dist_ctx.enabled:
        raise PamcError("--resume is supported for single-process runs only")
    # ---
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    bundle = dataset if dataset is not None else build_dataset(cfg.data)
    model = make_model(cfg, bundle.num_classes).to(device)
    precision = Precision.from_config(cfg.train, device)
    precision.prepare_model(model)
    out = Path(cfg.output_dir)
    resumed: TrainingState | None = None
    if resume:
        if (out / TEST_RESULTS).exists():
            raise PamcError(f"run {out} has already finished ({TEST_RESULTS} exists); nothing to resume")
        last, resumed = load_last(out)
        check_compatible(last, out / LAST_CHECKPOINT, backbone=cfg.model.backbone, class_names=bundle.class_names)
        mismatch = config_mismatch(last.config, cfg)
        if mismatch:
            raise CheckpointError(f"cannot resume {out}: {mismatch}")
        load_model_state(model, last, out / LAST_CHECKPOINT)

    criterion.bind_dataset(len(bundle.train), bundle.num_classes,
                           torch.from_numpy(bundle.train.observed.to_numpy()), cfg.train.epochs)
    if cfg.train.init_from is not None and resumed is None:  # weights and loss state, fresh optimizer
        init = load_checkpoint(cfg.train.init_from)
        check_compatible(init, cfg.train.init_from, backbone=cfg.model.backbone, class_names=bundle.class_names)
        load_model_state(model, init, cfg.train.init_from)
        criterion.load_state_dict(init.criterion_state)
    if criterion.linear_init_epochs > cfg.train.epochs:  # equal: the whole run trains the head alone
        raise PamcError(f"{cfg.method.name} trains the head alone for {criterion.linear_init_epochs} epochs; "
                        f"train.epochs ({cfg.train.epochs}) must not be smaller (or set method.params.linear_init_epochs)")
    criterion.to(device)
    if dist_ctx.enabled:  # LL's top-k, ROLE's estimates and APL's predictions span all ranks
        criterion.bind_collective(ProcessGroupCollective(dist_ctx))
    generator = torch.Generator().manual_seed(cfg.train.seed + dist_ctx.rank)
    # the batch is written in the model's memory format into one reused buffer (see DeviceTransform)
    transform = DeviceTransform(device, generator=generator, channels_last=precision.channels_last,
                                reuse_output=True)
    frozen = cfg.train.frozen_features
    if frozen:  # the backbone runs once here; only the head trains (pamc.engine.frozen)
        model, bundle, transform = cache_frozen_features(model, bundle, transform)
    groups = model.param_groups(cfg.train.lr, cfg.train.head_lr_mult)
    extra_params = [p for p in criterion.parameters() if p.requires_grad]
    if extra_params:
        loss_mult = cfg.train.head_lr_mult if cfg.train.loss_lr_mult is None else cfg.train.loss_lr_mult
        groups.append({"params": extra_params, "lr": cfg.train.lr * loss_mult})
    optimizer = torch.optim.Adam(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    train_model = maybe_compile(wrap_ddp(model, device, dist_ctx), cfg.train.compile)

    train_loader = ArrayLoader(bundle.train, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                               drop_last=cfg.train.drop_last)
    if len(train_loader) == 0:
        raise PamcError(f"train.drop_last with batch size {cfg.train.batch_size} leaves no batch of the "
                        f"{len(bundle.train)} training images")
    eval_bs = max(cfg.train.batch_size, 64)
    val_loader = ArrayLoader(bundle.val, eval_bs)
    test_loader = ArrayLoader(bundle.test, eval_bs)
    select_labels = "full" if cfg.train.select_on == "full" else "observed"
    if dist_ctx.enabled:
        train_loader = ShardedLoader(bundle.train, local_bs, dist_ctx, seed=cfg.train.seed,
                                     drop_last=cfg.train.drop_last)
        val_loader = ArrayLoader(bundle.val, eval_bs, indices=eval_shard(len(bundle.val), dist_ctx))
        test_loader = ArrayLoader(bundle.test, eval_bs, indices=eval_shard(len(bundle.test), dist_ctx))
    labels = bundle.train.observed
    main = dist_ctx.is_main  # only rank 0 writes files

    history: list[dict[str, Any]] = []
    best_map, best_epoch, global_step = -1.0, 0, 0
    progress = EpochProgress(1)
    written = (CONFIG_FILE, METRICS_FILE, BEST_CHECKPOINT, TEST_RESULTS)
    created = None if resume or not main else first_missing_ancestor(out)
    if not resume:
        run_on_main(lambda: prepare_output_dir(out), dist_ctx)
    guard = discard_on_failure(out, created, written, keep_if=LAST_CHECKPOINT) if main else contextlib.nullcontext()
    with guard:
        if resumed is None:
            if main:
                atomic_write_text(out / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        else:
            restore_training_state(resumed, out / LAST_CHECKPOINT, optimizer=optimizer, criterion=criterion,
                                   labels=labels, loader=train_loader, transform=transform)
            progress, global_step = resumed.progress, resumed.global_step
            best_map, best_epoch, history = resumed.best_map, resumed.best_epoch, resumed.history
            _repair_best(out, model, cfg, bundle.class_names, resumed)
            _write_metrics(out, history)
            log.info("resuming %s at epoch %d, step %d", out, progress.epoch, progress.step)

        def checkpoint_last(at: EpochProgress, loader_rng: torch.Tensor) -> None:
            if not main:
                return
            save_last(out, model, cfg, bundle.class_names, TrainingState(
                progress=at, global_step=global_step, best_map=best_map, best_epoch=best_epoch,
                history=history, optimizer=optimizer.state_dict(), criterion=criterion.state_dict(),
                train_labels=torch.from_numpy(labels.to_numpy()), rng=capture_rng(loader_rng, transform),
            ))

        every = cfg.train.checkpoint_every_steps
        for epoch in range(progress.epoch, cfg.train.epochs + 1):
            if progress.step == 0:
                progress = EpochProgress(epoch)
                criterion.on_epoch_start(epoch)
            if isinstance(train_loader, ShardedLoader):
                train_loader.set_epoch(epoch)
            epoch_rng = train_loader.generator.get_state()  # the shuffle order is drawn from this

            def after_step(p: EpochProgress) -> None:
                nonlocal global_step
                global_step += 1
                if every and global_step % every == 0 and p.step < len(train_loader):
                    checkpoint_last(p, epoch_rng)

            try:
                train_stats = train_one_epoch(
                    train_model, criterion, optimizer, train_loader, transform, epoch,
                    full_labels=criterion.uses_full_labels, flip=cfg.train.flip and not frozen, callbacks=callbacks,
                    freeze_backbone=frozen or backbone_frozen_in(epoch, criterion.linear_init_epochs),
                    progress=progress, on_nonfinite=cfg.train.on_nonfinite, after_step=after_step,
                    precision=precision, dist_ctx=dist_ctx,
                )
            except TrainingError as exc:
                raise TrainingError(f"{exc}; {_last_good(out)}") from None
            criterion.on_epoch_end(epoch)
            val = evaluate(model, val_loader, transform, labels=select_labels,
                           ignore_unobserved=select_labels == "observed" or bundle.partial_test_labels,
                           precision=precision, dist_ctx=dist_ctx, unannotated=cfg.eval.unannotated_classes)
            record = {"epoch": epoch, **train_stats, "val_map": val["map"]}
            if dist_ctx.enabled:  # every rank's training labels, to show they agree
                record["world_size"] = dist_ctx.world_size
                record["label_digests"] = all_gather_objects(label_store_digest(bundle.train.observed), dist_ctx)
            if hasattr(criterion, "clean_rate"):
                record["clean_rate"] = float(criterion.clean_rate)
            record["is_best"] = val["map"] > best_map
            if record["is_best"]:
                best_map, best_epoch = val["map"], epoch
            history.append(record)
            progress = EpochProgress(epoch + 1)
            # commit the epoch first: a crash before `best` is written is repaired on resume
            checkpoint_last(progress, train_loader.generator.get_state())
            if record["is_best"] and main:
                save_checkpoint(out / BEST_CHECKPOINT, model, cfg, bundle.class_names,
                                {"epoch": epoch, "val_map": best_map}, criterion_state=criterion.state_dict())
            if main:
                _write_metrics(out, history)
            for cb in callbacks:
                cb.on_epoch_end(epoch, record)

        if main:
            ckpt = load_checkpoint(out / BEST_CHECKPOINT)
            load_model_state(model, ckpt, out / BEST_CHECKPOINT)
        broadcast_module_state(model, dist_ctx)  # the best weights, from rank 0
        test = evaluate(model, test_loader, transform, ignore_unobserved=bundle.partial_test_labels,
                        class_frequency=bundle.class_frequency, precision=precision, dist_ctx=dist_ctx,
                        unannotated=cfg.eval.unannotated_classes)
        results = {
            "dataset": bundle.name,
            "method": cfg.method.name,
            "train_alpha": cfg.model.train_alpha,
            "eval_alpha": cfg.model.resolved_eval_alpha,
            "best_epoch": best_epoch,
            "best_val_map": best_map,
            "test_map": test["map"],
            "test_ap": dict(zip(bundle.class_names, test["ap"])),
            "num_classes_scored": test["num_classes_scored"],
            "num_classes_left_out": test["num_classes_left_out"],
        }
        if "group_map" in test:  # classes in 5 groups by training frequency, rarest first
            results["test_group_map"] = test["group_map"]
        if main:
            atomic_write_text(out / TEST_RESULTS, json.dumps(results, indent=2))
    cleanup_distributed(dist_ctx)
    log.info("test mAP %.2f (best epoch %d)", test["map"], best_epoch)
    return RunResult(out, best_epoch, best_map, test["map"], history)


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl: one JSON line per finished epoch, rewritten atomically."""
    atomic_write_text(out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history))


def _last_good(out: Path) -> str:
    path = out / LAST_CHECKPOINT
    if not path.exists():
        return "no checkpoint had been written yet, so nothing is kept"
    extra = load_checkpoint(path).extra
    return (f"the last good checkpoint {path} (epoch {extra.get('epoch')}, step {extra.get('step')}) is kept; "
            "set train.on_nonfinite=skip to skip such batches")


def _repair_best(out: Path, model: CAMClassifier, cfg: RunConfig, class_names: tuple[str, ...],
                 state: TrainingState) -> None:
    """Make ``best`` agree with the training state after a crash between the two writes."""
    if state.best_epoch == 0:
        return
    path = out / BEST_CHECKPOINT
    on_disk = load_checkpoint(path).extra.get("epoch") if path.exists() else None
    if on_disk == state.best_epoch:
        return
    if state.progress.step == 0 and state.progress.epoch == state.best_epoch + 1:
        # `last` was written at the end of the best epoch, so it holds the best weights
        save_checkpoint(path, model, cfg, class_names, {"epoch": state.best_epoch, "val_map": state.best_map},
                        criterion_state=state.criterion)
        return
    raise CheckpointError(f"{path} (epoch {on_disk}) does not match the training state (best epoch {state.best_epoch})")
