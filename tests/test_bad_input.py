"""The bad-input suite: every CLI command against input it must refuse (docs/bad-input.md).

Each case asserts exit code 2, exactly one stderr line ``pamc: error: ...`` holding the
expected message, no traceback, no run directory left behind and no temporary or corrupt
checkpoint file. Cases marked ``subprocess`` run ``python -m pamc`` as a user would; the
others call the same ``main()`` in-process (faster, and able to inject a full disk).
"""

from __future__ import annotations

import errno
import os
import random
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

from pamc.cli.main import main
from pamc.config import config_from_dict
from pamc.engine import fit, load_checkpoint, save_checkpoint
from pamc.engine.resume import LAST_CHECKPOINT, load_last

SRC = str(Path(__file__).resolve().parents[1] / "src")
DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"
TINY = ["--epochs", "1", "--batch-size", "8", "--lr", "0.003", "--set", "data.synthetic.num_train=80",
        "--set", "data.synthetic.num_test=40", "--set", "data.synthetic.image_size=32", "--no-progress"]


class Evil:
    """A pickle payload: unpickling it creates the marker file (it must never happen)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-epoch run (config.yaml, metrics, best, last + state, test results)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    cfg = config_from_dict({
        "data": {"synthetic": {"num_train": 80, "num_test": 40, "image_size": 32}},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.003},
        "output_dir": str(run),
    })
    fit(cfg, callbacks=())
    return run


@dataclass
class Ctx:
    tmp: Path
    finished: Path

    @property
    def out(self) -> Path:  # every train case writes here; it must not exist afterwards
        return self.tmp / "out" / "run"

    @property
    def marker(self) -> Path:
        return self.tmp / "PWNED"

    def file(self, name: str, content: bytes | str) -> str:
        path = self.tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def interrupted(self) -> Path:
        """A copy of the finished run without its test results: a valid ``--resume`` target."""
        run = self.tmp / "interrupted"
        shutil.copytree(self.finished, run)
        (run / "test_results.json").unlink()
        return run

    def best_copy(self) -> Path:
        path = self.tmp / "best.safetensors"
        shutil.copy(self.finished / "best.safetensors", path)
        return path

    def evil_pickle(self, torch_format: bool) -> bytes:
        path = self.tmp / "evil.bin"
        if torch_format:
            torch.save({"state_dict": Evil(self.marker)}, path)
        else:
            path.write_bytes(pickle.dumps(Evil(self.marker)))
        data = path.read_bytes()
        path.unlink()
        return data


def train(c: Ctx, *extra: str) -> list[str]:
    return ["train", *TINY, *extra, "--output-dir", str(c.out)]


def resume(c: Ctx, prepare: Callable[[Path], object] | None = None) -> list[str]:
    """``pamc train --resume`` on a copy of the finished run, damaged by ``prepare``."""
    run = c.interrupted()
    if prepare is not None:
        prepare(run)
    return ["train", "--resume", str(run)]


def torch_file(c: Ctx, name: str, obj: object) -> str:
    torch.save(obj, c.tmp / name)
    return str(c.tmp / name)


def plain_safetensors(c: Ctx) -> str:
    save_file({"w": torch.zeros(2)}, str(c.tmp / "plain.safetensors"))
    return str(c.tmp / "plain.safetensors")


def _state_file(run: Path) -> Path:
    return run / load_checkpoint(run / LAST_CHECKPOINT).extra["state_file"]


def _corrupt_state(run: Path, data: bytes | None = None, truncate: bool = False, version: int | None = None,
                   edit: Callable[[dict], None] | None = None) -> None:
    path = _state_file(run)
    if data is not None:
        path.write_bytes(data)
    if truncate:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    if version is not None or edit is not None:
        raw = torch.load(path, weights_only=True)
        if version is not None:
            raw["version"] = version
        if edit is not None:
            edit(raw)
        torch.save(raw, path)


def _edit_config(run: Path, old: str, new: str) -> None:
    text = (run / "config.yaml").read_text()
    assert old in text
    (run / "config.yaml").write_text(text.replace(old, new, 1))


def _recheckpoint(c: Ctx, names: int | None = None, version: str | None = None) -> str:
    ckpt = load_checkpoint(c.finished / "best.safetensors")
    path = c.tmp / "other.safetensors"
    if version is not None:
        save_file(ckpt.state_dict, str(path), metadata={"pamc_format": version})
    else:
        from pamc.engine import make_model

        model = make_model(ckpt.config, len(ckpt.class_names))
        model.load_state_dict(ckpt.state_dict)
        save_checkpoint(path, model, ckpt.config, ckpt.class_names[:names])
    return str(path)


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], list[str]]
    message: str
    subprocess: bool = False
    enospc_at: int | None = None  # simulate a full disk at the n-th fsync of an atomic write
    read_only: bool = False  # simulate a read-only file system: every plain file write fails
    after: Callable[[Ctx], None] | None = None


def _kept_resumable(c: Ctx) -> None:
    """A full disk after epoch 1's checkpoint: the run stays, intact, and resumes."""
    ckpt, state = load_last(c.out)
    assert (state.progress.epoch, state.progress.step) == (2, 0)
    assert len(list(c.out.glob("last.state-*.pt"))) == 1
    assert main(["train", "--resume", str(c.out), "--no-progress"]) == 0
    assert (c.out / "test_results.json").is_file()


CASES = [
    # malformed configs and wrong value types
    Case("yaml-syntax", lambda c: train(c, "--config", c.file("c.yaml", "train: [1, 2\n")), "is not valid YAML (line 2)"),
    Case("yaml-not-mapping", lambda c: train(c, "--config", c.file("c.yaml", "- 1\n- 2\n")),
         "must hold a mapping at the top level"),
    Case("yaml-unknown-key", lambda c: train(c, "--config", c.file("c.yaml", "train:\n  warmup: 3\n")),
         "unknown config key 'train.warmup'"),
    Case("yaml-wrong-type", lambda c: train(c, "--config", c.file("c.yaml", "train:\n  seed: ten\n")),
         "config key 'train.seed' must be int, got 'ten'"),
    Case("yaml-section-not-mapping", lambda c: train(c, "--config", c.file("c.yaml", "model: 5\n")),
         "'model' must be a mapping, got 5"),
    Case("set-wrong-type", lambda c: train(c, "--set", "train.flip=maybe"), "config key 'train.flip' must be bool"),
    Case("set-no-equals", lambda c: train(c, "--set", "train.lr"), "--set expects KEY=VALUE"),
    Case("flag-wrong-type", lambda c: train(c, "--epochs", "x"), "argument --epochs: invalid int value: 'x'"),
    Case("unknown-method-param", lambda c: train(c, "--method", "ll-r", "--set", "method.params.bogus=1"),
         "unknown parameter 'bogus' for method 'll-r'"),
    Case("on-nonfinite-choice", lambda c: train(c, "--set", "train.on_nonfinite=ignore"),
         "config key 'train.on_nonfinite' must be one of ['stop', 'skip'], got 'ignore'"),
    Case("unknown-device", lambda c: train(c, "--device", "tpu9"), "unknown device 'tpu9'"),
    # out-of-range hyperparameters
    Case("negative-lr", lambda c: train(c, "--lr", "-0.1"), "train.lr must be > 0, got -0.1"),
    Case("nan-lr", lambda c: train(c, "--set", "train.lr=.nan"), "train.lr must be > 0, got nan"),
    Case("alpha-below-1", lambda c: train(c, "--alpha", "0.5"), "model.train_alpha must be >= 1 (BoostLU), got 0.5"),
    Case("eval-alpha-below-1", lambda c: train(c, "--eval-alpha", "0"), "model.eval_alpha must be >= 1 (BoostLU), got 0.0"),
    Case("delta-rel-zero", lambda c: train(c, "--method", "ll-r", "--set", "method.params.delta_rel=0"),
         "delta_rel must be in (0, 100) percent per epoch, got 0"),
    Case("delta-rel-100", lambda c: train(c, "--method", "ll-ct", "--set", "method.params.delta_rel=100"),
         "delta_rel must be in (0, 100) percent per epoch, got 100"),
    Case("delta-rel-string", lambda c: train(c, "--method", "ll-cp", "--set", "method.params.delta_rel=lots"),
         "delta_rel must be a number, got 'lots'"),
    Case("batch-size-zero", lambda c: train(c, "--batch-size", "0"), "train.batch_size must be >= 1, got 0"),
    Case("step-checkpoints-negative", lambda c: train(c, "--set", "train.checkpoint_every_steps=-1"),
         "train.checkpoint_every_steps must be >= 0, got -1"),
    Case("lr-diverges", lambda c: train(c, "--lr", "1e30"),
         "non-finite loss (nan) at epoch 1, step 2 of 8; no checkpoint had been written yet"),
    # missing or corrupt files, checkpoints from elsewhere
    Case("config-missing", lambda c: train(c, "--config", str(c.tmp / "nope.yaml")), "config file not found"),
    Case("pretrained-missing", lambda c: train(c, "--pretrained", str(c.tmp / "nope.pth")), "checkpoint file not found"),
    Case("pretrained-random-bytes", lambda c: train(c, "--pretrained", c.file("r.pth", random.Random(0).randbytes(4096))),
         "r.pth: not a plain tensor checkpoint"),
    Case("pretrained-truncated", lambda c: train(c, "--pretrained", c.file(
        "t.safetensors", c.best_copy().read_bytes()[:5000])), "cannot read safetensors file"),
    Case("pretrained-foreign-keys", lambda c: train(c, "--pretrained", torch_file(
        c, "f.pth", {"conv1.weight": torch.zeros(64, 3, 7, 7)})), "does not match SmallCNN"),
    Case("pretrained-pickle-payload", lambda c: train(c, "--pretrained", c.file("evil.pth", c.evil_pickle(True))),
         "refusing to load", subprocess=True),
    Case("eval-missing", lambda c: ["eval", str(c.tmp / "nope.safetensors")], "checkpoint not found"),
    Case("eval-run-dir-empty", lambda c: ["eval", str(c.tmp)], "checkpoint not found"),
    Case("eval-truncated", lambda c: ["eval", c.file("t.safetensors", c.best_copy().read_bytes()[:5000])],
         "is not a safetensors checkpoint"),
    Case("eval-random-bytes", lambda c: ["eval", c.file("r.safetensors", random.Random(0).randbytes(4096))],
         "is not a safetensors checkpoint"),
    Case("eval-pickle-payload", lambda c: ["eval", c.file("best.safetensors", c.evil_pickle(False))],
         "is not a safetensors checkpoint", subprocess=True),
    Case("eval-torch-pickle-payload", lambda c: ["eval", c.file("model.pth", c.evil_pickle(True))],
         "is not a safetensors checkpoint"),
    Case("eval-not-pamc", lambda c: ["eval", plain_safetensors(c)], "has no pamc metadata"),
    Case("eval-format-version", lambda c: ["eval", _recheckpoint(c, version="99")],
         "has checkpoint format 99, this pamc reads format 1"),
    Case("eval-class-count", lambda c: ["eval", _recheckpoint(c, names=6)], "has 6 classes, the dataset has 10"),
    Case("eval-bad-alpha", lambda c: ["eval", str(c.finished), "--alpha", "a,b"], "comma list of numbers"),
    # resuming
    Case("resume-missing-dir", lambda c: ["train", "--resume", str(c.tmp / "nope")], "run directory not found"),
    Case("resume-not-a-run", lambda c: ["train", "--resume", str(c.tmp)], "has no config.yaml; it is not a pamc run"),
    Case("resume-no-last", lambda c: resume(c, lambda run: (run / LAST_CHECKPOINT).unlink()), "no last.safetensors in"),
    Case("resume-finished", lambda c: ["train", "--resume", str(c.finished)], "has already finished"),
    Case("resume-with-flags", lambda c: [*resume(c), "--lr", "0.1"], "--resume continues a run with its own config.yaml"),
    Case("resume-pickle-payload", lambda c: resume(c, lambda run: _corrupt_state(run, data=c.evil_pickle(True))),
         "refusing to load", subprocess=True),
    Case("resume-truncated-state", lambda c: resume(c, lambda run: _corrupt_state(run, truncate=True)),
         "cannot read training state"),
    Case("resume-state-version", lambda c: resume(c, lambda run: _corrupt_state(run, version=99)),
         "has training-state format 99, this pamc reads format 2"),
    Case("resume-state-optimizer", lambda c: resume(c, lambda run: _corrupt_state(
        run, edit=lambda raw: raw["optimizer"]["param_groups"].pop())),
         "does not match this run: loaded state dict has a different number of parameter groups"),
    Case("resume-state-rng", lambda c: resume(c, lambda run: _corrupt_state(
        run, edit=lambda raw: raw["rng"].update(numpy="x"))), "does not match this run"),
    Case("resume-state-missing", lambda c: resume(c, lambda run: _state_file(run).unlink()),
         "is missing"),
    Case("resume-truncated-last", lambda c: resume(c, lambda run: (run / LAST_CHECKPOINT).write_bytes(b"\x08" * 64)),
         "is not a safetensors checkpoint"),
    Case("resume-backbone-changed", lambda c: resume(c, lambda run: _edit_config(
        run, "backbone: smallcnn", "backbone: resnet18")), "has backbone 'smallcnn', expected 'resnet18'"),
    Case("resume-classes-changed", lambda c: resume(c, lambda run: _edit_config(
        run, "num_classes: 10", "num_classes: 8")), "has 10 classes, the dataset has 8"),
    Case("resume-config-changed", lambda c: resume(c, lambda run: _edit_config(run, "lr: 0.003", "lr: 0.01")),
         "train.lr is 0.003 in the checkpoint and 0.01 in the config"),
    Case("resume-config-corrupt", lambda c: resume(c, lambda run: (run / "config.yaml").write_text("train: {")),
         "config.yaml is not valid YAML"),
    # output that cannot be written
    Case("output-under-file", lambda c: ["train", *TINY, "-o", str(Path(c.file("somefile", "x")) / "run")],
         "somefile/run: Not a directory"),
    Case("output-holds-run", lambda c: ["train", *TINY, "-o", str(c.finished)], "already holds a run"),
    Case("output-holds-interrupted-run", lambda c: ["train", *TINY, "-o", str(c.interrupted())],
         "holds an interrupted run; continue it with --resume"),
    Case("output-read-only", lambda c: train(c), "out/run: Read-only file system", read_only=True),
    Case("eval-json-under-file", lambda c: ["eval", str(c.finished), "--json", str(Path(c.file("f", "x")) / "r.json")],
         "r.json: Not a directory"),
    Case("disk-full-first-state", lambda c: train(c), ".pt: No space left on device", enospc_at=2),
    Case("disk-full-first-weights", lambda c: train(c), "last.safetensors: No space left on device", enospc_at=3),
    Case("disk-full-later", lambda c: train(c, "--epochs", "2"), "No space left on device", enospc_at=6,
         after=_kept_resumable),
    Case("disk-full-eval-json", lambda c: ["eval", str(c.finished), "--json", str(c.tmp / "r.json")],
         "r.json: No space left on device", enospc_at=1),
    # demo
    Case("demo-seeds-zero", lambda c: ["demo", "--seeds", "0", "-o", str(c.out)], "--seeds must be >= 1"),
    Case("demo-output-under-file", lambda c: ["demo", "--quick", "--seeds", "1", "--no-progress",
                                              "-o", str(Path(c.file("somefile", "x")) / "demo")],
         "cannot write to output directory"),
    Case("demo-jobs-zero", lambda c: ["demo", "--jobs", "0", "-o", str(c.out)], "expected a positive integer, got '0'"),
    Case("zoo-threads-bad", lambda c: ["zoo", "--threads", "two", "-o", str(c.out)],
         "expected 'auto' or a positive integer, got 'two'"),
    Case("train-threads-zero", lambda c: ["train", *TINY, "--threads", "0", "-o", str(c.out)],
         "expected 'auto' or a positive integer, got '0'"),
]


def _run(case: Case, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    if case.subprocess:
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.run([sys.executable, "-m", "pamc", *argv], capture_output=True, text=True,
                              env=env, timeout=300)
        return proc.returncode, proc.stderr
    if case.enospc_at is not None:
        real_fsync, calls = os.fsync, {"n": 0}

        def fsync(fd: int) -> None:  # the disk fills up during this write: half the bytes land
            calls["n"] += 1
            if calls["n"] == case.enospc_at:
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    if case.read_only:
        def write_text(self, *args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

        monkeypatch.setattr(Path, "write_text", write_text)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    finally:
        monkeypatch.undo()
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, finished: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    c = Ctx(tmp_path, finished)
    argv = case.build(c)
    before = sorted(p.name for p in finished.iterdir())
    code, stderr = _run(case, argv, monkeypatch, capsys)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("pamc: error: "), stderr
    assert case.message in lines[0], stderr
    assert not c.marker.exists(), "a pickled payload was executed"
    assert sorted(p.name for p in finished.iterdir()) == before
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    if case.after is not None:
        case.after(c)
    else:
        assert not (tmp_path / "out").exists(), "a partial run directory was left behind"
    if case.enospc_at is not None:
        for last in tmp_path.rglob(LAST_CHECKPOINT):  # whatever checkpoint remains is intact
            load_last(last.parent)


def test_the_pickle_payload_is_live(tmp_path):
    """The payload used above really runs when unpickled: its absence is meaningful."""
    c = Ctx(tmp_path, tmp_path)
    pickle.loads(c.evil_pickle(False))
    assert c.marker.exists()
    c.marker.unlink()
    torch.load(tmp_path / c.file("e.pth", c.evil_pickle(True)), weights_only=False)
    assert c.marker.exists()


def test_every_case_is_documented():
    doc = DOC.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"cases missing from {DOC.name}: {missing}"
    assert len(CASES) >= 20
