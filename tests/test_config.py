import pytest

from pamc.config import RunConfig, config_from_dict, load_config, replace
from pamc.errors import ConfigError


def test_defaults_follow_paper_protocol():
    cfg = RunConfig()
    assert cfg.train.head_lr_mult == 10.0
    assert cfg.data.val_fraction == 0.2
    assert cfg.data.split_seed == 1200 and cfg.data.obs_seed == 1200
    assert cfg.model.resolved_eval_alpha == cfg.model.train_alpha == 1.0


def test_yaml_round_trip(tmp_path):
    import yaml

    cfg = load_config(None, {"train.epochs": 3, "model.train_alpha": 5, "method.name": "ll-r",
                             "method.params": {"delta_rel": 0.3}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    again = load_config(path)
    assert again == cfg
    assert again.model.train_alpha == 5.0 and isinstance(again.model.train_alpha, float)
    assert again.method.params == {"delta_rel": 0.3}


def test_config_is_frozen():
    cfg = RunConfig()
    with pytest.raises(Exception):
        cfg.train.epochs = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.foo": 1}, "unknown config key 'train.foo'"),
        ({"bogus": 1}, "unknown config key 'bogus'"),
        ({"train.epochs": "ten"}, "'train.epochs' must be int"),
        ({"train.epochs": 2.5}, "'train.epochs' must be int"),
        ({"train.lr": True}, "'train.lr' must be float"),
        ({"train.lr": -1.0}, "train.lr must be > 0"),
        ({"train.batch_size": 0}, "train.batch_size must be >= 1"),
        ({"model.train_alpha": 0.5}, "model.train_alpha must be >= 1"),
        ({"model.eval_alpha": 0.9}, "model.eval_alpha must be >= 1"),
        ({"train.select_on": "test"}, "must be one of ['full', 'observed']"),
        ({"data.val_fraction": 1.0}, "data.val_fraction must be in (0, 1)"),
    ],
)
def test_bad_values_are_rejected(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(scalar)


def test_replace_revalidates():
    cfg = RunConfig()
    assert replace(cfg, train__epochs=4).train.epochs == 4
    with pytest.raises(ConfigError):
        replace(cfg, train__epochs=0)
    assert config_from_dict({}) == cfg


@pytest.mark.parametrize("text, value", [
    ("1e-3", 0.001), ("1E+2", 100.0), ("-2.5e-1", -0.25), (".5", 0.5), ("5.", 5.0), ("1.0e-05", 1e-05),
    ("+1", 1), ("010", 10), ("0o17", 15), ("0x1f", 31), (".inf", float("inf")), ("-.Inf", float("-inf")),
    ("true", True), ("False", False), ("null", None), ("~", None), ("", None),
    ("yes", "yes"), ("on", "on"), ("n", "n"), ("1:30", "1:30"), ("1_000", "1_000"), ("0b11", "0b11"),
])
def test_yaml_values_follow_yaml_1_2(text, value):
    from pamc.config import load_yaml

    got = load_yaml(text, "--set x")
    assert got == value and type(got) is type(value)


def test_set_lr_1e_3_is_a_float_through_the_cli_parser():
    from pamc.cli.main import build_parser

    args = build_parser().parse_args(["train", "--set", "train.lr=1e-3", "--set", "method.params.delta_rel=2E-1"])
    from pamc.cli.commands import Train

    cfg = load_config(None, Train.overrides(args))
    assert cfg.train.lr == 0.001 and cfg.method.params == {"delta_rel": 0.2}


def test_yaml_aliases_within_the_bound_expand_and_merge_keys_work():
    from pamc.config import load_yaml

    text = "base: &b {lr: 0.1, epochs: 2}\ntrain: {<<: *b, epochs: 3}\nlist: &l [1, 2]\ntwice: [*l, *l]\n"
    assert load_yaml(text, "c") == {"base": {"lr": 0.1, "epochs": 2}, "train": {"lr": 0.1, "epochs": 3},
                                    "list": [1, 2], "twice": [[1, 2], [1, 2]]}


@pytest.mark.parametrize("levels, refused", [(5, False), (6, True)])
def test_the_alias_bound_counts_expanded_values(levels, refused):
    """Nine aliases a level: 10^5 > 9^5 + ... values at five levels pass, six (over 100000) do not."""
    from pamc.config import MAX_YAML_NODES, load_yaml

    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    sizes = [10]  # level 0: the list and its 9 scalars; level i: the list and 9 copies of level i-1
    for _ in range(1, levels):
        sizes.append(1 + 9 * sizes[-1])
    expanded = 1 + sum(1 + size for size in sizes)  # the top mapping, each key and its value
    assert (expanded > MAX_YAML_NODES) == refused
    if refused:
        with pytest.raises(ConfigError, match="aliases expand to more than 100000 values"):
            load_yaml("\n".join(lines), "c")
    else:
        assert len(load_yaml("\n".join(lines), "c")[f"l{levels - 1}"]) == 9


def test_checkpoint_config_drops_the_cache_dir_and_resets_the_pixel_budget():
    from pamc.config import DEFAULT_MAX_IMAGE_PIXELS, checkpoint_config

    cfg = config_from_dict({"data": {"cache_dir": "/victim", "max_image_pixels": 10 ** 12, "image_size": 448}})
    safe = checkpoint_config(cfg, data__root="/data")
    assert safe.data.cache_dir is None and safe.data.max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS
    assert safe.data.root == "/data" and safe.data.image_size == 448
    with pytest.raises(ConfigError, match="over the pixel budget"):
        checkpoint_config(replace(cfg, data__image_size=9000))
