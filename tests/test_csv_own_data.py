"""A user's own CSV data: complete test labels, validation and model selection, boxes, cam, table."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from dataset_fixtures import make_csv, make_voc
from pamc.cli.main import main
from pamc.config import DataConfig, load_config
from pamc.data import ArrayLoader, DeviceTransform, LabelStore, SparseLabelStore, build_dataset
from pamc.data.scoring import unscorable_classes
from pamc.data.synthetic import make_scenes, write_csv_dataset
from pamc.engine import load_checkpoint, restore_model
from pamc.engine.hooks import Selection, resolve_selection
from pamc.engine.trainer import predict
from pamc.errors import DataError

sklearn_metrics = pytest.importorskip("sklearn.metrics")

SIZES = dict(num_train=120, num_val=30, num_test=60, num_classes=4, image_size=32)
RANK_WARNING = "validation cannot rank models"


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "csv", "--data-root", str(root), "--image-size", "32", "--epochs", "3",
            "--backbone", "smallcnn", "--batch-size", "16", "--lr", "0.003", "--no-progress",
            "--output-dir", str(out), *extra]


def read_list_csv(path: Path, names: list[str]) -> np.ndarray:
    """The positives of a list-form CSV as a 0/1 matrix, read without pamc."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.zeros((len(rows), len(names)), dtype=int)
    for r, row in enumerate(rows):
        for name in filter(None, row["labels"].split(";")):
            y[r, names.index(name)] = 1
    return y


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two generated CSV data sets: ``d1`` trained with --val-csv, ``d2`` (no val.csv) without."""
    root = tmp_path_factory.mktemp("own")
    write_csv_dataset(root / "d1", seed=0, **SIZES)
    write_csv_dataset(root / "d2", seed=7, **SIZES)
    for name in ("val.csv", "val.boxes.csv"):
        (root / "d2" / name).unlink()
    logger = logging.getLogger("pamc")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        assert main(train_args(root / "d1" / "train.csv", root / "val_csv",
                               "--val-csv", str(root / "d1" / "val.csv"))) == 0
        with_val = [r.getMessage() for r in records]
        records.clear()
        assert main(train_args(root / "d2" / "train.csv", root / "no_val")) == 0
        without_val = [r.getMessage() for r in records]
    finally:
        logger.removeHandler(handler)
    return {"root": root, "val_csv": root / "val_csv", "no_val": root / "no_val",
            "log_val_csv": with_val, "log_no_val": without_val}


def test_positives_only_test_csv_scores_absent_as_negative_like_sklearn(runs):
    d = runs["root"] / "d1"
    results = json.loads((runs["val_csv"] / "test_results.json").read_text())
    names = (d / "classes.txt").read_text().split()
    y = read_list_csv(d / "test.csv", names)
    assert 0 < y.sum() < y.size  # positives only in the file, so every absent entry is a negative
    path = runs["val_csv"] / "best.safetensors"
    ckpt = load_checkpoint(path)
    bundle = build_dataset(ckpt.config.data)
    scores = predict(restore_model(ckpt, path), ArrayLoader(bundle.test, 64), DeviceTransform("cpu"))
    expected = 100 * np.mean([sklearn_metrics.average_precision_score(y[:, c], scores[:, c]) for c in range(len(names))])
    assert 5 < results["test_map"] < 95
    assert results["test_map"] == pytest.approx(expected, abs=1e-9)


def test_partial_test_labels_leave_absent_out_and_warn(tmp_path, caplog):
    labels = make_csv(tmp_path / "d", n=30)
    (tmp_path / "d" / "test.csv").write_text("image,labels\n" + "".join(
        f"img/train_{r:04d}.jpg,{'cat' if r % 2 else 'dog'}\n" for r in range(12)))
    cfg = dict(dataset="csv", root=str(tmp_path / "d"), cache_dir=str(tmp_path / "c"), image_size=32)
    caplog.set_level(logging.WARNING)
    partial = build_dataset(DataConfig(**cfg, test_labels="partial"))
    assert set(np.unique(partial.test.full)) == {0, 1}
    warnings = [r.getMessage() for r in caplog.records if "cannot be scored" in r.getMessage()]
    # val from the train pool has few negatives; test has none: every class is named, counted
    assert any(m.startswith("csv test: 4 of 4 classes cannot be scored;") for m in warnings)
    test_warning = next(m for m in warnings if m.startswith("csv test"))
    assert "no negative (AP 100 whatever the model): cat, dog" in test_warning
    assert "no positive (AP 0): bird, fish" in test_warning
    caplog.clear()
    complete = build_dataset(DataConfig(**cfg))
    reorder = [2, 0, 1, 3]  # make_csv writes (cat, dog, bird, fish); the class list is sorted
    assert np.array_equal(complete.test.full, np.where(partial.test.full == 1, 1, -1))
    assert (complete.train.observed.to_numpy() == 0).any()  # the training CSV stays partial
    both = np.concatenate([complete.train.observed.to_numpy(), complete.val.observed.to_numpy()])
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, labels[:, reorder].tolist()))
    test_warning = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("csv test"))
    assert test_warning == "csv test: 2 of 4 classes cannot be scored; no positive (AP 0): bird, fish"


def test_wide_form_keeps_explicit_zero_in_complete_mode(tmp_path):
    make_csv(tmp_path / "d", n=20, form="wide")
    test = make_csv(tmp_path / "d", n=10, form="wide", name="test.csv", seed=1)
    bundle = build_dataset(DataConfig(dataset="csv", root=str(tmp_path / "d"), cache_dir=str(tmp_path / "c"),
                                      image_size=32))
    assert np.array_equal(bundle.test.full, test[:, [2, 0, 1, 3]]) and (bundle.test.full == 0).any()


def test_without_val_csv_the_run_warns_once_and_keeps_the_last_epoch(runs):
    results = json.loads((runs["no_val"] / "test_results.json").read_text())
    history = [json.loads(line) for line in (runs["no_val"] / "metrics.jsonl").read_text().splitlines()]
    assert [h["val_map"] for h in history] == [100.0] * 3  # one positive, no negative: nothing to rank
    assert sum(RANK_WARNING in m for m in runs["log_no_val"]) == 1
    assert results["select"] == "last" and results["best_epoch"] == 3
    assert load_checkpoint(runs["no_val"] / "best.safetensors").extra["epoch"] == 3


def test_with_val_csv_the_run_selects_on_that_set(runs):
    results = json.loads((runs["val_csv"] / "test_results.json").read_text())
    val_maps = [json.loads(line)["val_map"] for line in (runs["val_csv"] / "metrics.jsonl").read_text().splitlines()]
    assert not any(RANK_WARNING in m for m in runs["log_val_csv"])
    assert len(set(val_maps)) == 3 and max(val_maps) < 100
    assert results["select"] == "best_val" and results["best_epoch"] == 1 + int(np.argmax(val_maps))
    assert results["best_val_map"] == max(val_maps)
    bundle = build_dataset(load_config(runs["val_csv"] / "config.yaml").data)
    assert len(bundle.val) == SIZES["num_val"] and len(bundle.train) == SIZES["num_train"]


@pytest.mark.parametrize("choice, labels, ignore, mode, warns", [
    ("auto", [[1, -1], [-1, 1]], False, "best_val", False),
    ("auto", [[1, 0], [0, 1]], True, "last", True),
    ("auto", [[1, 0], [0, 1]], False, "best_val", False),  # 0 counts as negative when not ignored
    ("auto", [[1, 0], [-1, 0]], True, "best_val", False),  # one rankable class is enough
    ("best_val", [[1, 0], [0, 1]], True, "best_val", True),
    ("last", [[1, -1], [-1, 1]], False, "last", False),
])
def test_resolve_selection(choice, labels, ignore, mode, warns, caplog):
    caplog.set_level(logging.WARNING)
    for store in (np.array(labels, dtype=np.int8), LabelStore(np.array(labels, dtype=np.int8)),
                  SparseLabelStore.from_dense(np.array(labels, dtype=np.int8))):
        caplog.clear()
        selection = resolve_selection(choice, store, ignore)
        assert selection is Selection(mode)
        assert bool(caplog.records) == warns
    assert selection.keeps(50.0, 60.0) == (mode == "last") and selection.keeps(70.0, 60.0)


def test_unscorable_classes_by_hand():
    labels = np.array([[1, 0, -1, 1], [1, -1, -1, 0], [1, 1, -1, 0]], dtype=np.int8)
    no_pos, no_neg = unscorable_classes(labels, ignore_unobserved=True)
    assert no_pos.tolist() == [2] and no_neg.tolist() == [0, 3]
    no_pos, no_neg = unscorable_classes(labels, ignore_unobserved=False)
    assert no_pos.tolist() == [2] and no_neg.tolist() == [0]


def test_csv_boxes_side_file(tmp_path):
    d = tmp_path / "d"
    write_csv_dataset(d, num_train=20, num_val=8, num_test=10, num_classes=4, image_size=32)
    bundle = build_dataset(DataConfig(dataset="csv", root=str(d), cache_dir=str(tmp_path / "c"), image_size=64))
    scenes = make_scenes(10, 4, 32, seed=2 * 100_003)  # the generator's test scenes
    expected = scenes.boxes.copy()
    expected[:, 2:] *= 2  # boxes follow the resize from 32 to 64 px
    assert np.array_equal(bundle.test.boxes, expected) and len(bundle.val.boxes) and not len(bundle.train.boxes)
    (d / "test.boxes.csv").write_text("image,class,x0,y0,x1,y1\nimages/test/00000.jpg,disc,5,5,3,9\n")
    with pytest.raises(DataError, match=r"test.boxes.csv:2: a box needs 0 <= x0 < x1"):
        build_dataset(DataConfig(dataset="csv", root=str(d), cache_dir=str(tmp_path / "c2"), image_size=32))
    (d / "test.boxes.csv").write_text("image,class,x0,y0,x1,y1\nnope.jpg,disc,1,1,3,9\n")
    with pytest.raises(DataError, match=r"test.boxes.csv:2: image 'nope.jpg' is not in test.csv"):
        build_dataset(DataConfig(dataset="csv", root=str(d), cache_dir=str(tmp_path / "c3"), image_size=32))


def test_explain_gap_localisation_on_csv_data(runs, tmp_path, capsys):
    assert main(["explain-gap", str(runs["val_csv"]), str(runs["no_val"]), "--out", str(tmp_path / "gap")]) == 0
    summary = json.loads((tmp_path / "gap" / "gap.json").read_text())
    assert summary["localization"]["full"]["pairs"] > 0
    assert "localisation (full)" in capsys.readouterr().out


def test_cam_dataset_split_on_a_cached_csv_run(runs, tmp_path, capsys):
    out = tmp_path / "cams"
    assert main(["cam", str(runs["val_csv"]), "--dataset-split", "test", "--limit", "3", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"test_{i:05d}.png" for i in range(3)]
    assert "wrote 3 figures" in capsys.readouterr().out


def test_cam_dataset_split_on_a_cached_voc_run(tmp_path, capsys):
    make_voc(tmp_path / "voc", "2007", n_pool=20, n_test=6)
    assert main(["train", "--dataset", "voc2007", "--data-root", str(tmp_path / "voc"), "--image-size", "32",
                 "--epochs", "1", "--backbone", "smallcnn", "--batch-size", "8", "--no-progress",
                 "--output-dir", str(tmp_path / "run")]) == 0
    out = tmp_path / "cams"
    assert main(["cam", str(tmp_path / "run"), "--dataset-split", "test", "--limit", "2", "--side-by-side",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["test_00000.png", "test_00001.png"]
    assert "wrote 2 figures" in capsys.readouterr().out


def test_table_gives_two_csv_data_sets_two_columns(runs, tmp_path, capsys):
    assert main(["table", str(runs["val_csv"]), str(runs["no_val"]), "--csv", str(tmp_path / "t.csv")]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "| method | csv (d1/train.csv) | csv (d2/train.csv) |"
    with (tmp_path / "t.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["dataset"], r["runs"]) for r in rows] == [("csv (d1/train.csv)", "1"), ("csv (d2/train.csv)", "1")]


def test_table_groups_runs_by_the_data_name_the_user_gives(runs, tmp_path, capsys):
    import shutil

    import yaml

    for name in ("val_csv", "no_val"):
        shutil.copytree(runs[name], tmp_path / name)
        cfg = yaml.safe_load((tmp_path / name / "config.yaml").read_text())
        cfg["data"]["name"] = "shapes"
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["table", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| method | shapes |" and lines[2].startswith("| an | ")


def test_csv_options_are_checked():
    from pamc.config import config_from_dict
    from pamc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.test_labels' must be one of \['complete', 'partial'\]"):
        config_from_dict({"data": {"test_labels": "all"}})
    with pytest.raises(ConfigError, match=r"train.select' must be one of \['auto', 'best_val', 'last'\]"):
        config_from_dict({"train": {"select": "best"}})
