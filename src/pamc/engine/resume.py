"""Exact resume: the ``last`` checkpoint and the training state written beside it.

``last.safetensors`` holds the model weights (a normal pamc checkpoint that ``pamc eval``
reads). Everything else a run needs to continue bit for bit lives in a training-state file
next to it, written with :func:`torch.save` from plain tensors, numbers, strings, lists and
dicts only and read back with ``torch.load(weights_only=True)``, so loading it never runs
code: the optimizer state, the epoch and step reached with the running totals of the
unfinished epoch, the RNG states (Python, NumPy, torch, CUDA, the loader's shuffle generator
at the start of the epoch and the flip generator), the metrics history, and the state of
every training hook (``pamc.engine.hooks``) by name: the loss's state, the training label
store in its own (sparse or dense) form with the LL-Cp corrections, the best validation mAP.

Commit protocol: the state file gets a fresh name and is written first; the weights file,
whose metadata names that state file, is then renamed into place, which commits the pair.
A crash in between leaves the previous pair intact; stale state files are removed after the
commit. Both writes are atomic (:func:`~pamc.engine.checkpoint.atomic_write`).
"""

from __future__ import annotations

import io
import json
import pickle
import random
import re
import secrets
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pamc.config import RunConfig
from pamc.data import ArrayLoader, DeviceTransform
from pamc.engine.checkpoint import Checkpoint, atomic_write, load_checkpoint, save_checkpoint
from pamc.engine.rundir import LAST_CHECKPOINT, STATE_PREFIX
from pamc.errors import CheckpointError

STATE_FORMAT = "pamc-train-state"
STATE_VERSION = 2  # 2: hook states by name; the label store in its own form
_STATE_NAME = re.compile(re.escape(STATE_PREFIX) + r"[0-9a-f]{8,32}\.pt")


@dataclass
class EpochProgress:
    """Where training stands inside one epoch: batches done and running totals."""

    epoch: int
    step: int = 0
    loss_sum: float = 0.0
    images: int = 0
    corrected: int = 0
    skipped: int = 0


@dataclass
class TrainingState:
    """What a resumed run needs besides the model weights.

    ``progress.epoch`` is the epoch to run or continue and ``progress.step`` the number of
    its batches already done; a state written at the end of epoch ``e`` has
    ``progress == EpochProgress(e + 1)``. ``rng["loader"]`` is the shuffle generator's state
    at the start of ``progress.epoch``, so a resumed epoch draws the same batch order.
    ``hooks`` maps each stateful hook's name to its ``state_dict()``.
    """

    progress: EpochProgress
    global_step: int
    history: list[dict[str, Any]]
    optimizer: dict[str, Any]
    rng: dict[str, Any] = field(default_factory=dict)
    hooks: dict[str, dict[str, Any]] = field(default_factory=dict)


def capture_rng(loader_rng: torch.Tensor, transform: DeviceTransform) -> dict[str, Any]:
    """All RNG states as plain data (``loader_rng``: the shuffle generator at epoch start)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [int(version), [int(v) for v in internal], gauss],
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": loader_rng.clone(),
        "transform": None if transform.generator is None else transform.generator.get_state(),
    }


def restore_rng(rng: dict[str, Any], loader: ArrayLoader, transform: DeviceTransform) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    loader.generator.set_state(rng["loader"])
    if rng["transform"] is not None and transform.generator is not None:
        transform.generator.set_state(rng["transform"])


def save_last(
    run_dir: Path,
    model: torch.nn.Module,
    config: RunConfig,
    class_names: tuple[str, ...],
    state: TrainingState,
) -> None:
    """Write ``last.safetensors`` and its training-state file (see the commit protocol above)."""
    run_dir = Path(run_dir)
    token = secrets.token_hex(8)
    name = f"{STATE_PREFIX}{token}.pt"
    payload = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "token": token,
        "progress": asdict(state.progress),
        "global_step": state.global_step,
        "history": json.dumps(state.history),
        "optimizer": state.optimizer,
        "rng": state.rng,
        "hooks": state.hooks,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(run_dir / name, buffer.getbuffer())
    extra = {"epoch": state.progress.epoch, "step": state.progress.step, "global_step": state.global_step,
             "state_file": name, "token": token}
    try:
        save_checkpoint(run_dir / LAST_CHECKPOINT, model, config, class_names, extra)
    except BaseException:
        (run_dir / name).unlink(missing_ok=True)
        raise
    for stale in run_dir.glob(f"{STATE_PREFIX}*.pt"):
        if stale.name != name:
            stale.unlink(missing_ok=True)


def load_last(run_dir: Path) -> tuple[Checkpoint, TrainingState]:
    """Read and validate the ``last`` checkpoint of ``run_dir`` and its training state."""
    run_dir = Path(run_dir)
    path = run_dir / LAST_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no {LAST_CHECKPOINT} in {run_dir}; nothing to resume")
    ckpt = load_checkpoint(path)
    name, token = ckpt.extra.get("state_file"), ckpt.extra.get("token")
    if not isinstance(name, str) or not _STATE_NAME.fullmatch(name) or not isinstance(token, str):
        raise CheckpointError(f"{path} does not name a valid training-state file")
    state_path = run_dir / name
    if not state_path.is_file():
        raise CheckpointError(f"training state {state_path} named by {path} is missing")
    raw = _safe_torch_load(state_path)
    if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{state_path} is not a pamc training state")
    if raw.get("version") != STATE_VERSION:
        raise CheckpointError(f"{state_path} has training-state format {raw.get('version')}, "
                              f"this pamc reads format {STATE_VERSION}")
    if raw.get("token") != token:
        raise CheckpointError(f"{state_path} does not belong to {path} (token mismatch)")
    try:
        state = TrainingState(
            progress=EpochProgress(**raw["progress"]),
            global_step=int(raw["global_step"]),
            history=json.loads(raw["history"]),
            optimizer=raw["optimizer"],
            rng=raw["rng"],
            hooks=raw["hooks"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{state_path} is a malformed training state ({exc})") from None
    if not isinstance(state.hooks, dict) or not all(isinstance(v, dict) for v in state.hooks.values()):
        raise CheckpointError(f"{state_path} is a malformed training state")
    epochs, at = ckpt.config.train.epochs, state.progress
    best_epoch = state.hooks.get("selection", {}).get("best_epoch", 0)
    if not all(type(v) is int for v in (at.epoch, at.step, state.global_step, best_epoch)) or not (
            1 <= at.epoch <= epochs + 1 and at.step >= 0 and (at.epoch <= epochs or at.step == 0)
            and state.global_step >= at.step and 0 <= best_epoch < at.epoch):
        raise CheckpointError(f"{state_path} holds an impossible position for a run of {epochs} epochs "
                              f"(epoch {at.epoch}, step {at.step}, global step {state.global_step}, "
                              f"best epoch {best_epoch})")
    if (ckpt.extra.get("epoch"), ckpt.extra.get("step")) != (at.epoch, at.step):
        raise CheckpointError(f"{state_path} is at epoch {at.epoch}, step {at.step}, but {path} records "
                              f"epoch {ckpt.extra.get('epoch')}, step {ckpt.extra.get('step')}")
    return ckpt, state


def _safe_torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"refusing to load {path}: it is not a plain-data file "
                              "(pickled objects are never executed)") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, AttributeError,
            zipfile.BadZipFile) as exc:
        text = str(exc).strip().splitlines()
        raise CheckpointError(f"cannot read training state {path}: {text[0] if text else type(exc).__name__}") from None


def config_mismatch(saved: RunConfig, current: RunConfig, *, set_keys_only: bool = False) -> str | None:
    """The first config key (other than ``output_dir``) whose value differs, as a phrase.

    With ``set_keys_only`` only the keys that ``current`` sets (not ``None``, not an empty
    mapping) are compared: a finished run also records what it resolved from ``None`` or from
    the dataset catalog (its image size, normalisation and method defaults)."""
    a, b = _flatten(saved.to_dict()), _flatten(current.to_dict())
    keys = [k for k, v in b.items() if v is not None and v != {}] if set_keys_only else set(a) | set(b)
    for key in sorted(keys):
        if key != "output_dir" and a.get(key) != b.get(key):
            return f"{key} is {a.get(key)!r} in the checkpoint and {b.get(key)!r} in the config"
    return None


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out
