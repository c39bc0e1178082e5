"""A run directory as one object: every file name of a run, and how each file is read and written.

A run directory holds::

    config.yaml          the resolved config (RunConfig)
    metrics.jsonl        one JSON record per finished epoch
    last.safetensors     the latest weights, plus last.state-<token>.pt (the training state)
    best.safetensors     the weights selected on validation
    test_results.json    the results record (RunResults) of a finished run

:class:`RunDir` is the only code that knows these names. A run directory is created with
:meth:`RunDir.create` (a new run), reopened with :meth:`RunDir.for_resume` (an interrupted
run) or :meth:`RunDir.open` (an existing run, read only): the checks a directory must pass
before pamc writes into it live in these three constructors. A run that fails before its
first ``last`` checkpoint removes what it created (:meth:`RunDir.discard_on_failure`); once a
``last`` checkpoint exists the directory is kept for ``pamc train --resume``.

Ownership: pamc writes only into a missing or empty directory, or into one it created (marked
by its lock file ``.pamc.lock``); a non-empty directory without it is refused, and nothing
in it is touched. ``overwrite=True`` replaces a previous pamc run, removing only pamc's files
of it. While a process writes a run it holds the OS lock on ``.pamc.lock`` (``filelock``,
released by the kernel when the process dies): a second writer, or a ``--resume`` of a live
run, is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from pamc.config import RunConfig, checkpoint_config, load_config, replace
from pamc.engine.checkpoint import (
    Checkpoint, atomic_write_text, check_compatible, load_checkpoint, load_model_state, save_checkpoint,
)
from pamc.errors import ConfigError, OutputError, PamcError

if TYPE_CHECKING:
    from pamc.data import DatasetBundle, Split
    from pamc.data.preprocess import Preprocess
    from pamc.engine.resume import TrainingState
    from pamc.models import CAMClassifier

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
BEST_CHECKPOINT = "best.safetensors"
LAST_CHECKPOINT = "last.safetensors"
RESULTS_FILE = "test_results.json"
STATE_PREFIX = "last.state-"  # + token + ".pt": the training state named by last.safetensors
LOCK_FILE = ".pamc.lock"  # marks a directory pamc created; locked while a process writes the run


@dataclass(frozen=True)
class RunResults:
    """``test_results.json``: what a finished run (or an evaluation of one at another alpha) scored.

    Every writer (``fit``, the zoo's inference-only rows) fills the same keys; ``evaluated_from``
    names the trained run whose best checkpoint was evaluated, ``None`` for a trained run.
    ``test_group_map`` is the mAP of classes in groups of rising training frequency (OpenImages),
    ``None`` when the dataset has no class frequencies. ``select`` is the policy that chose
    ``best_epoch`` (``train.select`` resolved: ``best_val`` or ``last``; ``None`` in a record
    written before pamc recorded it). ``num_classes_scored`` /
    ``num_classes_left_out``: how many classes the test mAP averages and how many it left out
    for having no annotated test entry (``eval.unannotated_classes: skip``).
    """

    dataset: str
    method: str
    train_alpha: float
    eval_alpha: float
    best_epoch: int
    best_val_map: float
    test_map: float
    test_ap: dict[str, float] = field(default_factory=dict)
    test_group_map: list[float] | None = None
    evaluated_from: str | None = None
    select: str | None = None
    num_classes_scored: int | None = None
    num_classes_left_out: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunResults":
        return cls(
            dataset=str(values["dataset"]), method=str(values["method"]),
            train_alpha=float(values["train_alpha"]), eval_alpha=float(values["eval_alpha"]),
            best_epoch=int(values["best_epoch"]), best_val_map=float(values["best_val_map"]),
            test_map=float(values["test_map"]), test_ap=dict(values.get("test_ap") or {}),
            test_group_map=values.get("test_group_map"), evaluated_from=values.get("evaluated_from"),
            select=None if values.get("select") is None else str(values["select"]),
            num_classes_scored=values.get("num_classes_scored"), num_classes_left_out=values.get("num_classes_left_out"),
        )


class RunDir:
    """One run directory; see the module docstring for its files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.created: Path | None = None  # the outermost directory :meth:`create` made, if any
        self._lock: Any = None  # the held ``filelock.FileLock``, if any

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, *, overwrite: bool = False) -> "RunDir":
        """A new run directory (created and locked).

        Refuses a non-empty directory pamc did not create, and one that holds a finished or
        interrupted run unless ``overwrite`` (then only pamc's files of that run are removed).
        """
        run = cls(path)
        created = first_missing_ancestor(run.path)
        run._check_owned()
        if not overwrite:
            run._check_no_run()
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            probe = run.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise OutputError(f"cannot write to output directory {run.path}: {exc.strerror or exc}") from None
        run.lock()
        try:
            run._check_owned()  # again, under the lock: another process may have written meanwhile
            if overwrite:
                run.remove_files()
            else:
                run._check_no_run()
        except BaseException:
            run.release()
            raise
        run.created = created
        return run

    def _check_owned(self) -> None:
        if not self.path.is_dir() or (self.path / LOCK_FILE).exists():
            return
        if any(self.path.iterdir()):
            raise PamcError(f"output directory {self.path} is not empty and is not a pamc run directory; "
                            "pamc writes only into a new or empty directory: choose another --output-dir")

    def _check_no_run(self) -> None:
        if self.has_last and not self.is_finished:
            raise PamcError(f"output directory {self.path} holds an interrupted run; continue it with "
                            f"--resume {self.path}, replace it with --overwrite or choose another --output-dir")
        if self.is_finished or self.best_path.exists():
            raise PamcError(f"output directory {self.path} already holds a run; replace it with --overwrite "
                            "or choose another --output-dir")

    # --- ownership and locking ----------------------------------------------------------

    def lock(self) -> None:
        """Hold the run's OS lock (non-blocking): refuse if another process is writing this run."""
        from filelock import FileLock, Timeout

        if getattr(self, "_lock", None) is not None:
            return
        lock = FileLock(str(self.path / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise PamcError(f"run directory {self.path} is in use by another pamc process; "
                            "wait for it to finish or choose another --output-dir") from None
        except OSError as exc:
            raise OutputError(f"cannot write {self.path / LOCK_FILE}: {exc.strerror or exc}") from None
        self._lock = lock

    def release(self) -> None:
        """Release the run's lock, if this object holds it."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.release()

    def pamc_files(self) -> list[Path]:
        """The files of this directory that pamc writes (its lock file aside), and leftover temporaries."""
        names = (self.config_path, self.metrics_path, self.best_path, self.last_path, self.results_path)
        return [p for p in names if p.exists()] + self.state_files() + self.temp_files()

    def temp_files(self) -> list[Path]:
        """Temporary files of interrupted atomic writes (``.NAME.XXXX.tmp``)."""
        return sorted(self.path.glob(".*.tmp"))

    def remove_files(self) -> None:
        """Remove pamc's files of a previous run (``--overwrite``); any other file stays."""
        for path in self.pamc_files():
            path.unlink(missing_ok=True)

    def remove_temp_files(self) -> None:
        """Remove temporaries an interrupted process left (call with the lock held)."""
        for path in self.temp_files():
            log.info("removing %s, left by an interrupted write", path)
            path.unlink(missing_ok=True)

    @classmethod
    def for_resume(cls, path: str | Path) -> "RunDir":
        """An interrupted run to continue: it exists and has not finished."""
        run = cls.open(path)
        if run.is_finished:
            raise PamcError(f"run {run.path} has already finished ({RESULTS_FILE} exists); nothing to resume")
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run directory (it has a config)."""
        run = cls(path)
        if not run.path.is_dir():
            raise PamcError(f"run directory not found: {run.path}")
        if not run.config_path.is_file():
            raise PamcError(f"{run.path} has no {CONFIG_FILE}; it is not a pamc run directory")
        return run

    # --- file names ---------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def best_path(self) -> Path:
        return self.path / BEST_CHECKPOINT

    @property
    def last_path(self) -> Path:
        return self.path / LAST_CHECKPOINT

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def is_finished(self) -> bool:
        return self.results_path.exists()

    @property
    def has_last(self) -> bool:
        return self.last_path.exists()

    def state_files(self) -> list[Path]:
        """The training-state files beside ``last`` (one after a commit; see ``pamc.engine.resume``)."""
        return sorted(self.path.glob(f"{STATE_PREFIX}*.pt"))

    # --- config, metrics, results -------------------------------------------------------

    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    def read_config(self) -> RunConfig:
        """The resolved config, pointed at this directory."""
        try:
            cfg = load_config(self.config_path)
        except ConfigError as exc:
            raise ConfigError(f"{self.config_path}: {exc}") from None
        return replace(cfg, output_dir=str(self.path))

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """One JSON line per finished epoch, rewritten atomically."""
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in history))

    def read_metrics(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines()]

    def write_results(self, results: RunResults) -> None:
        atomic_write_text(self.results_path, results.to_json())

    def read_results(self) -> RunResults:
        try:
            return RunResults.from_dict(json.loads(self.results_path.read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise PamcError(f"{self.results_path} is not a pamc results file") from None

    # --- checkpoints --------------------------------------------------------------------

    def save_best(self, model: torch.nn.Module, cfg: RunConfig, class_names: tuple[str, ...], extra: dict[str, Any],
                  criterion_state: dict[str, torch.Tensor] | None = None) -> None:
        save_checkpoint(self.best_path, model, cfg, class_names, extra, criterion_state=criterion_state)

    def load_best(self) -> Checkpoint:
        return load_checkpoint(self.best_path)

    def save_last(self, model: torch.nn.Module, cfg: RunConfig, class_names: tuple[str, ...],
                  state: "TrainingState") -> None:
        from pamc.engine.resume import save_last

        save_last(self.path, model, cfg, class_names, state)

    def load_last(self) -> "tuple[Checkpoint, TrainingState]":
        from pamc.engine.resume import load_last

        return load_last(self.path)

    def last_good(self) -> str:
        """A phrase saying which ``last`` checkpoint a failed run keeps, if any."""
        if not self.has_last:
            return "no checkpoint had been written yet, so nothing is kept"
        extra = load_checkpoint(self.last_path).extra
        return (f"the last good checkpoint {self.last_path} (epoch {extra.get('epoch')}, step {extra.get('step')}) "
                "is kept; set train.on_nonfinite=skip to skip such batches")

    @contextlib.contextmanager
    def discard_on_failure(self) -> Iterator[None]:
        """On any exception, remove the directories :meth:`create` made or, in a directory that
        existed before, the files the run wrote, unless a ``last`` checkpoint exists; then re-raise.
        The run's lock is released on leaving, either way."""
        try:
            yield
        except BaseException as exc:
            if self.has_last:  # an error's own line is the message; an interrupt gets this one
                log.log(logging.INFO if isinstance(exc, PamcError) else logging.WARNING,
                        "run stopped; %s is kept for --resume", self.last_path)
                self.release()
            elif self.created is not None:
                self.release()
                shutil.rmtree(self.created, ignore_errors=True)
            elif self.path.is_dir():
                for path in self.pamc_files():
                    path.unlink(missing_ok=True)
                self.release()
                if not any(p.name != LOCK_FILE for p in self.path.iterdir()):
                    (self.path / LOCK_FILE).unlink(missing_ok=True)  # the directory is as empty as it was
            raise
        finally:
            self.release()


def first_missing_ancestor(path: Path) -> Path | None:
    """The outermost directory that ``path.mkdir(parents=True)`` would create, if any."""
    path = Path(path).absolute()
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing = candidate
    return missing


# --- a finished run, ready to use ----------------------------------------------------------


@dataclass
class TrainedRun:
    """The best model of a run (in eval mode), its config and class names, and where it came from.

    ``run`` is ``None`` when a bare checkpoint file was loaded; ``bundle`` is the dataset when
    :func:`load_trained` was asked for it.
    """

    model: "CAMClassifier"
    config: RunConfig
    class_names: tuple[str, ...]
    path: Path
    run: RunDir | None = None
    bundle: "DatasetBundle | None" = None

    @property
    def preprocess(self) -> "Preprocess":
        """How an image file becomes this model's input (the run's image size and normalisation)."""
        from pamc.data.preprocess import preprocess_for

        return preprocess_for(self.config)

    @property
    def image_size(self) -> int:
        return self.preprocess.image_size

    def dataset(self, data_root: str | None = None) -> "DatasetBundle":
        """The dataset the model was trained on (``data_root``: its new place, if it moved)."""
        if self.bundle is not None and data_root is None:
            return self.bundle
        return _dataset_of(self.config, self.class_names, self.path, data_root)

    def split(self, name: str, data_root: str | None = None) -> "Split":
        """The ``name`` split (train, val or test) of :meth:`dataset`."""
        if name not in ("train", "val", "test"):
            raise PamcError(f"unknown split {name!r}; choose one of: test, train, val")
        return getattr(self.dataset(data_root), name)


def _dataset_of(cfg: RunConfig, class_names: tuple[str, ...], path: Path, data_root: str | None) -> "DatasetBundle":
    """The dataset of a checkpoint's config, refused unless it has the checkpoint's classes."""
    from pamc.data import build_dataset

    bundle = build_dataset((cfg if data_root is None else replace(cfg, data__root=data_root)).data)
    check_compatible(Checkpoint({}, cfg, class_names, {}), path, backbone=cfg.model.backbone,
                     class_names=bundle.class_names)
    return bundle


def make_model(cfg: RunConfig, num_classes: int) -> "CAMClassifier":
    """The model ``cfg`` describes, freshly initialised (from ``model.pretrained`` if set)."""
    from pamc.models import build_model

    return build_model(cfg.model.backbone, num_classes, pretrained=cfg.model.pretrained,
                       train_alpha=cfg.model.train_alpha, eval_alpha=cfg.model.resolved_eval_alpha)


def restore_model(ckpt: Checkpoint, path: str | Path) -> "CAMClassifier":
    """Rebuild the model of a loaded checkpoint (read from ``path``), with its weights, on the CPU.

    The checkpoint holds every weight, so the backbone file the run was initialised from
    (``model.pretrained``) is not read again: it may have moved since training.
    """
    model = make_model(replace(ckpt.config, model__pretrained=None), len(ckpt.class_names))
    load_model_state(model, ckpt, path)
    return model


def load_trained(run: str | Path | RunDir, device: torch.device | str = "cpu", *, with_dataset: bool = False,
                 data_root: str | None = None) -> TrainedRun:
    """The best model of a run directory (or of a checkpoint file), on ``device``, in eval mode.

    ``with_dataset`` also builds its dataset (from ``data_root`` if given), checking the classes
    before the weights are loaded.
    """
    run_dir = run if isinstance(run, RunDir) else RunDir(run) if Path(run).is_dir() else None
    path = run_dir.best_path if run_dir is not None else Path(run)
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt.config)  # the metadata came with the file: it sets no writes, no bounds
    bundle = _dataset_of(cfg, ckpt.class_names, path, data_root) if with_dataset else None
    model = restore_model(ckpt, path).to(device).eval()
    return TrainedRun(model, cfg, ckpt.class_names, path, run_dir, bundle)
