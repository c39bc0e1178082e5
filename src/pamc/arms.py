"""Comparison runs: arms x seeds, each arm one run directory (the demo and the zoo).

An :class:`Arm` is one row of a comparison table: a method, the BoostLU alphas for training
and test, or another arm whose trained model it re-evaluates at its own test alpha. For each
seed, :func:`plan` turns the arms into :class:`ArmRun` specs (name, seed, config, run
directory), plain picklable data; :func:`run_arm` trains or evaluates one spec and is a pure
function of it (plus the dataset its config describes), so specs can be handed to worker
processes. :func:`run_arms` runs specs, in order or ``jobs`` at a time in worker processes
(each on one intra-op thread unless the config says otherwise), skipping those whose run
directory has already finished; the results are the same either way.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pamc.config import RunConfig, replace
from pamc.data import DatasetBundle, build_dataset
from pamc.engine import Callback, RunDir, RunResults, evaluate_at_alphas, fit, load_trained
from pamc.engine.checkpoint import atomic_write_text, make_dirs
from pamc.engine.phases import has_progress
from pamc.engine.resume import config_mismatch
from pamc.engine.threads import intra_op_threads, resolve_threads
from pamc.errors import PamcError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arm:
    """One row of a comparison table: what to train, and the BoostLU alpha at test time."""

    name: str
    method: str
    train_alpha: float
    eval_alpha: float
    reuse: str | None = None  # evaluate the model trained for this arm instead of training


@dataclass(frozen=True)
class ArmRun:
    """One arm at one seed. ``run_dir`` is ``None`` for an evaluation-only arm that leaves no
    directory; ``reuse`` names the arm (same seed, earlier in the plan) whose model it evaluates."""

    arm: str
    seed: int
    config: RunConfig
    run_dir: Path | None
    reuse: str | None = None


def slug(name: str) -> str:
    """A file-name form of an arm name: ``ll-r + BoostLU`` -> ``ll-r-boostlu``."""
    out = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    while "--" in out:
        out = out.replace("--", "-")
    return out


def plan(arms: Sequence[Arm], seeds: Sequence[int], base: RunConfig, runs_dir: Path,
         params_for: Callable[[str], dict[str, Any]], *, record_reused: bool = True) -> list[ArmRun]:
    """Every arm for every seed (seed-major), with configs from ``base``: the arm's method with
    ``params_for(method)``, its alphas, the seed, and ``runs_dir/<slug>-seed<seed>``."""
    specs = []
    for seed in seeds:
        for arm in arms:
            run_dir = Path(runs_dir) / f"{slug(arm.name)}-seed{seed}"
            cfg = replace(base, method={"name": arm.method, "params": params_for(arm.method)},
                          model__train_alpha=arm.train_alpha, model__eval_alpha=arm.eval_alpha,
                          train__seed=seed, output_dir=str(run_dir))
            keep = arm.reuse is None or record_reused
            specs.append(ArmRun(arm.name, seed, cfg, run_dir if keep else None, arm.reuse))
    return specs


def check_results_replaceable(output_dir: Path, names: Sequence[str]) -> None:
    """Refuse, before anything trains, to replace a table file (``names``) in ``output_dir``
    that pamc did not write: pamc's tables sit beside the ``runs/`` folder they summarise."""
    output_dir = Path(output_dir)
    if (output_dir / "runs").is_dir():
        return
    found = [n for n in names if (output_dir / n).exists()]
    if found:
        raise PamcError(f"{output_dir / found[0]} exists and was not written by pamc (no runs/ beside it); "
                        "choose another --output-dir")


def write_results_files(output_dir: Path, files: dict[str, str]) -> None:
    """Write the table files of a demo, zoo or reproduce folder atomically (a full disk is one
    ``cannot write PATH`` line, the previous file intact)."""
    make_dirs(Path(output_dir))
    for name, text in files.items():
        atomic_write_text(Path(output_dir) / name, text)


def run_arm(spec: ArmRun, source: Path | None = None, *, dataset: DatasetBundle | None = None,
            callbacks: Sequence[Any] = (), resume: bool = False) -> RunResults:
    """Train ``spec`` (or, for a reusing arm, test ``source``'s best model at the spec's eval
    alpha) on ``dataset`` (default: built from the spec's config) and return its results.
    ``resume``: continue the interrupted run in the spec's run directory."""
    bundle = dataset if dataset is not None else build_dataset(spec.config.data)
    if spec.reuse is None:
        fit(spec.config, dataset=bundle, callbacks=callbacks, resume=resume)
        return RunDir(spec.config.output_dir).read_results()
    if source is None:
        raise ValueError(f"arm {spec.arm!r} re-evaluates {spec.reuse!r}: give that arm's run directory")
    trained, from_run = load_trained(source), RunDir(source).read_results()
    alpha = spec.config.model.resolved_eval_alpha
    with intra_op_threads(resolve_threads(spec.config.train.threads, deterministic=spec.config.train.deterministic)):
        (row,) = evaluate_at_alphas(trained, bundle.test, [alpha], ignore_unobserved=bundle.partial_test_labels,
                                    class_frequency=bundle.class_frequency,
                                    unannotated=spec.config.eval.unannotated_classes)
    results = RunResults(
        dataset=bundle.name, method=spec.config.method.name, train_alpha=spec.config.model.train_alpha,
        eval_alpha=alpha, best_epoch=from_run.best_epoch, best_val_map=from_run.best_val_map,
        test_map=row["map"], test_ap=row["ap"], test_group_map=row.get("group_map"), evaluated_from=str(source),
        select=from_run.select, num_classes_scored=row["num_classes_scored"],
        num_classes_left_out=row["num_classes_left_out"],
    )
    if spec.run_dir is not None:
        run = RunDir.create(spec.run_dir)
        with run.discard_on_failure():
            run.write_config(spec.config)
            run.write_results(results)
    return results


def run_arms(specs: Sequence[ArmRun], *, dataset: DatasetBundle | None = None,
             callbacks_for: Callable[[str, int], Sequence[Any]] | None = None, jobs: int = 1,
             resume: bool = False) -> list[RunResults]:
    """Results of every spec, in order: a finished run directory is read, not run again (and
    refused if it was trained with another config); no existing run is ever removed.

    With ``jobs > 1`` up to ``jobs`` specs run at once, each in a worker process that builds
    its own dataset; progress reaches ``callbacks_for(arm, seed)`` in this process. An arm
    that fails stops the others (their unfinished run directories are cleaned up as an
    interrupted run's are) and the error names it. With a shared ``dataset`` (sequential only),
    its training labels are put back to their first state before each training run
    (label-correcting methods edit them), as if each arm built its own. ``resume``: a spec whose
    run directory holds an interrupted run continues it (exactly, from its ``last`` checkpoint)
    instead of being refused.
    """
    if jobs < 1:
        raise PamcError(f"--jobs must be >= 1, got {jobs}")
    results: list[RunResults | None] = [None] * len(specs)
    sources: list[Path | None] = []
    deps: dict[int, int] = {}  # a reusing spec -> the spec that trains its model
    trained: dict[tuple[str, int], int] = {}
    for i, spec in enumerate(specs):
        if spec.reuse is None:
            trained[(spec.arm, spec.seed)] = i
        source = trained.get((spec.reuse, spec.seed)) if spec.reuse is not None else None
        if source is not None:
            deps[i] = source
        sources.append(Path(specs[source].config.output_dir) if source is not None else None)
        if spec.run_dir is not None and RunDir(spec.run_dir).is_finished:
            _check_same_config(RunDir(spec.run_dir), spec.config)
            log.info("%s seed %d: finished before, skipped", spec.arm, spec.seed)
            results[i] = RunDir(spec.run_dir).read_results()
    todo = [i for i, r in enumerate(results) if r is None]
    resuming = {i for i in todo if resume and specs[i].reuse is None and has_progress(specs[i].run_dir)}
    if jobs == 1 or len(todo) <= 1:
        _run_in_order(specs, sources, todo, resuming, results, dataset, callbacks_for)
    else:
        _run_parallel(specs, sources, deps, todo, resuming, results, min(jobs, len(todo)), callbacks_for)
    return [r for r in results if r is not None]


def _run_in_order(specs: Sequence[ArmRun], sources: list[Path | None], todo: list[int], resuming: set[int],
                  results: list[RunResults | None], dataset: DatasetBundle | None,
                  callbacks_for: Callable[[str, int], Sequence[Any]] | None) -> None:
    initial = dataset.train.observed.state_dict() if dataset is not None else None
    for i in todo:
        spec = specs[i]
        if dataset is not None and spec.reuse is None:
            dataset.train.observed.load_state_dict(initial)
        callbacks = callbacks_for(spec.arm, spec.seed) if callbacks_for and spec.reuse is None else ()
        results[i] = run_arm(spec, sources[i], dataset=dataset, callbacks=callbacks, resume=i in resuming)
        log.info("%s seed %d: test mAP %.2f", spec.arm, spec.seed, results[i].test_map)


def _run_parallel(specs: Sequence[ArmRun], sources: list[Path | None], deps: dict[int, int], todo: list[int],
                  resuming: set[int], results: list[RunResults | None], jobs: int,
                  callbacks_for: Callable[[str, int], Sequence[Any]] | None) -> None:
    """``todo`` on ``jobs`` spawned workers; a reusing arm waits until its source has trained."""
    ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
    events = ctx.Queue()
    inboxes = [ctx.Queue() for _ in range(jobs)]
    level = logging.getLogger().level
    workers = [ctx.Process(target=_worker, args=(inbox, events, w, os.getpid(), level), daemon=True,
                           name=f"pamc-arm-{w}") for w, inbox in enumerate(inboxes)]
    pending = list(todo)
    busy: dict[int, int] = {}  # worker -> spec index
    callbacks: dict[int, Sequence[Any]] = {}
    try:
        for worker in workers:
            worker.start()
        while pending or busy:
            for w in range(jobs):
                ready = next((i for i in pending if i not in deps or results[deps[i]] is not None), None)
                if w in busy or ready is None:
                    continue
                pending.remove(ready)
                busy[w] = ready
                spec = specs[ready]
                callbacks[ready] = callbacks_for(spec.arm, spec.seed) if callbacks_for and spec.reuse is None else ()
                inboxes[w].put((ready, spec, sources[ready], ready in resuming))
            try:
                kind, w, i, payload = events.get(timeout=0.5)
            except queue.Empty:
                for w, i in busy.items():
                    if not workers[w].is_alive():
                        raise PamcError(f"arm {_name(specs[i])}: its worker process died "
                                        f"(exit code {workers[w].exitcode})")
                continue
            if kind == "callback":
                method, args = payload
                for cb in callbacks[i]:
                    getattr(cb, method)(*args)
                continue
            del busy[w]
            if kind == "done":
                results[i] = payload
                log.info("%s seed %d: test mAP %.2f", specs[i].arm, specs[i].seed, payload.test_map)
            elif kind == "error":
                raise PamcError(f"arm {_name(specs[i])}: {payload}")
            else:
                raise RuntimeError(f"arm {_name(specs[i])} failed in its worker process:\n{payload}")
    finally:
        _stop(workers, inboxes)


def _name(spec: ArmRun) -> str:
    return f"{spec.arm!r} seed {spec.seed}"


def _stop(workers: list[Any], inboxes: list[Any]) -> None:
    """Ask idle workers to exit, stop busy ones (SIGTERM: their runs clean up), reap all."""
    for worker, inbox in zip(workers, inboxes):
        if worker.is_alive():
            inbox.put(None)
    for worker in workers:
        if worker.pid is None:
            continue
        worker.join(timeout=1.0)
        if worker.is_alive():
            worker.terminate()
            worker.join(timeout=30.0)
        if worker.is_alive():
            worker.kill()
            worker.join()


class _Forward(Callback):
    """A worker's progress, sent to the parent process; stops the worker if the parent is gone."""

    def __init__(self, events: Any, worker: int, index: int, parent: int) -> None:
        self.events, self.worker, self.index, self.parent = events, worker, index, parent

    def _send(self, method: str, *args: Any) -> None:
        if os.getppid() != self.parent:  # the parent was killed: do not train on as an orphan
            os._exit(1)
        self.events.put(("callback", self.worker, self.index, (method, args)))

    def on_epoch_start(self, epoch: int, num_batches: int) -> None:
        self._send("on_epoch_start", epoch, num_batches)

    def on_batch_end(self, epoch: int, step: int, loss: float, num_images: int) -> None:
        self._send("on_batch_end", epoch, step, loss, num_images)

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        self._send("on_epoch_end", epoch, metrics)


def _stopped(*_: Any) -> None:
    logging.disable(logging.CRITICAL)  # the parent reports the arm that failed, this one says nothing
    sys.exit(143)


def _worker(inbox: Any, events: Any, worker: int, parent: int, log_level: int) -> None:
    """Run the specs sent to ``inbox`` until ``None``; SIGTERM unwinds (so a run cleans up)."""
    import torch

    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    events.cancel_join_thread()  # exiting never waits on progress the parent no longer reads
    torch.set_num_threads(1)
    datasets: dict[Any, tuple[DatasetBundle, Any]] = {}
    while (task := inbox.get()) is not None:
        index, spec, source, resume = task
        try:
            if spec.config.data not in datasets:
                bundle = build_dataset(spec.config.data)
                datasets[spec.config.data] = (bundle, bundle.train.observed.state_dict())
            bundle, initial = datasets[spec.config.data]
            bundle.train.observed.load_state_dict(initial)
            callbacks = [_Forward(events, worker, index, parent)] if spec.reuse is None else []
            events.put(("done", worker, index, run_arm(spec, source, dataset=bundle, callbacks=callbacks,
                                                           resume=resume)))
        except PamcError as exc:
            events.put(("error", worker, index, str(exc)))
        except Exception:
            events.put(("crash", worker, index, traceback.format_exc()))


def _check_same_config(run: RunDir, cfg: RunConfig) -> None:
    """Refuse to reuse a finished run whose config is not ``cfg``: every key ``cfg`` sets must
    hold the same value there."""
    mismatch = config_mismatch(run.read_config(), cfg, set_keys_only=True)
    if mismatch is not None:
        raise PamcError(f"{run.path} holds a finished run with another config ({mismatch}); "
                        "choose another --output-dir (pamc never removes an existing run)")
