"""``pamc observe``: the observed training labels drawn once, reused, and trained on."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataset_fixtures import make_openimages, make_voc
from pamc.cli.main import main
from pamc.config import DataConfig
from pamc.data import observe, split_indices
from pamc.data.catalog import parser
from pamc.data import label_store_from_state
from pamc.engine.resume import load_last


def observe_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["observe", "voc2007", "--data-root", str(root), "--out", str(out), *extra]


def observed_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("observed-*.npz"))


def read_observed(path: Path, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.int8)
    with np.load(path) as f:
        out[f["rows"], f["cols"]] = f["values"]
    return out


@pytest.fixture()
def voc(tmp_path: Path) -> Path:
    make_voc(tmp_path / "voc", "2007", n_pool=24, n_test=8)
    return tmp_path / "voc"


def test_observe_writes_the_labels_of_observe_and_reuses_them(voc, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(observe_args(voc, out, "--num-pos", "2", "--num-neg", "3")) == 0
    printed = capsys.readouterr().out
    [path] = observed_files(out)
    assert path.name.startswith("observed-2pos-3neg-seed1200-")
    assert f"{path} (written)" in printed and "24 images" in printed
    assert "2.00 positive, 3.00 negative" in printed
    assert (out / "index.json").is_file()  # parsed like prepare does, index written
    # exactly what the library's observe draws from the parsed full labels
    parsed = parser("voc2007")(DataConfig(dataset="voc2007", root=str(voc)))
    full = parsed.pool.dense(20)
    expected = observe(full, 2, 3, 1200)
    assert np.array_equal(read_observed(path, full.shape), expected)

    data = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    assert main(observe_args(voc, out, "--num-pos", "2", "--num-neg", "3")) == 0
    assert f"{path} (reused)" in capsys.readouterr().out
    assert observed_files(out) == [path] and path.read_bytes() == data and path.stat().st_mtime_ns == mtime


def test_a_different_seed_gives_a_different_file(voc, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(observe_args(voc, out)) == 0
    assert main(observe_args(voc, out, "--seed", "7")) == 0
    default, seven = sorted(observed_files(out), key=lambda p: "seed7" in p.name)
    assert "seed1200" in default.name and "seed7" in seven.name
    assert read_observed(default, (24, 20)).tolist() != read_observed(seven, (24, 20)).tolist()
    assert "(written)" in capsys.readouterr().out


def test_observe_reuses_the_index_of_prepare(voc, tmp_path, caplog):
    out = tmp_path / "prepared"
    assert main(["prepare", "voc2007", "--data-root", str(voc), "--out", str(out), "--no-cache"]) == 0
    [prepared] = observed_files(out)
    caplog.set_level("INFO")
    assert main(observe_args(voc, out)) == 0
    assert "reusing the dataset index" in caplog.text and "reusing observed labels" in caplog.text
    assert observed_files(out) == [prepared]


def test_train_with_the_folder_trains_on_exactly_those_labels(voc, tmp_path, caplog):
    out = tmp_path / "prepared"
    assert main(observe_args(voc, out, "--num-pos", "2", "--num-neg", "1", "--seed", "7")) == 0
    [path] = observed_files(out)
    caplog.set_level("INFO")
    run = tmp_path / "run"
    assert main(["train", "--dataset", "voc2007", "--data-root", str(voc), "--cache-dir", str(out),
                 "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--no-progress", "--method", "an",
                 "--set", "data.num_pos=2", "--set", "data.num_neg=1", "--set", "data.obs_seed=7",
                 "--output-dir", str(run)]) == 0
    assert f"reusing observed labels {path}" in caplog.text
    assert observed_files(out) == [path]  # nothing drawn again
    # the run's training label store (saved in its last checkpoint; AN corrects nothing)
    _, state = load_last(run)
    train_rows, _ = split_indices(24, 0.2, 1200)
    assert np.array_equal(label_store_from_state(state.hooks["labels"]).to_numpy(), read_observed(path, (24, 20))[train_rows])


def test_a_dataset_with_real_partial_labels_has_nothing_to_draw(tmp_path, capsys):
    make_openimages(tmp_path / "oi", n_train=10, n_test=5)
    assert main(["observe", "openimages-v3", "--data-root", str(tmp_path / "oi"), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err == ("pamc: error: openimages-v3 has real partial labels, which training uses as they are: "
                   "there are no observed labels to draw\n")
    assert not observed_files(tmp_path / "p")


def exit_code(args: list[str]) -> int:
    """``main``'s return value, or the code argparse exits with."""
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.parametrize("args, message", [
    (["observe", "voc3"], "unknown dataset 'voc3'; choose one of: coco, coco2014"),
    (["observe", "voc2007", "--num-pos", "-1"], "data.num_pos must be >= 0"),
    (["observe", "voc2007", "--num-neg", "-2"], "data.num_neg must be >= 0"),
    (["observe", "voc2007", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
])
def test_bad_input_is_one_line_and_exit_2(voc, tmp_path, capsys, args, message):
    capsys.readouterr()
    assert exit_code([*args, "--data-root", str(voc), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pamc: error:") and message in err, err
    assert not (tmp_path / "p").exists()


def test_missing_root_through_the_command_line(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pamc", "observe", *args], capture_output=True, text=True,
                              timeout=120)

    proc = run("voc2007", "--data-root", str(tmp_path / "nope"))
    assert proc.returncode == 2 and proc.stderr == f"pamc: error: data root {tmp_path / 'nope'} does not exist\n"
    proc = run("voc2007")
    assert proc.returncode == 2 and proc.stderr.endswith("the following arguments are required: --data-root\n")
