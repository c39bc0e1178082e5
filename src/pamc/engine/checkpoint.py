"""Model checkpoints: safetensors weights with JSON metadata, written atomically.

A checkpoint holds the model's ``state_dict`` as tensors and, in the safetensors metadata,
the format version, the resolved run config and the class names, so that ``pamc eval`` can
rebuild the model and its dataset from the file alone. Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from pamc.config import RunConfig, config_from_dict
from pamc.errors import CheckpointError, ConfigError, OutputError

FORMAT_VERSION = "1"
CRITERION_PREFIX = "criterion."  # tensors of the loss's state (ROLE estimates, APL pseudo-labels)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: weights plus the metadata needed to rebuild the model."""

    state_dict: dict[str, torch.Tensor]
    config: RunConfig
    class_names: tuple[str, ...]
    extra: dict[str, Any]
    criterion_state: dict[str, torch.Tensor] = field(default_factory=dict)


def atomic_write(path: Path, write: Any) -> None:
    """Write ``write`` (bytes, or a callable given the temporary path) to ``path`` atomically.

    The data go to a temporary file of a per-process unique name next to ``path``, are flushed
    to disk, then renamed onto ``path``: readers see the old file or the complete new one, never
    a partial write. Bytes are written with ordinary file writes, so a full disk is an
    ``OSError`` (a serializer's own file writer may report it as something else: serialize to
    bytes first). An ``OSError`` (full disk, read-only file system, a file where a folder
    should be) leaves no temporary file and becomes an :class:`OutputError`.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        if isinstance(write, (bytes, bytearray, memoryview)):
            with os.fdopen(fd, "wb") as f:
                f.write(write)
        else:
            os.close(fd)
            write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or _first_line(exc)}") from None
        raise


def make_dirs(path: Path) -> Path:
    """``path.mkdir(parents=True, exist_ok=True)``; an ``OSError`` becomes one :class:`OutputError` line."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or _first_line(exc)}") from None
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` for a text file."""
    atomic_write(path, text.encode("utf-8"))


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    config: RunConfig,
    class_names: tuple[str, ...],
    extra: dict[str, Any] | None = None,
    criterion_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the model weights and metadata to ``path`` (a .safetensors file).

    ``criterion_state`` (the loss's ``state_dict``) is stored under ``criterion.`` keys.
    """
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for k, v in (criterion_state or {}).items():
        tensors[CRITERION_PREFIX + k] = v.detach().contiguous().cpu()
    metadata = {
        "pamc_format": FORMAT_VERSION,
        "config": json.dumps(config.to_dict()),
        "class_names": json.dumps(list(class_names)),
        "extra": json.dumps(extra or {}),
    }
    atomic_write(path, save(tensors, metadata=metadata))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, validating its metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a safetensors checkpoint ({_first_line(exc)})") from None
    version = metadata.get("pamc_format")
    if version is None:
        raise CheckpointError(f"{path} has no pamc metadata; it was not written by pamc")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}, this pamc reads format {FORMAT_VERSION}")
    try:
        config = config_from_dict(json.loads(metadata["config"]))
        class_names = tuple(json.loads(metadata["class_names"]))
        extra = json.loads(metadata.get("extra", "{}"))
    except (KeyError, TypeError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path} has malformed pamc metadata ({_first_line(exc)})") from None
    if not all(isinstance(n, str) for n in class_names) or not isinstance(extra, dict):
        raise CheckpointError(f"{path} has malformed pamc metadata (class names or extra)")
    criterion_state = {k[len(CRITERION_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(CRITERION_PREFIX)}
    return Checkpoint(state, config, class_names, extra, criterion_state)


def check_compatible(ckpt: Checkpoint, path: str | Path, *, backbone: str, class_names: tuple[str, ...]) -> None:
    """Raise :class:`CheckpointError` naming the mismatch if ``ckpt`` was not trained for this setup."""
    if ckpt.config.model.backbone != backbone:
        raise CheckpointError(f"checkpoint {path} has backbone {ckpt.config.model.backbone!r}, "
                              f"expected {backbone!r}")
    if len(ckpt.class_names) != len(class_names):
        raise CheckpointError(f"checkpoint {path} has {len(ckpt.class_names)} classes, "
                              f"the dataset has {len(class_names)}")
    if tuple(ckpt.class_names) != tuple(class_names):
        first = next(i for i, (a, b) in enumerate(zip(ckpt.class_names, class_names)) if a != b)
        raise CheckpointError(f"checkpoint {path} has class {ckpt.class_names[first]!r} at index {first}, "
                              f"the dataset has {class_names[first]!r}")


def load_model_state(model: torch.nn.Module, ckpt: Checkpoint, path: str | Path) -> None:
    """Load weights strictly: keys, shapes and dtypes must match and values be finite."""
    from pamc.models.pretrained import check_state_dict

    check_state_dict(model, ckpt.state_dict, str(path))
    model.load_state_dict(ckpt.state_dict)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
