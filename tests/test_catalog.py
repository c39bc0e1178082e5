"""The dataset catalog: one registry, metadata that agrees with the readers, method defaults,
and the data facts a run records."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dataset_fixtures import FIXTURES
from pamc.cli.main import main
from pamc.config import DataConfig, RunConfig, SyntheticConfig, load_config, replace
from pamc.data import DATASETS, build_dataset, dataset_info
from pamc.data import catalog
from pamc.data.catalog import METADATA, dataset_params, resolve_data_facts, resolve_method_params
from pamc.engine import fit
from pamc.errors import ConfigError, RegistryError
from pamc.losses import LOSSES
from pamc.models.backbones import IMAGENET_INPUT, InputSpec

VOC2007_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc2007-labels"


def test_one_registry_holds_every_reader_and_each_has_metadata() -> None:
    assert set(DATASETS.names()) == set(METADATA)  # coco2017 and coco (either layout) included
    for name in DATASETS.names():
        info = dataset_info(name)
        assert info.name == name and info.metadata is METADATA[name]
        assert (info.parse is None) == (name == "synthetic")
    with pytest.raises(RegistryError, match="unknown dataset 'voc2077'; choose one of: coco, coco2014, coco2017, csv"):
        build_dataset(DataConfig(dataset="voc2077"))
    with pytest.raises(ValueError, match="no entry"):
        catalog.register_dataset("not-in-the-catalog", lambda cfg: None)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Every reader's fixture, built once at 32 px."""
    out = {}
    for name, make in FIXTURES.items():
        root = tmp_path_factory.mktemp(name)
        make(root / "data")
        out[name] = build_dataset(DataConfig(dataset=name, root=str(root / "data"), image_size=32,
                                             cache_dir=str(root / "cache")))
    return out


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_metadata_agrees_with_what_the_reader_produces(bundles, name) -> None:
    bundle, meta = bundles[name], METADATA[name]
    assert bundle.partial_test_labels == meta.partial_test_labels
    assert (bundle.class_frequency is not None) == meta.frequency_groups
    if meta.class_names is not None:
        assert bundle.class_names == meta.class_names
    if name in ("voc2007", "voc2012", "nuswide", "cub"):  # fixtures with the real class count
        assert bundle.num_classes == meta.num_classes
    if meta.frequency_groups:  # positives per class over the training split, computed from the data
        observed = bundle.train.observed.to_numpy()
        assert np.array_equal(bundle.class_frequency, (observed == 1).sum(0))


@pytest.mark.skipif(not VOC2007_LABELS.is_dir(), reason="needs ../shared/data/voc2007-labels")
def test_voc2007_expected_positives_match_its_trainval_labels() -> None:
    from pamc.data.adapters.voc import read_flags

    _, flags = read_flags(VOC2007_LABELS, "trainval")
    assert round(float((flags == 1).sum(1).mean()), 1) == METADATA["voc2007"].method_defaults.expected_num_pos == 1.5


def test_published_defaults_by_dataset() -> None:
    assert dataset_params("epr", "voc2007") == {"expected_num_pos": 1.5}
    assert dataset_params("role", "coco2017") == dataset_params("role", "coco2014") == {"expected_num_pos": 2.9}
    assert dataset_params("em-apl", "voc2007") == {"alpha": 0.2, "beta": 0.02, "warmup_epochs": 5,
                                                   "neg_proportion": 0.9}
    assert dataset_params("em", "openimages-v3") == dataset_params("em", "csv") == {"alpha": 0.1}
    assert dataset_params("epr", "openimages-v3") == {}  # derived from the training labels
    assert dataset_params("ll-r", "voc2007") == {}


@pytest.mark.parametrize("name", ["openimages-v3", "csv"])
def test_derived_expected_positives_are_the_training_positives_per_image(bundles, name) -> None:
    train = bundles[name].train
    by_hand = (train.observed.to_numpy() == 1).sum() / len(train)
    assert resolve_method_params("role", name, {}, train) == {"expected_num_pos": round(float(by_hand), 3)}
    assert resolve_method_params("epr", name, {"expected_num_pos": 4.0}, train) == {"expected_num_pos": 4.0}


def _tiny_synthetic(**data) -> tuple[RunConfig, object]:
    cfg = RunConfig(data=DataConfig(synthetic=SyntheticConfig(num_train=40, num_test=20, image_size=32), **data))
    return cfg, build_dataset(cfg.data)


def test_data_facts_record_size_and_normalisation_with_their_precedence(monkeypatch) -> None:
    cfg, bundle = _tiny_synthetic()
    facts = resolve_data_facts(replace(cfg, method={"name": "epr"}), bundle)
    assert facts.data.image_size == 32
    assert (facts.data.mean, facts.data.std) == (IMAGENET_INPUT.mean, IMAGENET_INPUT.std)
    assert dict(facts.method.params) == {"expected_num_pos": 2.5}
    assert resolve_data_facts(facts, bundle) == facts  # a resumed run keeps its facts

    explicit = resolve_data_facts(replace(cfg, data__mean=[0.5, 0.5, 0.5]), bundle)
    assert explicit.data.mean == (0.5, 0.5, 0.5) and explicit.data.std == IMAGENET_INPUT.std

    monkeypatch.setattr(catalog, "input_spec", lambda name: InputSpec((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 224))
    declared = resolve_data_facts(cfg, bundle)
    assert (declared.data.mean, declared.data.std) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))

    monkeypatch.setattr(catalog, "input_spec", lambda name: None)  # a backbone that declares nothing
    info = dataset_info("synthetic")
    own = dataclasses.replace(info.metadata, mean=(0.7, 0.7, 0.7), std=(0.2, 0.2, 0.2))
    monkeypatch.setitem(DATASETS._items, "synthetic", dataclasses.replace(info, metadata=own))
    fallback = resolve_data_facts(cfg, bundle)
    assert (fallback.data.mean, fallback.data.std) == ((0.7, 0.7, 0.7), (0.2, 0.2, 0.2))

    with pytest.raises(ConfigError, match="data.image_size is 64 but synthetic images are 32 px"):
        resolve_data_facts(replace(cfg, data__image_size=64), bundle)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["voc2007", "openimages-v3"])
def test_every_method_starts_with_the_catalog_defaults(bundles, name, tmp_path) -> None:
    bundle = bundles[name]
    derived = round(float((bundle.train.observed.to_numpy() == 1).sum() / len(bundle.train)), 3)
    shipped = [m for m in LOSSES.names() if LOSSES.get(m).__module__.startswith("pamc.losses.")]
    assert len(shipped) == 14  # (tests may register losses of their own)
    for method in shipped:
        extra = {"linear_init_epochs": 1} if method == "role-li" else {}
        epochs = {"role-li": 2, "em-apl": 6}.get(method, 1)  # more than the head-only / warm-up epochs
        cfg = load_config(None, {
            "data.dataset": name, "data.root": "unused: the bundle is given", "method.name": method,
            "method.params": extra, "train.epochs": epochs, "train.batch_size": 8,
            "train.device": "cpu", "output_dir": str(tmp_path / method),
        })
        fit(cfg, dataset=bundle, callbacks=())
        recorded = load_config(tmp_path / method / "config.yaml")
        expected = {**dataset_params(method, name), **extra}
        if method in ("epr", "role", "role-li") and name == "openimages-v3":
            expected["expected_num_pos"] = derived
        assert dict(recorded.method.params) == expected, method
        assert recorded.data.image_size == 32
        assert json.loads((tmp_path / method / "test_results.json").read_text())["method"] == method


def test_cli_train_voc2007_epr_starts_with_the_catalog_default(tmp_path) -> None:
    FIXTURES["voc2007"](tmp_path / "data")
    assert main(["train", "--dataset", "voc2007", "--data-root", str(tmp_path / "data"), "--method", "epr",
                 "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--no-progress",
                 "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "run")]) == 0
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert recorded["method"]["params"] == {"expected_num_pos": 1.5}
    assert recorded["data"]["mean"] == list(IMAGENET_INPUT.mean)
