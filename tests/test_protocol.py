"""``data.protocol``: the authors' observation, split and LL arithmetic, exactly.

The oracle ``voc2007-authors-protocol.npz`` is the output of the BoostLU authors' own
preprocessing run on the real VOC 2007 label files (``../shared/data/README.md``): the official
``train`` split as training pool, ``val`` as test set, i.e. what pamc's ``voc2012`` reader
reads (train / val) from a folder holding those files.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pamc.config import DataConfig, RunConfig, config_from_dict
from pamc.data import build_dataset, split_indices
from pamc.data.adapters import ParsedDataset, SplitIndex
from pamc.data.catalog import parser
from pamc.data.adapters.voc import read_flags
from pamc.data.adapters.common import apply_protocol
from pamc.data.labels import observe
from pamc.errors import ConfigError
from pamc.losses import LargeLossCorrectionPermanent, LargeLossReject, loss_from_config

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOC2007_LABELS = SHARED / "voc2007-labels"
ORACLE = SHARED / "authors-protocol" / "voc2007-authors-protocol.npz"
SETTINGS = ((1, 0), (1, 1), (2, 3))
needs_oracle = pytest.mark.skipif(not (ORACLE.is_file() and VOC2007_LABELS.is_dir()),
                                  reason=f"authors' protocol oracle or VOC 2007 labels not found under {SHARED}")


@pytest.fixture(scope="module")
def oracle():
    with np.load(ORACLE) as f:
        return {k: f[k] for k in f.files}


def parsed_authors(root: Path, **kw):
    cfg = DataConfig(dataset="voc2012", root=str(root), protocol="authors", **kw)
    return cfg, apply_protocol(parser("voc2012")(cfg), cfg)


@needs_oracle
def test_reader_observation_and_split_equal_the_authors_preprocessing(oracle):
    cfg, parsed = parsed_authors(VOC2007_LABELS)
    assert tuple(oracle["class_names"]) == parsed.class_names
    for index, name in ((parsed.pool, "train"), (parsed.test, "val")):
        assert [Path(p).name for p in index.paths] == oracle[f"{name}_images"].tolist()
        full = index.dense(20)
        assert np.array_equal(full, np.where(oracle[f"{name}_labels"] == 1, 1, -1))
        for num_pos, num_neg in SETTINGS:
            got = observe(full, num_pos, num_neg, cfg.obs_seed, "authors")
            assert np.array_equal(got, oracle[f"{name}_obs_pos{num_pos}_neg{num_neg}"]), (name, num_pos, num_neg)
            # pamc's own draw is a different (equally valid) one
            assert not np.array_equal(observe(full, num_pos, num_neg, cfg.obs_seed), got)
    train_idx, val_idx = split_indices(len(parsed.pool), cfg.val_fraction, cfg.split_seed, "authors")
    assert np.array_equal(train_idx, oracle["split_train_idx"])
    assert np.array_equal(val_idx, oracle["split_val_idx"])
    pamc_train, _ = split_indices(len(parsed.pool), cfg.val_fraction, cfg.split_seed)
    assert len(pamc_train) == len(train_idx) and not np.array_equal(pamc_train, train_idx)


@needs_oracle
def test_difficult_flag_is_the_protocols_choice_unless_set():
    flags = read_flags(VOC2007_LABELS, "train")[1]
    _, authors = parsed_authors(VOC2007_LABELS)
    assert np.array_equal(authors.pool.dense(20), np.where(flags == 1, 1, -1))
    pamc = parser("voc2012")(DataConfig(dataset="voc2012", root=str(VOC2007_LABELS)))
    assert np.array_equal(pamc.pool.dense(20), np.where(flags == 0, 1, flags))
    _, ignore = parsed_authors(VOC2007_LABELS, voc_difficult="ignore")
    assert np.array_equal(ignore.pool.dense(20), flags)


def test_authors_keep_only_images_with_a_positive():
    index = SplitIndex.from_dense(["a", "b", "c", "d"], np.array([[1, -1], [-1, -1], [0, 0], [-1, 1]]))
    parsed = ParsedDataset("x", Path("."), ("p", "q"), index, index)
    kept = apply_protocol(parsed, DataConfig(protocol="authors"))
    assert kept.pool.paths == ["a", "d"] and kept.test.paths == ["a", "d"]
    assert kept.pool.dense(2).tolist() == [[1, -1], [-1, 1]]
    assert apply_protocol(parsed, DataConfig()) is parsed
    partial = ParsedDataset("x", Path("."), ("p", "q"), index, index, partial=True)
    assert apply_protocol(partial, DataConfig(protocol="authors")) is partial


@needs_oracle
@pytest.mark.slow
def test_built_dataset_under_authors_protocol_equals_the_oracle(oracle, tmp_path):
    """The whole path: reader, filter, image cache, observation and split, as training sees it."""
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets").symlink_to(VOC2007_LABELS / "ImageSets")
    tiny = Image.new("RGB", (16, 16), (90, 40, 10))
    for name in (*oracle["train_images"], *oracle["val_images"]):
        tiny.save(root / "JPEGImages" / name)
    split_train, split_val = oracle["split_train_idx"], oracle["split_val_idx"]
    for num_pos, num_neg in SETTINGS:
        bundle = build_dataset(DataConfig(dataset="voc2012", root=str(tmp_path), image_size=16,
                                          cache_dir=str(tmp_path / "cache"), protocol="authors",
                                          num_pos=num_pos, num_neg=num_neg))
        obs = oracle[f"train_obs_pos{num_pos}_neg{num_neg}"]
        assert np.array_equal(bundle.train.observed.to_numpy(), obs[split_train])
        assert np.array_equal(bundle.val.observed.to_numpy(), obs[split_val])
        full = np.where(oracle["train_labels"] == 1, 1, -1)
        assert np.array_equal(bundle.val.full_rows(np.arange(len(split_val))), full[split_val])
        assert np.array_equal(bundle.test.full_rows(np.arange(2510)), np.where(oracle["val_labels"] == 1, 1, -1))


def test_synthetic_dataset_follows_the_protocol():
    cfg = dict(dataset="synthetic", synthetic={"num_train": 60, "num_test": 10, "image_size": 16})
    pamc = build_dataset(config_from_dict({"data": cfg}).data)
    authors = build_dataset(config_from_dict({"data": {**cfg, "protocol": "authors"}}).data)
    pool = pamc.train.full_rows(np.arange(len(pamc.train)))
    assert len(authors.train) == len(pamc.train) == 48
    # the authors' split of the same pool, and their draw on it
    from pamc.data.synthetic import make_scenes
    scenes = make_scenes(60, seed=0, num_classes=10, image_size=16, min_objects=1, max_objects=4, noise=0.25)
    train_idx, _ = split_indices(60, 0.2, 1200, "authors")
    expected = observe(scenes.labels, 1, 0, 1200, "authors")[train_idx]
    assert np.array_equal(authors.train.observed.to_numpy(), expected)
    assert pool.shape == (48, 10)


def test_protocol_is_an_enum():
    assert config_from_dict({"data": {"protocol": "authors"}}).data.protocol == "authors"
    with pytest.raises(ConfigError, match="data.protocol"):
        config_from_dict({"data": {"protocol": "author"}})
    with pytest.raises(ConfigError, match="data.protocol"):
        DataConfig(protocol="Authors")
    assert DataConfig().resolved_voc_difficult == "positive"
    assert DataConfig(protocol="authors").resolved_voc_difficult == "negative"
    assert DataConfig(protocol="authors", voc_difficult="ignore").resolved_voc_difficult == "ignore"


def test_observe_authors_by_hand():
    """RandomState(7) shuffles, image by image: positives first, then negatives, even with count 0."""
    full = np.array([[1, 1, -1, -1, 1], [-1, 1, -1, 1, -1]], dtype=np.int8)
    rng = np.random.RandomState(7)
    expected = np.zeros_like(full)
    for i in range(2):
        pos, neg = np.flatnonzero(full[i] == 1), np.flatnonzero(full[i] == -1)
        rng.shuffle(pos)
        expected[i, pos[:1]] = 1
        rng.shuffle(neg)  # advances the generator although num_neg is 0
    assert np.array_equal(observe(full, 1, 0, 7, "authors"), expected)
    assert (observe(full, 1, 0, 7, "authors") == 1).sum(1).tolist() == [1, 1]
    # a split of 10 into 8/2 by hand: RandomState(3).permutation(10), the last two go to validation
    perm = np.random.RandomState(3).permutation(10)
    train, val = split_indices(10, 0.2, 3, "authors")
    assert val.tolist() == sorted(perm[-2:].tolist()) and train.tolist() == sorted(perm[:8].tolist())


# k at B=16, C=20 (320 entries), delta_rel 0.5 (LL-R), epochs 1..10. By hand, k = ceil(1.6 * (e - 1)):
# 0 (epoch 1 is plain AN), 2, 4, 5, 7, 8, 10, 12, 13, 15. The authors subtract 0.005 from a float
# clean rate once per epoch: in epoch 6 it is 0.9749999999999999..., 320 * (1 - it) =
# 8.000000000000007, whose ceil is 9. pamc's own arithmetic gives the exact 8.
K_AUTHORS_LLR = [0, 2, 4, 5, 7, 9, 10, 12, 13, 15]
K_PAMC_LLR = [0, 2, 4, 5, 7, 8, 10, 12, 13, 15]


@pytest.mark.parametrize("protocol, expected", [("authors", K_AUTHORS_LLR), ("pamc", K_PAMC_LLR)])
def test_ll_k_sequence_over_ten_epochs(protocol, expected):
    loss = LargeLossReject(delta_rel=0.5, protocol=protocol)
    ks = []
    for epoch in range(1, 11):
        loss.on_epoch_start(epoch)
        ks.append(loss.num_selected(16 * 20))
    assert ks == expected
    loss.on_epoch_start(6)
    rate = 1
    for _ in range(5):
        rate -= 0.005
    assert float(loss.clean_rate) == (rate if protocol == "authors" else 0.975)
    # LL-Cp: ceil(320 * 0.001) = 1 per batch from epoch 2 on, under both protocols
    cp = LargeLossCorrectionPermanent(delta_rel=0.1, protocol=protocol)
    cp_ks = []
    for epoch in range(1, 11):
        cp.on_epoch_start(epoch)
        cp_ks.append(cp.num_selected(320))
    assert cp_ks == [0] + [1] * 9


def test_ll_r_rejects_k_losses_in_epoch_six():
    """The forward pass zeroes exactly k of the unobserved losses: 9 (authors) vs 8 (pamc)."""
    torch.manual_seed(0)
    logits = torch.linspace(-3, 3, 320).reshape(16, 20)[torch.randperm(16)]
    observed = torch.zeros(16, 20, dtype=torch.int8)
    observed[torch.arange(16), torch.arange(16)] = 1
    index = torch.arange(16)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, (observed == 1).float(), reduction="none")
    unobserved_sorted = bce[observed == 0].sort(descending=True).values
    for protocol, k in (("authors", 9), ("pamc", 8)):
        loss = LargeLossReject(delta_rel=0.5, protocol=protocol)
        loss.on_epoch_start(6)
        expected = (bce.sum() - unobserved_sorted[:k].sum()) / 320
        assert torch.allclose(loss(logits, observed, index).loss, expected, rtol=0, atol=1e-7)


def test_loss_from_config_passes_the_protocol():
    cfg = config_from_dict({"data": {"protocol": "authors"}, "method": {"name": "ll-ct"}})
    assert loss_from_config(cfg).protocol == "authors"
    assert loss_from_config(RunConfig()).__class__.__name__ == "AssumeNegativeLoss"
    cfg = config_from_dict({"data": {"protocol": "authors"}, "method": {"name": "ll-r", "params": {"protocol": "pamc"}}})
    assert loss_from_config(cfg).protocol == "pamc"
    assert math.isclose(loss_from_config(cfg).delta_rel, 0.5)
