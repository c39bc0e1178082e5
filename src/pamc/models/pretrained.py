"""Strict, safe loading of backbone checkpoints (torch or safetensors files)."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from pamc.errors import CheckpointError

logger = logging.getLogger(__name__)

_NESTED_KEYS = ("state_dict", "model")
_DROPPED_PREFIXES = ("fc.",)
_SHOWN_KEYS = 3


def _read_file(path: Path) -> object:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"refusing to load {path}: not a plain tensor checkpoint") from None
    # the weights-only unpickler can fail on arbitrary bytes with any of these
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line}") from None


def _extract_state_dict(obj: object, path: Path, dropped: tuple[str, ...] = _DROPPED_PREFIXES) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            nested = obj.get(key)
            if isinstance(nested, Mapping):
                obj = nested
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state_dict")
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(f"checkpoint {path} is not a state_dict: entry {key!r} is not a tensor")
        if key.startswith("module."):
            key = key[len("module.") :]
        if dropped and key.startswith(dropped):
            continue
        state[key] = value
    return state


def _describe(keys: list[str], singular: str, plural: str) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS]) + (", ..." if len(keys) > _SHOWN_KEYS else "")
    return f"{len(keys)} {singular if len(keys) == 1 else plural} ({shown})"


def check_state_dict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` matches ``module`` key for key, shape and
    dtype, with finite values (weights are never cast or loaded with NaN/inf without a word)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(_describe(missing, "missing key", "missing keys"))
    if unexpected:
        problems.append(_describe(unexpected, "unexpected key", "unexpected keys"))
    if mismatched:
        problems.append(_describe(mismatched, "shape mismatch", "shape mismatches"))
    dtypes = [f"{k} {state[k].dtype} vs {expected[k].dtype}" for k in expected
              if k in state and state[k].dtype != expected[k].dtype]
    if dtypes:
        problems.append(_describe(dtypes, "dtype mismatch", "dtype mismatches"))
    if problems:
        name = type(module).__name__
        raise CheckpointError(f"checkpoint {source} does not match {name}: " + ", ".join(problems))
    nonfinite = [k for k in expected if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())]
    if nonfinite:
        raise CheckpointError(f"checkpoint {source} holds non-finite values (NaN or inf) in "
                              + _describe(nonfinite, "tensor", "tensors"))


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Every tensor of a checkpoint file, classifier included (formats as :func:`load_pretrained`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    return _extract_state_dict(_read_file(path), path, dropped=())


def load_pretrained(module: nn.Module, path: str | Path) -> None:
    """Load backbone weights from ``path`` into ``module`` in place, strictly.

    Accepts a raw state_dict or a dict holding one under ``"state_dict"`` or ``"model"``;
    a ``module.`` prefix (DDP) is stripped and classifier keys (``fc.*``) are dropped.
    Torch files are read with ``weights_only=True``; anything else is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    state = _extract_state_dict(_read_file(path), path)
    check_state_dict(module, state, path.name)
    module.load_state_dict(state, strict=True)
    logger.info("loaded %d tensors from %s into %s", len(state), path, type(module).__name__)
