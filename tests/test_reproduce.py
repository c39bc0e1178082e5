"""``pamc reproduce``: a dataset's paper rows, resumably, with the paper's numbers beside ours.

The data are the test suite's synthetic scenes written in each dataset's own layout
(``dataset_fixtures``); the configs are the real ``configs/paper`` files with tiny sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataset_fixtures import make_openimages, make_voc
from pamc.cli.main import main
from pamc.engine.callbacks import Callback
from pamc.reproduce import paper_rows, run_reproduce

TINY = {"model.backbone": "smallcnn", "model.pretrained": None, "data.image_size": 32, "train.epochs": 2,
        "train.batch_size": 8, "train.device": "cpu"}
TINY_FLAGS = [f"--set={k}={'null' if v is None else v}" for k, v in TINY.items()]


class InterruptAt(Callback):
    """Stops the run like Ctrl-C at the start of ``epoch`` (after the previous epoch's checkpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, epoch: int, num_batches: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    make_voc(root, "2012", n_pool=30, n_test=12)
    return root


def test_paper_rows_are_the_tables_rows_trained_rows_first() -> None:
    rows = paper_rows("voc2012")
    names = [r.name for r in rows]
    assert len(names) == 15 and names[-1] == "an-boostlu" and rows[-1].evaluates == "an"
    assert {"wan", "epr", "gr-loss"}.isdisjoint(names)  # not rows of the paper's tables
    assert [r.name for r in paper_rows("openimages-v3")] == [
        "ll-cp-boostlu", "ll-cp", "ll-ct-boostlu", "ll-ct", "ll-r-boostlu", "ll-r"]
    assert all(r.config.data.protocol == "authors" for r in rows)


@pytest.mark.slow
def test_interrupted_reproduce_resumes_and_skips_finished_runs(voc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rows = ["an", "an-boostlu", "ll-r-boostlu"]
    interrupt = {"ll-r-boostlu": InterruptAt(2)}
    with pytest.raises(KeyboardInterrupt):
        run_reproduce("voc2012", voc_root, out, [0], rows=rows, overrides=TINY,
                      callbacks_for=lambda row, seed: [interrupt[row]] if row in interrupt else [])
    llr = out / "runs" / "ll-r-boostlu-seed0"
    assert (out / "runs" / "an-seed0" / "test_results.json").is_file()
    assert (llr / "last.safetensors").is_file() and not (llr / "test_results.json").exists()
    first = run_reproduce("voc2012", voc_root, out, [0], rows=rows, overrides=TINY)
    assert first["runs"] == {"an-seed0": "skipped", "ll-r-boostlu-seed0": "resumed", "an-boostlu-seed0": "evaluated"}
    history = [json.loads(line) for line in (llr / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    again = run_reproduce("voc2012", voc_root, out, [0], rows=rows, overrides=TINY)
    assert set(again["runs"].values()) == {"skipped"} and again["markdown"] == first["markdown"]
    md = first["markdown"]
    assert "(paper 85.89, Δ" in md and "(paper 89.29, Δ" in md and "(paper 87.31, Δ" in md  # Table 1 / 2 numbers
    assert "| BoostLU ablation | voc2012 |" in md and "(paper 86.10, Δ" in md
    inference = json.loads((out / "runs" / "an-boostlu-seed0" / "test_results.json").read_text())
    assert inference["evaluated_from"].endswith("an-seed0") and inference["eval_alpha"] == 5.0
    assert inference["num_classes_scored"] == 20
    assert (out / "results.md").read_text() == md


@pytest.mark.slow
def test_reproduce_with_two_jobs_gives_the_sequential_table(voc_root: Path, tmp_path: Path) -> None:
    rows, tiny = ["an", "an-boostlu", "ll-r"], {**TINY, "train.threads": 1}
    one = run_reproduce("voc2012", voc_root, tmp_path / "one", [0, 1], rows=rows, overrides=tiny, jobs=1)
    two = run_reproduce("voc2012", voc_root, tmp_path / "two", [0, 1], rows=rows, overrides=tiny, jobs=2)
    assert two["runs"] == one["runs"] and set(one["runs"].values()) == {"trained", "evaluated"}
    assert two["markdown"] == one["markdown"] and "(paper 85.89, Δ" in one["markdown"]
    for run in ("an-seed1", "an-boostlu-seed1", "ll-r-seed0"):
        a, b = (json.loads((tmp_path / d / "runs" / run / "test_results.json").read_text()) for d in ("one", "two"))
        assert a["test_ap"] == b["test_ap"] and a["test_map"] == b["test_map"] and a["best_epoch"] == b["best_epoch"]
    again = run_reproduce("voc2012", voc_root, tmp_path / "two", [0, 1], rows=rows, overrides=tiny, jobs=2)
    assert set(again["runs"].values()) == {"skipped"} and again["markdown"] == one["markdown"]


@pytest.mark.slow
def test_reproduce_runs_every_row_of_the_paper_tables_end_to_end(voc_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "voc"
    # rows whose schedule is set in epochs get a shorter one: ROLE + LI's linear phase takes 1
    # epoch (then 2 end to end), EM + APL warms up for 1
    scaled = {"role-li": "train.linear_init.epochs", "em-apl": "method.params.warmup_epochs"}
    rows = [r.name for r in paper_rows("voc2012") if r.name not in scaled]
    args = ["reproduce", "--dataset", "voc2012", "--data-root", str(voc_root), "-o", str(out), "--no-progress",
            *TINY_FLAGS, "--set", "train.epochs=1"]
    assert main([*args, "--rows", ",".join(rows)]) == 0
    assert "12 trained, 0 resumed, 1 evaluated, 0 skipped" in capsys.readouterr().out
    for row, key in scaled.items():
        assert main([*args, "--rows", row, "--set", "train.epochs=2", "--set", f"{key}=1"]) == 0
    printed = capsys.readouterr().out
    assert "1 trained, 0 resumed, 0 evaluated, 0 skipped" in printed
    table = (out / "results.md").read_text()
    for label, paper in (("full", 89.42), ("an-ls", 87.90), ("asl", 87.76), ("role", 87.77), ("role-li", 88.26),
                         ("em", 89.09), ("em-apl", 89.19), ("ll-ct", 87.79), ("ll-cp + BoostLU (a=5)", 87.81)):
        line = next(x for x in table.splitlines() if x.startswith(f"| {label} |"))
        assert f"(paper {paper:.2f}, Δ" in line, line
    assert table.count("| BoostLU ablation |") == 1
    assert (out / "runs" / "role-li-seed0" / "linear-init" / "best.safetensors").is_file()  # its two phases


@pytest.mark.slow
def test_reproduce_openimages_prints_the_frequency_groups(tmp_path: Path) -> None:
    make_openimages(tmp_path / "oi", n_train=40, n_test=15, c=12)
    out = run_reproduce("openimages-v3", tmp_path / "oi", tmp_path / "out", [0], rows=["ll-r", "ll-r-boostlu"],
                        overrides={**TINY, "train.batch_size": 16})
    md = out["markdown"]
    assert "| openimages-v3 | all | G1 | G2 | G3 | G4 | G5 |" in md
    line = next(x for x in md.splitlines() if x.startswith("| ll-r + BoostLU (a=5) |") and "G" not in x
                and "(paper 79.28, Δ" in x)
    assert "(paper 83.86, Δ" in line
    results = json.loads((tmp_path / "out" / "runs" / "ll-r-seed0" / "test_results.json").read_text())
    assert results["num_classes_scored"] + results["num_classes_left_out"] == 12


def test_reproduce_bad_input_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["reproduce", "--dataset", "voc2099", "--data-root", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert "no paper configs for dataset 'voc2099'" in capsys.readouterr().err
    assert main(["reproduce", "--dataset", "voc2012", "--data-root", str(tmp_path), "-o", str(tmp_path / "o"),
                 "--rows", "an-boostlu"]) == 2
    assert "evaluates the model of row an" in capsys.readouterr().err
    assert main(["reproduce", "--dataset", "voc2012", "--data-root", str(tmp_path), "-o", str(tmp_path / "o"),
                 "--set", "nonsense"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err
