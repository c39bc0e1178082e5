"""Real full disks, concurrent cache builds and the memory of refusing resource bombs.

The full-disk tests mount a small tmpfs (``mount -t tmpfs -o size=...``), which needs root, as
in CI; elsewhere they are skipped with the reason. A full disk is then a real ``ENOSPC`` from
the kernel, wherever it happens (``write``, ``posix_fallocate``, a memory map), not one
injected into ``os.fsync``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset_fixtures import make_csv, write_jpeg
from pamc.config import config_from_dict
from pamc.data.image_cache import decode_image
from pamc.engine import make_model
from pamc.engine.checkpoint import load_checkpoint, save_checkpoint
from pamc.engine.resume import EpochProgress, TrainingState, load_last, save_last
from pamc.errors import OutputError
from test_bad_input import BOMB_YAML, bomb_jpeg

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + str(Path(__file__).parent)}


@pytest.fixture
def tmpfs(tmp_path):
    """A mount function: ``tmpfs(size_kib)`` mounts a fresh tmpfs and returns its path."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the tests as root)")
    mounted: list[Path] = []

    def mount(size_kib: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def pamc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pamc", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _one_line(proc: subprocess.CompletedProcess, message: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("pamc: error: "), proc.stderr
    assert message in lines[0], proc.stderr
    return lines[0]


def _fill(folder: Path) -> None:
    """Write a filler file until the file system is full."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def _digests(folder: Path) -> dict[str, str]:
    """Every file's SHA-256, except the (empty) cache lock files pamc keeps in its cache folder."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()
            if p.is_file() and p.suffix != ".lock"}


def test_prepare_on_a_full_disk_is_one_line_and_keeps_the_previous_cache(tmpfs, tmp_path):
    data = tmp_path / "data"
    make_csv(data, n=40, size=(48, 40))
    disk = tmpfs(256)
    out = disk / "prep"
    small = pamc("prepare", "csv", "--data-root", str(data), "--out", str(out), "--image-size", "16", "--no-progress")
    assert small.returncode == 0, small.stderr
    before = _digests(out)
    assert any(name.endswith(".u8") for name in before)
    # 40 x 64 x 64 x 3 = 480 KiB of cache on a 256 KiB disk: without the allocation first, the
    # memory map took SIGBUS here (exit 135, no message)
    full = pamc("prepare", "csv", "--data-root", str(data), "--out", str(out), "--image-size", "64", "--no-progress")
    line = _one_line(full, "No space left on device")
    assert f"cannot write {out}/images-64-" in line and ".u8: No space left on device" in line
    assert _digests(out) == before, "the previous cache and index must stay as they were"
    assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]


def test_checkpoint_and_training_state_writes_on_a_full_disk(tmpfs):
    disk = tmpfs(8192)
    cfg = config_from_dict({"train": {"epochs": 3}, "output_dir": str(disk)})
    model = make_model(cfg, 10)
    names = tuple(f"c{k}" for k in range(10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = TrainingState(progress=EpochProgress(2), global_step=8, history=[], optimizer=optimizer.state_dict(),
                          rng={"python": None}, hooks={"selection": {"best_map": 50.0, "best_epoch": 1}})
    save_last(disk, model, cfg, names, state)
    save_checkpoint(disk / "best.safetensors", model, cfg, names)
    good = _digests(disk)
    _fill(disk)
    changed = make_model(config_from_dict({"train": {"seed": 1}}), 10)
    with pytest.raises(OutputError, match=r"cannot write .*best\.safetensors: No space left on device"):
        save_checkpoint(disk / "best.safetensors", changed, cfg, names)
    with pytest.raises(OutputError, match=r"cannot write .*last\.state-[0-9a-f]+\.pt: No space left on device"):
        save_last(disk, changed, cfg, names, state)
    (disk / "filler").unlink()
    assert _digests(disk) == good, "the previous checkpoint pair must stay as it was"
    assert not [p for p in disk.iterdir() if p.name.endswith(".tmp")]
    ckpt, restored = load_last(disk)
    assert restored.progress.epoch == 2
    for k, v in model.state_dict().items():
        assert torch.equal(load_checkpoint(disk / "best.safetensors").state_dict[k], v)


_HELD_PREPARE = """
import sys, time
from pathlib import Path
import pamc.data.image_cache as ic
decode, go = ic.decode_image, Path(sys.argv[1])
def held(*args, **kwargs):  # decoding waits until the test says go
    while not go.exists():
        time.sleep(0.02)
    return decode(*args, **kwargs)
ic.decode_image = held
from pamc.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def _wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"{what}: the process ended first"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow
def test_two_prepares_of_one_cache_the_second_waits_then_reuses(tmp_path):
    from filelock import FileLock, Timeout

    data = tmp_path / "data"
    make_csv(data, n=30, size=(48, 40))
    out, go = tmp_path / "prep", tmp_path / "go"
    args = ["prepare", "csv", "--data-root", str(data), "--out", str(out), "--image-size", "32", "--no-progress"]
    first_err, second_err = tmp_path / "first.err", tmp_path / "second.err"

    def locked() -> bool:
        for lock in out.glob("images-*.lock") if out.is_dir() else []:
            probe = FileLock(str(lock))
            try:
                probe.acquire(timeout=0)
                probe.release()
            except Timeout:
                return True
        return False

    with first_err.open("w") as e1, second_err.open("w") as e2:
        first = subprocess.Popen([sys.executable, "-c", _HELD_PREPARE, str(go), "-v", *args], stdout=subprocess.PIPE,
                                 stderr=e1, text=True, env=ENV)
        second = None
        try:
            _wait_for(locked, "the first prepare to take the cache lock", first)
            second = subprocess.Popen([sys.executable, "-m", "pamc", "-v", *args], stdout=subprocess.PIPE, stderr=e2,
                                      text=True, env=ENV)
            _wait_for(lambda: "another process is building" in second_err.read_text(), "the second to wait", second)
            go.touch()
            first_out, _ = first.communicate(timeout=300)
            second_out, _ = second.communicate(timeout=300)
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.kill()
    first_log, second_log = first_err.read_text(), second_err.read_text()
    assert first.returncode == 0, first_log
    assert second.returncode == 0, second_log
    assert "reusing image cache" in second_log and "decoding" not in second_log
    assert "reusing image cache" not in first_log and "another process" not in first_log
    assert first_out.splitlines()[-1] == second_out.splitlines()[-1]
    caches = sorted(out.glob("images-*.u8"))
    assert len(caches) == 1 and not list(out.glob("*.tmp"))
    stored = np.fromfile(caches[0], dtype=np.uint8).reshape(30, 32, 32, 3)
    for r in range(30):  # the first process's cache is complete and exactly the decoded images
        pixels, _ = decode_image(data / "img" / f"train_{r:04d}.jpg", 32)
        assert np.array_equal(stored[r], pixels.transpose(1, 2, 0))


_PEAK = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n{proc.returncode}\\n{proc.stderr}")
"""


def _peak_rss_mib(*args: str) -> tuple[float, int, str]:
    """Peak RSS (MiB) of ``python -m pamc ARGS``, its exit code and stderr.

    An intermediate process runs it, so ``RUSAGE_CHILDREN`` covers that one child only.
    """
    proc = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "pamc", *args], capture_output=True,
                          text=True, env=ENV, timeout=300)
    peak_kib, code, stderr = proc.stdout.split("\n", 2)
    return int(peak_kib) / 1024, int(code), stderr


def test_a_jpeg_claiming_12000x12000_is_refused_in_little_memory(tmp_path, record_property):
    data = tmp_path / "data"
    for r in range(4):
        write_jpeg(data / "img" / f"{r}.jpg", r, (24, 24))
    bomb = bomb_jpeg()
    (data / "img" / "bomb.jpg").write_bytes(bomb)
    rows = "".join(f"img/{r}.jpg,cat\n" for r in range(4)) + "img/bomb.jpg,dog\n"
    (data / "train.csv").write_text("image,labels\n" + rows)
    peak, code, stderr = _peak_rss_mib("prepare", "csv", "--data-root", str(data), "--out", str(tmp_path / "p"),
                                       "--strict", "--no-progress")
    print(f"JPEG of {len(bomb)} bytes claiming 12000x12000: peak RSS {peak:.0f} MiB")
    record_property("peak_rss_mib_jpeg", round(peak))
    assert code == 2 and "is over the pixel budget" in stderr, stderr
    assert 1000 < len(bomb) < 2000
    assert peak < 500, f"peak RSS {peak:.0f} MiB"


def test_the_alias_bomb_yaml_is_refused_fast_in_little_memory(tmp_path, record_property):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB_YAML)
    start = time.monotonic()
    peak, code, stderr = _peak_rss_mib("train", "--config", str(bomb), "-o", str(tmp_path / "run"))
    print(f"alias-bomb YAML of {len(BOMB_YAML)} bytes: peak RSS {peak:.0f} MiB, {time.monotonic() - start:.1f} s")
    record_property("peak_rss_mib_yaml", round(peak))
    assert code == 2 and "aliases expand to more than 100000 values" in stderr, stderr
    assert len(BOMB_YAML.encode()) == 436
    assert peak < 500, f"peak RSS {peak:.0f} MiB"
    assert not (tmp_path / "run").exists()


# --- train, predict --csv and table --csv on a real full disk --------------------------------

TRAIN = ["train", "--epochs", "2", "--batch-size", "8", "--lr", "0.003", "--seed", "2",
         "--set", "data.synthetic.num_train=80", "--set", "data.synthetic.num_test=40",
         "--set", "data.synthetic.image_size=32", "--no-progress"]

# `pamc train` that fills its disk right after epoch 1's checkpoint (the progress callback runs
# after the checkpoint hook): epoch 2's checkpoint meets a real ENOSPC
_FILL_AFTER_EPOCH_1 = """
import sys
from pathlib import Path
from pamc.cli import progress
disk = Path(sys.argv[1])
def on_epoch_end(self, epoch, metrics):
    if epoch == 1:
        with open(disk / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(bytes(4096))
            except OSError:
                pass
progress.TqdmProgress.on_epoch_end = on_epoch_end
from pamc.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def _no_temporaries(disk: Path) -> None:
    assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]


def test_train_first_checkpoint_on_a_full_disk_leaves_no_run(tmpfs):
    disk = tmpfs(512)  # room for config.yaml, not for a ~1 MB checkpoint
    run = disk / "run"
    proc = pamc(*TRAIN, "-o", str(run))
    line = _one_line(proc, "No space left on device")
    assert f"cannot write {run}/last.state-" in line  # the training state is the first file written
    assert not run.exists(), "a run that fails before its first checkpoint leaves no directory"
    _no_temporaries(disk)


@pytest.mark.slow
def test_train_later_checkpoint_on_a_full_disk_keeps_the_previous_one(tmpfs):
    disk = tmpfs(16384)
    run = disk / "run"
    proc = subprocess.run([sys.executable, "-c", _FILL_AFTER_EPOCH_1, str(disk), *TRAIN, "-o", str(run)],
                          capture_output=True, text=True, env=ENV, timeout=600)
    line = _one_line(proc, "No space left on device")
    assert f"cannot write {run}/" in line
    _no_temporaries(disk)
    _, state = load_last(run)  # epoch 1's pair, intact
    assert (state.progress.epoch, state.progress.step) == (2, 0)
    assert len(list(run.glob("last.state-*.pt"))) == 1 and not (run / "test_results.json").exists()
    (disk / "filler").unlink()
    resumed = pamc("train", "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "test_results.json").is_file()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    proc = pamc(*TRAIN, "--epochs", "1", "-o", str(run))
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.mark.parametrize("command", ["predict", "table"])
def test_predict_and_table_csv_on_a_full_disk_keep_the_previous_file(command, tmpfs, finished_run, tmp_path):
    image = tmp_path / "x.jpg"
    write_jpeg(image, 0, (32, 32))
    disk = tmpfs(64)
    out = disk / "out.csv"
    out.write_text("the previous good file\n")
    args = ["predict", str(finished_run), str(image)] if command == "predict" else ["table", str(finished_run)]
    _fill(disk)
    proc = pamc(*args, "--csv", str(out))
    _one_line(proc, f"cannot write {out}: No space left on device")
    assert out.read_text() == "the previous good file\n"
    _no_temporaries(disk)
    (disk / "filler").unlink()
    assert pamc(*args, "--csv", str(out)).returncode == 0  # the same command, with room: it writes
    assert out.read_text() != "the previous good file\n"
