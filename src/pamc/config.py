"""Typed, frozen run configuration.

A run is described by a :class:`RunConfig` made of one frozen dataclass per concern. YAML files
mirror the dataclass tree; unknown keys and values of the wrong type are rejected with a
:class:`~pamc.errors.ConfigError` that names the offending key.
"""

from __future__ import annotations

import dataclasses
import math
import collections.abc
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from pamc.errors import ConfigError


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in synthetic multi-label scenes (see :mod:`pamc.data.synthetic`)."""

    num_classes: int = 10
    num_train: int = 2400
    num_test: int = 1000
    image_size: int = 48
    min_objects: int = 1
    max_objects: int = 4
    noise: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.num_classes >= 2, "data.synthetic.num_classes must be >= 2")
        _check(self.num_train > 0 and self.num_test > 0, "data.synthetic sizes must be > 0")
        _check(self.image_size >= 16, "data.synthetic.image_size must be >= 16")
        _check(1 <= self.min_objects <= self.max_objects <= self.num_classes,
               "data.synthetic needs 1 <= min_objects <= max_objects <= num_classes")
        _check(self.noise >= 0, "data.synthetic.noise must be >= 0")


DataProtocol = Literal["authors", "pamc"]
PROTOCOLS: tuple[str, ...] = typing.get_args(DataProtocol)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how observed labels are drawn from it.

    ``protocol`` decides the observed-label draw, the train/val split and the LL clean-rate
    arithmetic: ``pamc`` (pamc's own, vectorised draws) or ``authors`` (the BoostLU / Cole et
    al. preprocessing, reproduced exactly; docs/datasets.md). ``voc_difficult`` None means:
    what the protocol does (``authors``: absent, ``pamc``: positive).
    """

    dataset: str = "synthetic"
    protocol: DataProtocol = "pamc"
    root: str | None = None
    image_size: int | None = None
    num_pos: int = 1
    num_neg: int = 0
    obs_seed: int = 1200
    val_fraction: float = 0.2
    split_seed: int = 1200
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    # real datasets (pamc.data.adapters, docs/datasets.md)
    cache_dir: str | None = None  # prepared folder: index, observed labels, image cache
    test_csv: str | None = None  # csv dataset: a separate test set
    strict: bool = False  # missing or corrupt images are errors instead of counted warnings
    voc_difficult: Literal["positive", "negative", "ignore"] | None = None
    label_store: Literal["auto", "dense", "sparse"] = "auto"

    def __post_init__(self) -> None:
        _check(self.num_pos >= 0, "data.num_pos must be >= 0")
        _check(self.num_neg >= 0, "data.num_neg must be >= 0")
        _check(0.0 < self.val_fraction < 1.0, "data.val_fraction must be in (0, 1)")
        _check(self.image_size is None or self.image_size >= 16, "data.image_size must be >= 16")
        _check(self.protocol in PROTOCOLS,
               f"data.protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        _check(self.voc_difficult in ("positive", "negative", "ignore", None),
               f"data.voc_difficult must be positive, negative or ignore, got {self.voc_difficult!r}")
        _check(self.label_store in ("auto", "dense", "sparse"),
               f"data.label_store must be auto, dense or sparse, got {self.label_store!r}")

    @property
    def resolved_voc_difficult(self) -> str:
        """``voc_difficult``, or the protocol's choice when it is None."""
        if self.voc_difficult is not None:
            return self.voc_difficult
        return "negative" if self.protocol == "authors" else "positive"


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and BoostLU settings. ``eval_alpha`` None means: same as ``train_alpha``."""

    backbone: str = "smallcnn"
    pretrained: str | None = None
    train_alpha: float = 1.0
    eval_alpha: float | None = None

    def __post_init__(self) -> None:
        _check(_finite(self.train_alpha) and self.train_alpha >= 1,
               f"model.train_alpha must be >= 1 (BoostLU), got {self.train_alpha}")
        _check(self.eval_alpha is None or (_finite(self.eval_alpha) and self.eval_alpha >= 1),
               f"model.eval_alpha must be >= 1 (BoostLU), got {self.eval_alpha}")

    @property
    def resolved_eval_alpha(self) -> float:
        return self.train_alpha if self.eval_alpha is None else self.eval_alpha


@dataclass(frozen=True)
class MethodConfig:
    """The training loss by registry name, with its keyword parameters."""

    name: str = "an"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LinearInitConfig:
    """A first phase on a frozen backbone (Cole et al.'s LinearInit), see ``TrainConfig.linear_init``.

    It trains the CAM head (and a loss's own parameters) for ``epochs`` at ``lr`` with
    ``batch_size``, selecting its best epoch on validation like any run.
    """

    epochs: int = 25
    lr: float = 1e-3
    batch_size: int = 16

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"train.linear_init.epochs must be >= 1, got {self.epochs}")
        _check(_finite(self.lr) and self.lr > 0, f"train.linear_init.lr must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, f"train.linear_init.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation protocol (paper: Adam, head at 10x the backbone learning rate)."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-5
    head_lr_mult: float = 10.0
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    select_on: Literal["full", "observed"] = "full"
    flip: bool = True
    num_workers: int = 0
    deterministic: bool = False
    checkpoint_every_steps: int = 0  # 0: the `last` checkpoint is written at epoch ends only
    on_nonfinite: Literal["stop", "skip"] = "stop"
    # speed switches (pamc.engine.precision): "auto" = bf16 autocast on CUDA, off on CPU
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    compile: bool = False
    frozen_features: bool = False  # cache backbone feature maps once, train only the CAM head
    drop_last: bool = False  # leave out the last, partial training batch of each epoch (Cole et al.)
    loss_lr_mult: float | None = None  # lr multiplier of a loss's own parameters (ROLE); None: head_lr_mult
    # two phases: first train.linear_init on a frozen backbone, then this run from its best
    # epoch's weights with a fresh optimizer (pamc.engine.phases)
    linear_init: LinearInitConfig | None = None
    init_from: str | None = None  # a checkpoint whose weights (and loss state) start the run

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        _check(_finite(self.lr) and self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _check(_finite(self.head_lr_mult) and self.head_lr_mult > 0, "train.head_lr_mult must be > 0")
        _check(_finite(self.weight_decay) and self.weight_decay >= 0, "train.weight_decay must be >= 0")
        _check(self.num_workers >= 0, "train.num_workers must be >= 0")
        _check(self.loss_lr_mult is None or (_finite(self.loss_lr_mult) and self.loss_lr_mult > 0),
               f"train.loss_lr_mult must be > 0 or null, got {self.loss_lr_mult}")
        _check(self.checkpoint_every_steps >= 0,
               f"train.checkpoint_every_steps must be >= 0, got {self.checkpoint_every_steps}")


@dataclass(frozen=True)
class EvalConfig:
    """How mAP is computed on validation and test sets.

    ``unannotated_classes``: a class without any annotated entry in the evaluated set (real
    partial test labels: OpenImages) is left out of the mAP (``skip``, as the authors'
    OpenImages evaluation) or counted as AP 0 (``zero``).
    """

    unannotated_classes: Literal["skip", "zero"] = "skip"

    def __post_init__(self) -> None:
        _check(self.unannotated_classes in ("skip", "zero"),
               f"eval.unannotated_classes must be skip or zero, got {self.unannotated_classes!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/run"
    # free-form metadata (e.g. the paper's reported number for this config); training ignores it
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        names = " or ".join(_type_name(a) for a in typing.get_args(tp))
        raise ConfigError(f"config key '{key}' must be {names}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}' must be null, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise ConfigError(f"config key '{key}' must be one of {list(allowed)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is Any:
        return value
    if isinstance(origin, type) and issubclass(origin, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, Mapping):
        where = f"'{prefix}'" if prefix else "the config file"
        raise ConfigError(f"{where} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{full}'; valid keys: {', '.join(sorted(names))}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from nested plain data."""
    return _build(RunConfig, values, "")


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults) and apply dotted-key overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        values = _to_plain(loaded)
    for dotted, value in (overrides or {}).items():
        set_dotted(values, dotted, value)
    return config_from_dict(values)


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a.b": 1, "c": ["x", "y"]}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key.strip()}: {value!r} is not a YAML value") from None
    return out


def set_dotted(values: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``values['a']['b'] = value`` for ``dotted == 'a.b'``, creating mappings."""
    *parents, last = dotted.split(".")
    node = values
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{part}' must be a mapping")
        node = child
    node[last] = value


def replace(cfg: RunConfig, **overrides: Any) -> RunConfig:
    """Return a copy of ``cfg`` with dotted-key overrides, re-validated."""
    values = cfg.to_dict()
    for dotted, value in overrides.items():
        set_dotted(values, dotted.replace("__", "."), value)
    return config_from_dict(values)
