"""Exact resume, the training-state file, step checkpoints and the non-finite-loss policy."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pamc.cli.main import main
from pamc.config import config_from_dict, replace
from pamc.data import ArrayLoader, DeviceTransform, build_dataset, label_store_from_state
from pamc.engine import Callback, fit, load_checkpoint, save_checkpoint
from pamc.engine.resume import LAST_CHECKPOINT, capture_rng, load_last, restore_rng
from pamc.errors import CheckpointError
from pamc.losses import LOSSES, PartialLabelLoss
from pamc.losses.base import LossOutput, assume_negative_loss_matrix

SRC = str(Path(__file__).resolve().parents[1] / "src")

# 64 training images in batches of 8: 8 steps per epoch
TINY = [
    "train", "--epochs", "3", "--batch-size", "8", "--lr", "0.003",
    "--set", "data.synthetic.num_train=80", "--set", "data.synthetic.num_test=40",
    "--set", "data.synthetic.image_size=32", "--no-progress",
]

# Runs `pamc train` (the CLI's own code) and SIGKILLs the process from inside the progress
# callback at a fixed (epoch, step): a real kill at an exact point, mid-epoch.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from pamc.cli import progress
    KILL_AT = (int(sys.argv[1]), int(sys.argv[2]))
    def on_batch_end(self, epoch, step, loss, n):
        if (epoch, step) == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
    progress.TqdmProgress.on_batch_end = on_batch_end
    from pamc.cli.main import main
    sys.exit(main(sys.argv[3:]))
""")


def _env() -> dict:
    # one thread each: the reference and the killed run share the CPU side by side
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _metrics(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("train_images_per_s")  # wall-clock throughput, the only non-deterministic field
    return records


def _kill_after_first_step_checkpoint(cmd: list[str], run: Path) -> int:
    """Start ``cmd`` and SIGKILL it from outside as soon as a mid-epoch `last` checkpoint exists."""
    from safetensors import safe_open

    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        try:
            with safe_open(str(run / LAST_CHECKPOINT), framework="pt") as f:
                if json.loads(f.metadata()["extra"])["step"] > 0:
                    proc.send_signal(signal.SIGKILL)
                    break
        except (OSError, ValueError, KeyError):  # not written yet
            pass
        time.sleep(0.01)
    return proc.wait(timeout=600)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    args = [*TINY, "--epochs", "2", "--method", "ll-cp", "--set", "method.params.delta_rel=2.0", "--seed", "3",
            "--deterministic"]
    ref, run, run2 = tmp_path / "ref", tmp_path / "run", tmp_path / "run2"
    # the uninterrupted reference (no step checkpoints) and the runs to be killed, side by side
    reference = subprocess.Popen([sys.executable, "-m", "pamc", *args, "-o", str(ref)], env=_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # 1) killed from inside at a fixed point: with a checkpoint every 3 steps, global steps 9 and 12
    #    are epoch 2 steps 1 and 4; the kill comes after step 6, so two batches are lost
    killed = subprocess.run([sys.executable, "-c", KILLER, "2", "5", *args, "--set", "train.checkpoint_every_steps=3",
                             "-o", str(run)], env=_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run / "test_results.json").exists()
    extra = load_checkpoint(run / LAST_CHECKPOINT).extra
    assert (extra["epoch"], extra["step"], extra["global_step"]) == (2, 4, 12)
    assert len(list(run.glob("last.state-*.pt"))) == 1 and not list(run.glob(".*.tmp"))
    assert [r["epoch"] for r in _metrics(run)] == [1]
    # 2) `python -m pamc train` killed from outside, wherever it is after its first step checkpoint
    cmd = [sys.executable, "-m", "pamc", *args, "--set", "train.checkpoint_every_steps=1", "-o", str(run2)]
    assert _kill_after_first_step_checkpoint(cmd, run2) == -signal.SIGKILL
    assert not (run2 / "test_results.json").exists()

    for interrupted in (run, run2):
        resumed = subprocess.run([sys.executable, "-m", "pamc", "train", "--resume", str(interrupted), "--no-progress"],
                                 env=_env(), capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err

    expected = _metrics(ref)
    assert [r["epoch"] for r in expected] == [1, 2] and expected[1]["corrected_labels"] > 0  # LL-Cp state matters
    b = load_file(str(ref / "best.safetensors"))
    for interrupted in (run, run2):
        assert _metrics(interrupted) == expected  # exact float equality, field by field
        assert (interrupted / "test_results.json").read_bytes() == (ref / "test_results.json").read_bytes()
        a = load_file(str(interrupted / "best.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# every method with state of its own (and frozen-features mode), killed mid-epoch 2 and resumed
STATEFUL = {
    "ll-ct": ["--method", "ll-ct", "--set", "method.params.delta_rel=2.0"],
    "role": ["--method", "role"],
    "role-li": ["--method", "role-li", "--set", "method.params.linear_init_epochs=1"],
    "em-apl": ["--method", "em-apl", "--set", "method.params.warmup_epochs=1"],
    "gr-loss": ["--method", "gr-loss"],
    "frozen-features": ["--method", "epr", "--set", "train.frozen_features=true"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STATEFUL))
def test_sigkill_then_resume_is_bitwise_identical_for_every_stateful_method(tmp_path, name):
    args = [*TINY, "--epochs", "2", *STATEFUL[name], "--seed", "1", "--deterministic"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    reference = subprocess.Popen([sys.executable, "-m", "pamc", *args, "-o", str(ref)], env=_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = subprocess.run([sys.executable, "-c", KILLER, "2", "5", *args, "--set", "train.checkpoint_every_steps=3",
                             "-o", str(run)], env=_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert load_checkpoint(run / LAST_CHECKPOINT).extra["step"] == 4  # mid-epoch 2
    resumed = subprocess.run([sys.executable, "-m", "pamc", "train", "--resume", str(run), "--no-progress"],
                             env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err
    assert _metrics(run) == _metrics(ref)
    assert (run / "test_results.json").read_bytes() == (ref / "test_results.json").read_bytes()
    a, b = load_file(str(run / "best.safetensors")), load_file(str(ref / "best.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tiny_cfg(tmp_path: Path, **train) -> object:
    return config_from_dict({
        "data": {"synthetic": {"num_train": 80, "num_test": 40, "image_size": 32}},
        "method": {"name": "ll-cp", "params": {"delta_rel": 2.0}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.003, **train},
        "output_dir": str(tmp_path / "run"),
    })


def test_rng_capture_restore_round_trip():
    cfg = _tiny_cfg(Path("/unused"))
    bundle = build_dataset(cfg.data)
    loader = ArrayLoader(bundle.train, 8, shuffle=True, seed=5)
    transform = DeviceTransform(torch.device("cpu"), generator=torch.Generator().manual_seed(9))
    random.random(), np.random.rand(), torch.rand(1), transform(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), flip=True)
    rng = capture_rng(loader.generator.get_state(), transform)

    def draw():
        order = [b.index.tolist() for b in loader]
        return (random.random(), np.random.rand(), torch.rand(3).tolist(), order,
                torch.rand(4, generator=transform.generator).tolist())

    first = draw()
    second = draw()
    assert first != second  # the states really advance
    restore_rng(rng, loader, transform)
    assert draw() == first


def test_last_checkpoint_state_and_stale_files(tmp_path):
    cfg = _tiny_cfg(tmp_path, checkpoint_every_steps=2)
    fit(cfg, callbacks=())
    run = tmp_path / "run"
    ckpt, state = load_last(run)
    assert ckpt.extra["epoch"] == 3 and ckpt.extra["step"] == 0  # written at the end of epoch 2
    assert len(list(run.glob("last.state-*.pt"))) == 1  # older step/epoch states were removed
    assert state.global_step == 8 and state.hooks["selection"]["best_epoch"] in (1, 2)
    assert [r["epoch"] for r in state.history] == [1, 2]
    assert state.history == [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert state.hooks["loss"]["clean_rate"].item() == pytest.approx(0.98)
    # the saved label store holds the LL-Cp corrections on top of the observed labels
    observed = build_dataset(cfg.data).train.observed.to_numpy()
    saved = label_store_from_state(state.hooks["labels"]).to_numpy()
    flipped = (saved != observed)
    assert flipped.sum() == state.history[1]["corrected_labels"] > 0
    assert (saved[flipped] == 1).all() and (observed[flipped] == 0).all()
    assert "exp_avg" in state.optimizer["state"][0]

    # a state file that does not belong to the weights is refused
    state_file = run / ckpt.extra["state_file"]
    other = tmp_path / "other"
    fit(replace(cfg, output_dir=str(other), train__epochs=1, train__checkpoint_every_steps=0), callbacks=())
    (other / load_checkpoint(other / LAST_CHECKPOINT).extra["state_file"]).replace(state_file)
    with pytest.raises(CheckpointError, match="token mismatch"):
        load_last(run)


def test_crash_between_state_and_weights_keeps_previous_pair(tmp_path, monkeypatch):
    import pamc.engine.resume as resume

    cfg = _tiny_cfg(tmp_path)
    calls = {"n": 0}
    real = resume.save_checkpoint

    def failing(path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second `last` commit (end of epoch 2)
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(resume, "save_checkpoint", failing)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, callbacks=())
    run = tmp_path / "run"
    ckpt, state = load_last(run)  # epoch 1's pair is intact
    assert (ckpt.extra["epoch"], state.progress.epoch, state.progress.step) == (2, 2, 0)
    assert len(list(run.glob("last.state-*.pt"))) == 1 and not list(run.glob(".*.tmp"))
    monkeypatch.setattr(resume, "save_checkpoint", real)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert [r["epoch"] for r in _metrics(run)] == [1, 2]


def test_best_is_repaired_after_crash_before_its_write(tmp_path, capsys):
    cfg = _tiny_cfg(tmp_path, epochs=1)  # one epoch: `last` holds the best weights
    fit(cfg, callbacks=())
    run = tmp_path / "run"
    expected = (run / "test_results.json").read_text()
    best = load_file(str(run / "best.safetensors"))
    (run / "test_results.json").unlink()
    (run / "best.safetensors").unlink()  # as if killed between the `last` and `best` writes
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert (run / "test_results.json").read_text() == expected
    again = load_file(str(run / "best.safetensors"))
    assert best.keys() == again.keys() and all(torch.equal(best[k], again[k]) for k in best)

    # mid-epoch, `last` is not the best epoch's weights: a `best` that contradicts the state is refused
    from types import SimpleNamespace

    from pamc.engine import RunDir
    from pamc.engine.hooks import Checkpointer, Validation
    from pamc.engine.resume import EpochProgress
    from pamc.losses import create_loss

    ckpt, state = load_last(run)
    model = _model_with(ckpt)
    save_checkpoint(run / "best.safetensors", model, ckpt.config, ckpt.class_names, {"epoch": 7})
    selection = Validation(lambda: {"map": 0.0})
    selection.load_state_dict(state.hooks["selection"])
    hook = Checkpointer(RunDir(run), model, ckpt.config, ckpt.class_names, create_loss("an"), selection)
    trainer = SimpleNamespace(resumed=True, progress=EpochProgress(2, step=3))
    with pytest.raises(CheckpointError, match=r"best.safetensors \(epoch 7\) does not match the training state \(best epoch 1\)"):
        hook.before_train(trainer)


def _model_with(ckpt):
    from pamc.engine import make_model

    model = make_model(ckpt.config, len(ckpt.class_names))
    model.load_state_dict(ckpt.state_dict)
    return model


class _NanAt(PartialLabelLoss):
    """Assume-negative BCE that returns NaN on the listed (1-based) calls."""

    def __init__(self, at: tuple = (2,)) -> None:
        super().__init__()
        self.at = set(at)
        self.calls = 0

    def forward(self, logits, observed, index):
        self.calls += 1
        loss = assume_negative_loss_matrix(logits, observed).mean()
        return LossOutput(loss * float("nan") if self.calls in self.at else loss)


@pytest.fixture
def nan_loss():
    """``test-nan-at`` is a registered method for the test's duration only."""
    with LOSSES.registered("test-nan-at", _NanAt):
        yield
    assert "test-nan-at" not in LOSSES


def test_nonfinite_loss_stops_naming_epoch_and_step_and_keeps_last(tmp_path, capsys, nan_loss):
    run = tmp_path / "run"
    args = [*TINY, "--epochs", "2", "--method", "test-nan-at", "--set", "method.params.at=[11]",
            "--set", "train.checkpoint_every_steps=2", "-o", str(run)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("pamc: error: non-finite loss (nan) at epoch 2, step 3 of 8;")
    assert f"last good checkpoint {run / LAST_CHECKPOINT} (epoch 2, step 2) is kept" in err[0]
    ckpt, state = load_last(run)  # intact and resumable
    assert state.global_step == 10 and not list(run.glob(".*.tmp"))


def test_nonfinite_loss_before_any_checkpoint_leaves_no_run_dir(tmp_path, capsys, nan_loss):
    run = tmp_path / "run"
    assert main([*TINY, "--method", "test-nan-at", "--set", "method.params.at=[2]", "-o", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pamc: error: non-finite loss (nan) at epoch 1, step 2 of 8; "
                   "no checkpoint had been written yet, so nothing is kept"]
    assert not run.exists()

    run.mkdir()  # a directory that existed before keeps existing, without the files the run wrote
    (run / "notes.txt").write_text("mine")
    assert main([*TINY, "--method", "test-nan-at", "--set", "method.params.at=[2]", "-o", str(run)]) == 2
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_nonfinite_loss_skip_drops_only_that_batch(tmp_path, nan_loss):
    class Record(Callback):
        losses: list = []

        def on_batch_end(self, epoch, step, loss, num_images):
            self.losses.append((loss, num_images))

    cfg = replace(_tiny_cfg(tmp_path, epochs=1, batch_size=8, on_nonfinite="skip"),
                  method={"name": "test-nan-at", "params": {"at": [3, 5]}})
    result = fit(cfg, callbacks=[Record()])
    (record,) = result.history
    assert record["skipped_batches"] == 2 and len(Record.losses) == 8
    assert [i for i, (loss, _) in enumerate(Record.losses) if np.isnan(loss)] == [2, 4]
    kept = [(loss, n) for loss, n in Record.losses if not np.isnan(loss)]
    assert record["train_loss"] == pytest.approx(sum(l * n for l, n in kept) / sum(n for _, n in kept), rel=1e-12)
    assert np.isfinite(result.test_map)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    from pamc.engine.checkpoint import atomic_write
    from pamc.errors import OutputError

    target = tmp_path / "f.txt"
    target.write_text("old")

    def half_then_full(tmp):
        Path(tmp).write_text("ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match=r"cannot write .*f.txt: No space left on device"):
        atomic_write(target, half_then_full)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    with pytest.raises(ValueError):  # other errors pass through unchanged, still without leftovers
        atomic_write(target, lambda tmp: (_ for _ in ()).throw(ValueError("bug")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_check_compatible_names_the_mismatch():
    from pamc.engine.checkpoint import Checkpoint, check_compatible

    cfg = config_from_dict({"model": {"backbone": "resnet18"}})
    ckpt = Checkpoint({}, cfg, ("a", "b", "c"), {})
    check_compatible(ckpt, "x", backbone="resnet18", class_names=("a", "b", "c"))
    with pytest.raises(CheckpointError, match="^checkpoint x has backbone 'resnet18', expected 'smallcnn'$"):
        check_compatible(ckpt, "x", backbone="smallcnn", class_names=("a", "b", "c"))
    with pytest.raises(CheckpointError, match="^checkpoint x has 3 classes, the dataset has 2$"):
        check_compatible(ckpt, "x", backbone="resnet18", class_names=("a", "b"))
    with pytest.raises(CheckpointError, match="^checkpoint x has class 'c' at index 2, the dataset has 'd'$"):
        check_compatible(ckpt, "x", backbone="resnet18", class_names=("a", "b", "d"))
