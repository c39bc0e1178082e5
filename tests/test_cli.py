import json
import subprocess
import sys

import pytest
import yaml

from pamc.cli.main import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m pamc`` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "pamc", *args], capture_output=True, text=True, timeout=300)


def test_train_then_eval_end_to_end(tmp_path, tiny_train_args, capsys):
    assert main([*tiny_train_args, "--method", "ll-r", "--alpha", "5"]) == 0
    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "best.safetensors", "test_results.json"} <= names
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["method"]["name"] == "ll-r" and cfg["model"]["train_alpha"] == 5.0
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[0]["clean_rate"] == 1.0 and epochs[1]["clean_rate"] == pytest.approx(1 - 0.005)
    results = json.loads((run / "test_results.json").read_text())
    assert len(results["test_ap"]) == 10 and 0 <= results["test_map"] <= 100
    capsys.readouterr()

    out_json = tmp_path / "eval.json"
    assert main(["eval", str(run), "--alpha", "1,5,10", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "alpha" in printed and printed.count("\n") >= 4
    rows = json.loads(out_json.read_text())["results"]
    assert [r["alpha"] for r in rows] == [1.0, 5.0, 10.0]
    # eval at the training alpha reproduces the test mAP written by training
    assert rows[1]["map"] == pytest.approx(results["test_map"], abs=1e-9)


def test_ll_cp_corrections_are_applied(tmp_path, tiny_train_args):
    """The LL-Cp correction must reach the label store (one public implementation never applies it)."""
    args = [a for a in tiny_train_args]
    args[args.index("2")] = "3"  # three epochs
    assert main([*args, "--method", "ll-cp", "--set", "method.params.delta_rel=2.0"]) == 0
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs[0]["corrected_labels"] == 0
    # epoch 2 and 3: ceil(B*C*2/100) entries per batch of 16 x 10 -> 4 per full batch
    assert epochs[1]["corrected_labels"] > 0 and epochs[2]["corrected_labels"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--method", "nope"], "unknown method 'nope'"),
        (["train", "--backbone", "nope"], "unknown backbone 'nope'"),
        (["train", "--alpha", "0.5"], "must be >= 1"),
        (["train", "--config", "/nonexistent/x.yaml"], "config file not found"),
        (["train", "--set", "train.bogus=1"], "unknown config key 'train.bogus'"),
        (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["train", "--epochs", "0"], "train.epochs must be >= 1"),
        (["train", "--pretrained", "imagenet"], "no ImageNet weights for backbone 'smallcnn'"),
        (["train", "--epochs", "x"], "invalid int value"),
        (["eval", "/nonexistent/best.safetensors"], "checkpoint not found"),
        (["eval", "x", "--alpha", "a,b"], "comma list"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_error(args, message, tmp_path):
    proc = run_cli(*args, "--output-dir", str(tmp_path / "o")) if args[0] == "train" else run_cli(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("pamc: error:") and message in lines[-1], proc.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_yaml_key_in_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 1\n  warmup: 3\n")
    proc = run_cli("train", "--config", str(cfg))
    assert proc.returncode == 2 and "unknown config key 'train.warmup'" in proc.stderr
    assert "Traceback" not in proc.stderr
