"""The run directory: ownership (-o, --overwrite), its lock, and SIGTERM.

Ownership and lock refusals of single commands are also cases of ``tests/test_bad_input.py``;
here are the behaviours that need a second process or a finished run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from filelock import FileLock

from pamc.cli.main import main
from pamc.engine import RunDir, load_checkpoint
from pamc.engine.resume import LAST_CHECKPOINT, load_last
from pamc.engine.rundir import LOCK_FILE
from pamc.errors import PamcError

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["train", "--epochs", "2", "--batch-size", "8", "--lr", "0.003", "--seed", "4", "--deterministic",
        "--set", "data.synthetic.num_train=80", "--set", "data.synthetic.num_test=40",
        "--set", "data.synthetic.image_size=32", "--no-progress"]

# `pamc train` that stops in its progress callback at a given (epoch, step): "hold" waits there
# (after touching READY) until GO exists; "term" sends itself SIGTERM there.
DRIVER = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from pamc.cli import progress
    mode, at, ready, go = sys.argv[1], (int(sys.argv[2]), int(sys.argv[3])), Path(sys.argv[4]), Path(sys.argv[5])
    def on_batch_end(self, epoch, step, loss, n):
        if (epoch, step) != at:
            return
        if mode == "term":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
        ready.touch()
        while not go.exists():
            time.sleep(0.02)
    progress.TqdmProgress.on_batch_end = on_batch_end
    from pamc.cli.main import main
    sys.exit(main(sys.argv[6:]))
""")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _pamc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pamc", *args], capture_output=True, text=True, env=_env(), timeout=600)


def _driver(mode: str, at: tuple[int, int], tmp: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, mode, str(at[0]), str(at[1]), str(tmp / "ready"),
                             str(tmp / "go"), *args], env=_env(), text=True, **kw)


def _metrics(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("train_images_per_s")  # wall-clock throughput, the only non-deterministic field
    return records


def _one_line(proc: subprocess.CompletedProcess, message: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("pamc: error: ") and message in lines[0], proc.stderr


def _names(folder: Path) -> set[str]:
    """File names, the training state's token aside."""
    return {"last.state-*.pt" if p.name.startswith("last.state-") else p.name for p in folder.iterdir() if p.is_file()}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.slow
def test_two_trainings_into_one_directory_the_second_is_refused_the_first_unchanged(tmp_path):
    run, solo = tmp_path / "run", tmp_path / "solo"
    first = _driver("hold", (1, 2), tmp_path, *TINY, "-o", str(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "ready").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first training never reached its held step"
            time.sleep(0.05)
        held = _files(run)
        second = _pamc(*TINY, "--seed", "5", "-o", str(run))
        _one_line(second, f"run directory {run} is in use by another pamc process")
        resumed = _pamc("train", "--resume", str(run), "--no-progress")
        _one_line(resumed, f"run directory {run} is in use by another pamc process")
        assert _files(run) == held, "a refused command changed the live run"
    finally:
        (tmp_path / "go").touch()
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    alone = _pamc(*TINY, "-o", str(solo))
    assert alone.returncode == 0, alone.stderr
    assert _metrics(run) == _metrics(solo)  # exact float equality, field by field
    assert (run / "test_results.json").read_bytes() == (solo / "test_results.json").read_bytes()
    a, b = load_checkpoint(run / "best.safetensors"), load_checkpoint(solo / "best.safetensors")
    assert all((a.state_dict[k] == b.state_dict[k]).all() for k in b.state_dict)
    assert _names(run) == _names(solo)


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_with_143_and_a_resumable_last(tmp_path):
    run = tmp_path / "run"
    proc = _driver("term", (2, 3), tmp_path, *TINY, "-o", str(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "pamc: terminated" and "Traceback" not in err
    _, state = load_last(run)
    assert (state.progress.epoch, state.progress.step) == (2, 0)  # epoch 1's checkpoint, kept
    assert not (run / "test_results.json").exists() and len(list(run.glob("last.state-*.pt"))) == 1
    orphan = run / f".{LAST_CHECKPOINT}.x1y2z3.tmp"  # as a SIGKILL during an atomic write leaves it
    orphan.write_bytes(b"partial")
    resumed = _pamc("train", "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in _metrics(run)] == [1, 2] and (run / "test_results.json").is_file()
    assert not orphan.exists() and not list(run.glob(".*.tmp"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main([*TINY, "--epochs", "1", "-o", str(run)]) == 0
    return run


def test_a_users_directory_is_refused_byte_identical_and_cwd_too(tmp_path, monkeypatch, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "config.yaml").write_text("my: own config\n")
    (user / "metrics.jsonl").write_text('{"my": 1}\n')
    before = _files(user)
    for argv, where in (([*TINY, "-o", str(user)], user), ([*TINY, "-o", str(user), "--overwrite"], user),
                        ([*TINY, "-o", "."], Path("."))):
        monkeypatch.chdir(user)
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"pamc: error: output directory {where} is not empty and is not a pamc run directory; "
                       "pamc writes only into a new or empty directory: choose another --output-dir")
        assert _files(user) == before and sorted(p.name for p in user.iterdir()) == sorted(before)


def test_an_empty_directory_is_used_and_left_empty_if_the_run_fails(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*TINY, "--lr", "1e30", "-o", str(empty)]) == 2  # diverges before any checkpoint
    assert "non-finite loss" in capsys.readouterr().err
    assert empty.is_dir() and not list(empty.iterdir())


def test_overwrite_replaces_only_pamcs_files_of_a_previous_run(finished, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TINY, "--epochs", "1", "-o", str(run)]) == 0
    assert (run / LOCK_FILE).is_file()
    (run / "notes.txt").write_text("the user's notes\n")
    (run / "plots").mkdir()
    (run / "plots" / "a.png").write_bytes(b"png")
    capsys.readouterr()
    assert main([*TINY, "--epochs", "1", "-o", str(run)]) == 2
    assert "already holds a run; replace it with --overwrite" in capsys.readouterr().err
    assert main([*TINY, "--epochs", "1", "--seed", "9", "-o", str(run), "--overwrite"]) == 0
    assert (run / "notes.txt").read_text() == "the user's notes\n" and (run / "plots" / "a.png").read_bytes() == b"png"
    assert RunDir.open(run).read_config().train.seed == 9
    assert len(list(run.glob("last.state-*.pt"))) == 1 and not list(run.glob(".*.tmp"))
    assert _names(run) == _names(finished) | {"notes.txt"}


def test_the_lock_is_released_after_a_run_and_after_a_refusal(finished, tmp_path):
    lock = FileLock(str(finished / LOCK_FILE))
    lock.acquire(timeout=0)  # nothing holds it once the run is over
    lock.release()
    run = RunDir.create(tmp_path / "r")
    with pytest.raises(PamcError, match="in use by another pamc process"):
        RunDir.create(tmp_path / "r")
    with run.discard_on_failure():
        pass
    RunDir.create(tmp_path / "r").release()  # free again
