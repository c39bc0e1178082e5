"""Comparison runs: arms x seeds, each arm one run directory (the demo and the zoo).

An :class:`Arm` is one row of a comparison table: a method, the BoostLU alphas for training
and test, or another arm whose trained model it re-evaluates at its own test alpha. For each
seed, :func:`plan` turns the arms into :class:`ArmRun` specs (name, seed, config, run
directory), plain picklable data; :func:`run_arm` trains or evaluates one spec and is a pure
function of it (plus the dataset its config describes), so specs can be handed to worker
processes. :func:`run_arms` runs specs in order, skipping those whose run directory has
already finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pamc.config import RunConfig, replace
from pamc.data import DatasetBundle, build_dataset
from pamc.engine import RunDir, RunResults, evaluate_at_alphas, fit, load_trained

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
    (row,) = evaluate_at_alphas(trained, bundle.test, [alpha], ignore_unobserved=bundle.partial_test_labels,
                                class_frequency=bundle.class_frequency,
                                unannotated=spec.config.eval.unannotated_classes)
    results = RunResults(
        dataset=bundle.name, method=spec.config.method.name, train_alpha=spec.config.model.train_alpha,
        eval_alpha=alpha, best_epoch=from_run.best_epoch, best_val_map=from_run.best_val_map,
        test_map=row["map"], test_ap=row["ap"], test_group_map=row.get("group_map"), evaluated_from=str(source),
        num_classes_scored=row["num_classes_scored"], num_classes_left_out=row["num_classes_left_out"],
    )
    if spec.run_dir is not None:
        run = RunDir.create(spec.run_dir)
        run.write_config(spec.config)
        run.write_results(results)
    return results


def run_arms(specs: Sequence[ArmRun], *, dataset: DatasetBundle | None = None,
             callbacks_for: Callable[[str, int], Sequence[Any]] | None = None) -> list[RunResults]:
    """Results of every spec, in order: a finished run directory is read, not run again.

    With a shared ``dataset``, its training labels are put back to their first state before
    each training run (label-correcting methods edit them), as if each arm built its own.
    """
    initial = dataset.train.observed.state_dict() if dataset is not None else None
    trained: dict[tuple[str, int], Path] = {}
    results = []
    for spec in specs:
        if spec.reuse is None:
            trained[(spec.arm, spec.seed)] = Path(spec.config.output_dir)
        if spec.run_dir is not None and RunDir(spec.run_dir).is_finished:
            log.info("%s seed %d: finished before, skipped", spec.arm, spec.seed)
            results.append(RunDir(spec.run_dir).read_results())
            continue
        if dataset is not None and spec.reuse is None:
            dataset.train.observed.load_state_dict(initial)
        callbacks = callbacks_for(spec.arm, spec.seed) if callbacks_for and spec.reuse is None else ()
        source = trained.get((spec.reuse, spec.seed)) if spec.reuse is not None else None
        results.append(run_arm(spec, source, dataset=dataset, callbacks=callbacks))
        log.info("%s seed %d: test mAP %.2f", spec.arm, spec.seed, results[-1].test_map)
    return results
