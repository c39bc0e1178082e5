"""Typed, frozen run configuration.

A run is described by a :class:`RunConfig` made of one frozen dataclass per concern. YAML files
mirror the dataclass tree; unknown keys and values of the wrong type are rejected with a
:class:`~pamc.errors.ConfigError` that names the offending key.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from pamc.errors import ConfigError


DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # about 190 MB decoded; pixels by the image header
MAX_SYNTHETIC_BYTES = 16 << 30
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # nodes after alias expansion; a config has a few hundred


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
    # None: resolved when training starts and recorded in the run's config (pamc.data.catalog)
    image_size: int | None = None
    mean: tuple[float, float, float] | None = None  # per-channel, in 0..1 pixel units
    std: tuple[float, float, float] | None = None
    num_pos: int = 1
    num_neg: int = 0
    obs_seed: int = 1200
    val_fraction: float = 0.2
    split_seed: int = 1200
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    # real datasets (pamc.data.adapters, docs/datasets.md)
    cache_dir: str | None = None  # prepared folder: index, observed labels, image cache
    test_csv: str | None = None  # csv dataset: a separate test set
    val_csv: str | None = None  # csv dataset: a separate, completely labelled validation set
    # csv list form: "complete" = a class not listed is negative in the test/val CSVs; "partial" = unobserved
    test_labels: Literal["complete", "partial"] = "complete"
    name: str | None = None  # the data set's name in `pamc table` (default: dataset and data root)
    strict: bool = False  # missing or corrupt images are errors instead of counted warnings
    voc_difficult: Literal["positive", "negative", "ignore"] | None = None
    label_store: Literal["auto", "dense", "sparse"] = "auto"
    allow_outside_root: bool = False  # image paths listed by dataset files may leave the data root
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images (by their header) are skipped

    def __post_init__(self) -> None:
        _check(self.num_pos >= 0, "data.num_pos must be >= 0")
        _check(self.num_neg >= 0, "data.num_neg must be >= 0")
        _check(0.0 < self.val_fraction < 1.0, "data.val_fraction must be in (0, 1)")
        _check(self.image_size is None or self.image_size >= 16, "data.image_size must be >= 16")
        _check(self.std is None or all(_finite(v) and v > 0 for v in self.std), "data.std must be > 0")
        _check(self.mean is None or all(_finite(v) for v in self.mean), "data.mean must be finite")
        _check(self.protocol in PROTOCOLS,
               f"data.protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        _check(self.voc_difficult in ("positive", "negative", "ignore", None),
               f"data.voc_difficult must be positive, negative or ignore, got {self.voc_difficult!r}")
        _check(self.label_store in ("auto", "dense", "sparse"),
               f"data.label_store must be auto, dense or sparse, got {self.label_store!r}")
        _check(self.test_labels in ("complete", "partial"),
               f"data.test_labels must be complete or partial, got {self.test_labels!r}")
        _check(self.max_image_pixels >= 256, f"data.max_image_pixels must be >= 256, got {self.max_image_pixels}")
        _check(self.image_size is None or self.image_size ** 2 <= self.max_image_pixels,
               f"data.image_size {self.image_size} is over the pixel budget data.max_image_pixels "
               f"({self.max_image_pixels})")
        _check(self.synthetic.image_size ** 2 * (self.synthetic.num_train + self.synthetic.num_test) * 3
               <= MAX_SYNTHETIC_BYTES, f"data.synthetic needs more than {MAX_SYNTHETIC_BYTES >> 30} GiB of images")

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
    # which epoch's weights become best.safetensors (pamc.engine.hooks.resolve_selection):
    # "auto" = best_val when the validation labels can rank models, else last (with one warning)
    select: Literal["auto", "best_val", "last"] = "auto"
    flip: bool = True
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
    threads: int | Literal["auto"] = "auto"  # intra-op threads (pamc.engine.threads; README: thread table)

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        _check(_finite(self.lr) and self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _check(_finite(self.head_lr_mult) and self.head_lr_mult > 0, "train.head_lr_mult must be > 0")
        _check(_finite(self.weight_decay) and self.weight_decay >= 0, "train.weight_decay must be >= 0")
        _check(self.select in ("auto", "best_val", "last"),
               f"train.select must be auto, best_val or last, got {self.select!r}")
        _check(self.loss_lr_mult is None or (_finite(self.loss_lr_mult) and self.loss_lr_mult > 0),
               f"train.loss_lr_mult must be > 0 or null, got {self.loss_lr_mult}")
        _check(self.checkpoint_every_steps >= 0,
               f"train.checkpoint_every_steps must be >= 0, got {self.checkpoint_every_steps}")
        _check(self.threads == "auto" or self.threads >= 1, f"train.threads must be 'auto' or >= 1, got {self.threads!r}")


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
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key '{key}' must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
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


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 core schema for booleans, null and numbers.

    ``1e-3`` is a float and ``yes``/``on``/``010``/``1:30`` are what YAML 1.2 says (a string,
    a string, 10, a string), not YAML 1.1's readings.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "null")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _regexp, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
              r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
):
    _Yaml12Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_regexp), list(_first))


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text)


def _yaml12_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    text = loader.construct_scalar(node).lower()
    return float(text.replace(".inf", "inf").replace(".nan", "nan"))


def _yaml12_bool(loader: yaml.SafeLoader, node: yaml.Node) -> bool:
    return loader.construct_scalar(node).lower() == "true"


def _yaml12_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, int] = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            if key.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key.value!r} is given twice (first at line {seen[key.value]})", key.start_mark)
            seen[key.value] = key.start_mark.line + 1
    return loader.construct_yaml_map(node)


_Yaml12Loader.add_constructor("tag:yaml.org,2002:map", _yaml12_mapping)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _yaml12_float)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:bool", _yaml12_bool)


def _expanded_size(root: yaml.Node, limit: int) -> int | None:
    """Nodes of ``root`` with every alias expanded, or None past ``limit`` or on a cycle.

    Aliases share node objects in the composed graph, so this is linear in the text: each
    node's expanded size is computed once.
    """
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            visiting.discard(key)
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > limit:
                return None
            sizes[key] = total
            continue
        if key in visiting:
            return None  # a recursive alias
        visiting.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
        for c in children:
            if id(c) in visiting:
                return None
    return sizes[id(root)]


def load_yaml(text: str | bytes, source: str) -> Any:
    """Parse one YAML document safely: UTF-8, YAML 1.2 numbers, aliases bounded before expansion.

    ``source`` names the input in errors (a file name, ``--set KEY``). Raises
    :class:`ConfigError` with one line for text that is not UTF-8, too large, not valid YAML,
    nested too deeply, or whose aliases would expand to more than :data:`MAX_YAML_NODES` nodes.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = text[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{source} is not UTF-8 text (line {line}, byte {exc.start})") from None
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source} is larger than {MAX_YAML_BYTES >> 20} MiB; a config is a few KiB")
    loader = _Yaml12Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_YAML_NODES) is None:
            raise ConfigError(f"{source}: its aliases expand to more than {MAX_YAML_NODES} values "
                              "(or refer to themselves); refusing to expand it")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        detail = f": {problem}" if isinstance(exc, yaml.constructor.ConstructorError) and problem else ""
        raise ConfigError(f"{source} is not valid YAML{where}{detail}") from None
    except RecursionError:
        raise ConfigError(f"{source} is nested too deeply") from None
    finally:
        loader.dispose()


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults) and apply dotted-key overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        loaded = load_yaml(raw, f"config file {path}")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        values = _to_plain(loaded)
    for dotted, value in (overrides or {}).items():
        set_dotted(values, dotted, value)
    return config_from_dict(values)


def parse_override_value(text: str, key: str = "") -> Any:
    """The value of one ``--set KEY=VALUE``, read as YAML 1.2 (``1e-3`` a float, ``[1, 2]`` a list)."""
    return load_yaml(text, f"--set {key}".strip())


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as ``{dotted key: value}``; a later item wins."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_override_value(value, key.strip())
    return out


def checkpoint_config(cfg: RunConfig, **overrides: Any) -> RunConfig:
    """The config stored in a checkpoint's metadata, safe to build a dataset from.

    Metadata comes with the file, possibly from elsewhere: it never chooses where pamc writes
    (``data.cache_dir`` is dropped, so the prepared folder is the data root's default one) nor
    its bounds (``data.max_image_pixels`` is this pamc's default, and the image size is checked
    against it). ``overrides`` are dotted keys with ``__`` (e.g. ``data__root``) set by the user.
    """
    return replace(cfg, data__cache_dir=None, data__max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, **overrides)


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
