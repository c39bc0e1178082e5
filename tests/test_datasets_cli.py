"""``pamc prepare`` and ``pamc train`` end to end on every adapter's fixture, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataset_fixtures import (
    make_coco, make_csv, make_cub, make_nuswide_formatted, make_nuswide_official, make_openimages, make_voc, truncate,
)
from pamc.cli.main import main
from pamc.config import DataConfig, load_config
from pamc.data import SparseLabelStore, build_dataset
from pamc.engine import fit

FIXTURES = {
    "voc2007": lambda root: make_voc(root, "2007", n_pool=24, n_test=10),
    "voc2012": lambda root: make_voc(root, "2012", n_pool=24, n_test=10),
    "coco2014": lambda root: make_coco(root, n_train=24, n_val=10),
    "nuswide": lambda root: make_nuswide_formatted(root, n_train=24, n_val=10),
    "cub": lambda root: make_cub(root, n=30),
    "openimages-v3": lambda root: make_openimages(root, n_train=30, n_test=12),
    "csv": lambda root: make_csv(root, n=30),
}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pamc", *args], capture_output=True, text=True, timeout=300)


def train_args(root: Path, tmp_path: Path, dataset: str, *extra: str) -> list[str]:
    return ["train", "--dataset", dataset, "--data-root", str(root), "--image-size", "32", "--epochs", "1",
            "--backbone", "smallcnn", "--batch-size", "8", "--lr", "0.001", "--no-progress",
            "--cache-dir", str(tmp_path / "prepared"), "--output-dir", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_train_end_to_end_on_each_adapter(tmp_path, dataset, capsys):
    FIXTURES[dataset](tmp_path / "data")
    assert main(train_args(tmp_path / "data", tmp_path, dataset)) == 0
    results = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert results["dataset"] == dataset and 0 <= results["test_map"] <= 100
    assert ("test_group_map" in results) == (dataset == "openimages-v3")
    assert "test mAP" in capsys.readouterr().out


def test_nuswide_official_end_to_end_with_the_default_cache_folder(tmp_path):
    make_nuswide_official(tmp_path / "data", ["airport", "animal", "beach", "bear", "birds", "boats"], n_train=20)
    args = train_args(tmp_path / "data", tmp_path, "nuswide")
    at = args.index("--cache-dir")
    assert main(args[:at] + args[at + 2:]) == 0
    assert len(list((tmp_path / "data" / ".pamc-cache").glob("images-32-*.u8"))) == 2
    assert not (tmp_path / "prepared").exists()


def test_openimages_group_map_and_eval_use_the_partial_test_labels(tmp_path, capsys):
    from pamc.evaluation.metrics import group_average_precision

    make_openimages(tmp_path / "oi", n_train=30, n_test=12)
    assert main(train_args(tmp_path / "oi", tmp_path, "openimages-v3")) == 0
    results = json.loads((tmp_path / "run" / "test_results.json").read_text())
    bundle = build_dataset(load_config(tmp_path / "run" / "config.yaml").data)
    ap = np.array(list(results["test_ap"].values())) / 100
    assert len(ap) == 12
    expected = group_average_precision(ap, bundle.class_frequency, 5)
    assert results["test_group_map"] == pytest.approx([100 * v for v in expected])
    assert bundle.class_frequency.sum() == (bundle.train.observed.to_numpy() == 1).sum()
    capsys.readouterr()
    out_json = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "run"), "--json", str(out_json)]) == 0
    # pamc eval reproduces the test mAP, so it also leaves the unannotated entries out
    assert json.loads(out_json.read_text())["results"][0]["map"] == pytest.approx(results["test_map"], abs=1e-9)


@pytest.mark.slow
def test_csv_dataset_of_200_jpegs_end_to_end(tmp_path):
    make_csv(tmp_path / "d", n=200, classes=("red", "green", "blue", "gray", "white"), size=(96, 72))
    make_csv(tmp_path / "d", n=60, classes=("red", "green", "blue", "gray", "white"), name="test.csv", seed=9, size=(96, 72))
    args = train_args(tmp_path / "d" / "train.csv", tmp_path, "csv", "--test-csv", str(tmp_path / "d" / "test.csv"))
    assert main(args) == 0
    results = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert len(results["test_ap"]) == 5
    sizes = sorted(p.stat().st_size for p in (tmp_path / "prepared").glob("images-32-*.u8"))
    assert sizes == [60 * 3 * 32 * 32, 200 * 3 * 32 * 32]


def test_prepare_then_train_reuses_the_prepared_folder(tmp_path, capsys, caplog):
    make_voc(tmp_path / "data", "2007", n_pool=20, n_test=8)
    out = tmp_path / "prepared"
    assert main(["prepare", "voc2007", "--data-root", str(tmp_path / "data"), "--out", str(out),
                 "--image-size", "32", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "train_listed 20" in printed and "test 8" in printed
    meta = json.loads((out / "index.json").read_text())
    assert meta["dataset"] == "voc2007" and meta["num_train"] == 20 and len(meta["class_names"]) == 20
    made = sorted(p.name for p in out.iterdir())
    assert {"index-train.npz", "index-test.npz"} <= set(made)
    assert any(n.startswith("observed-1pos-0neg-seed1200-") for n in made)
    caplog.set_level("INFO")
    assert main(train_args(tmp_path / "data", tmp_path, "voc2007")) == 0
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "reusing the dataset index" in messages and "reusing image cache" in messages
    assert "reusing observed labels" in messages
    assert sorted(p.name for p in out.iterdir()) == made


def test_prepare_without_cache_writes_index_and_observed_labels(tmp_path):
    make_coco(tmp_path / "coco", n_train=10, n_val=4)
    out = tmp_path / "p"
    assert main(["prepare", "coco2014", "--data-root", str(tmp_path / "coco"), "--out", str(out), "--no-cache",
                 "--num-pos", "2", "--obs-seed", "7"]) == 0
    names = [p.name for p in out.iterdir()]
    assert not any(n.endswith(".u8") for n in names)
    assert any(n.startswith("observed-2pos-0neg-seed7-") for n in names)


def test_ll_cp_corrections_reach_the_sparse_store(tmp_path):
    make_openimages(tmp_path / "oi", n_train=30, n_test=10)
    cfg = load_config(None, {
        "data.dataset": "openimages-v3", "data.root": str(tmp_path / "oi"), "data.image_size": 32,
        "data.cache_dir": str(tmp_path / "c"), "data.label_store": "sparse", "model.backbone": "smallcnn",
        "method.name": "ll-cp", "method.params": {"delta_rel": 5.0}, "train.epochs": 2, "train.batch_size": 8,
        "output_dir": str(tmp_path / "run"),
    })
    bundle = build_dataset(cfg.data)
    assert isinstance(bundle.train.observed, SparseLabelStore)
    before = bundle.train.observed.to_numpy()
    result = fit(cfg, dataset=bundle, callbacks=())
    after = bundle.train.observed.to_numpy()
    corrected = result.history[1]["corrected_labels"]
    assert result.history[0]["corrected_labels"] == 0 and corrected > 0
    changed = after != before
    assert (after[changed] == 1).all() and 0 < changed.sum() <= corrected


def _one_line_error(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("pamc: error:") and message in lines[-1], proc.stderr


def _in_process_error(capsys, args: list[str], message: str) -> None:
    """``main`` catches PamcError and prints one line; anything else would raise here."""
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pamc: error:") and message in err, err


def test_bad_input_through_the_cli(tmp_path, capsys):
    _one_line_error(run_cli("prepare", "voc2007", "--data-root", str(tmp_path / "nope")), "does not exist")
    make_voc(tmp_path / "voc", "2007", n_pool=6, n_test=4)
    main_dir = tmp_path / "voc" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    (main_dir / "dog_trainval.txt").unlink()
    _in_process_error(capsys, ["prepare", "voc2007", "--data-root", str(tmp_path / "voc")],
                      f"missing split file {main_dir / 'dog_trainval.txt'}")
    d = tmp_path / "csv"
    make_csv(d, n=12)
    with (d / "train.csv").open("a") as f:
        f.write("img/train_0003.jpg,cat,\n")
    _in_process_error(capsys, ["prepare", "csv", "--data-root", str(d)], "image 'img/train_0003.jpg' is listed twice")
    (d / "train.csv").write_text("image,cat,dog\nimg/train_0000.jpg,1,5\n")
    _in_process_error(capsys, ["prepare", "csv", "--data-root", str(d)], "value '5' for class 'dog' is not one of -1, 0, 1")
    (d / "classes.txt").write_text("cat\ndog\n")
    (d / "train.csv").write_text("image,labels\nimg/train_0000.jpg,cat;owl\n")
    _in_process_error(capsys, ["prepare", "csv", "--data-root", str(d)], "unknown class 'owl'")
    (d / "train.csv").write_text("image,labels\n")
    _in_process_error(capsys, ["train", "--dataset", "csv", "--data-root", str(d), "--output-dir", str(tmp_path / "o")],
                      "no image rows (empty dataset)")
    (d / "train.csv").write_text("image,labels\nimg/absent.jpg,cat\n")
    _in_process_error(capsys, ["prepare", "csv", "--data-root", str(d), "--strict"], "absent.jpg is missing (strict mode)")
    _in_process_error(capsys, ["prepare", "csv", "--data-root", str(d)], "no usable images (1 listed)")


def test_corrupt_jpeg_warning_then_strict_error_through_the_cli(tmp_path, capsys):
    d = tmp_path / "csv"
    make_csv(d, n=16)
    truncate(d / "img" / "train_0002.jpg")
    (d / "img" / "train_0005.jpg").unlink()
    proc = run_cli("prepare", "csv", "--data-root", str(d), "--out", str(tmp_path / "p"), "--image-size", "32", "--no-progress")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1
    assert "skipped 2 of 16 images: 1 missing (first: img/train_0005.jpg), 1 corrupt or truncated (first: img/train_0002.jpg)" in warnings[0]
    assert "train_listed 16" in proc.stdout and "train 9, val 2, test 3" in proc.stdout
    _in_process_error(capsys, ["prepare", "csv", "--data-root", str(d), "--out", str(tmp_path / "q"), "--strict"],
                      "train_0002.jpg cannot be decoded (corrupt or truncated) (strict mode)")


def test_train_on_the_real_voc2007_label_files(tmp_path, caplog):
    """The official label files, with JPEGs generated for the first 40 ids of each split."""
    from dataset_fixtures import write_jpeg
    from test_adapters import VOC2007_LABELS

    if not VOC2007_LABELS.is_dir():
        pytest.skip(f"real VOC2007 label files not found at {VOC2007_LABELS}")
    base = tmp_path / "VOCdevkit" / "VOC2007"
    base.mkdir(parents=True)
    (base / "ImageSets").symlink_to(VOC2007_LABELS / "ImageSets")
    for split in ("trainval", "test"):
        ids = (VOC2007_LABELS / "ImageSets" / "Main" / f"aeroplane_{split}.txt").read_text().split()[::2][:40]
        for i, image_id in enumerate(ids):
            write_jpeg(base / "JPEGImages" / f"{image_id}.jpg", i)
    caplog.set_level("WARNING")
    assert main(train_args(tmp_path, tmp_path, "voc2007")) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("skipped 4971 of 5011 images: 4971 missing" in w for w in warnings)
    assert any("skipped 4912 of 4952 images: 4912 missing" in w for w in warnings)
    results = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert len(results["test_ap"]) == 20


def test_eval_of_a_downloaded_checkpoint_does_not_write_where_its_metadata_says(tmp_path, capsys):
    """``data.cache_dir`` in a checkpoint's metadata names another machine's (or an attacker's)
    folder: eval uses the data root's default prepared folder instead."""
    import json as jsonlib

    from safetensors import safe_open
    from safetensors.torch import save_file

    make_csv(tmp_path / "data", n=30)
    assert main(train_args(tmp_path / "data", tmp_path, "csv")) == 0
    with safe_open(str(tmp_path / "run" / "best.safetensors"), framework="pt") as f:
        metadata, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    cfg = jsonlib.loads(metadata["config"])
    cfg["data"]["cache_dir"] = str(tmp_path / "victim")
    metadata["config"] = jsonlib.dumps(cfg)
    save_file(tensors, str(tmp_path / "downloaded.safetensors"), metadata=metadata)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "downloaded.safetensors")]) == 0
    assert "test mAP" in capsys.readouterr().out
    assert not (tmp_path / "victim").exists()
    assert len(list((tmp_path / "data" / ".pamc-cache").glob("images-32-*.u8"))) == 1
