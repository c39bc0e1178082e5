"""The arms runner in parallel: same results as in order, a failing arm stops the others."""

import multiprocessing
import pickle

import pytest
import torch

from pamc.arms import Arm, plan, run_arms, slug
from pamc.config import config_from_dict, replace
from pamc.data import build_dataset
from pamc.engine import RunDir
from pamc.engine import threads as threads_mod
from pamc.engine.threads import intra_op_threads, resolve_threads, usable_cores
from pamc.errors import ConfigError, PamcError


def tiny_config(epochs: int = 1):
    return config_from_dict({
        "data": {"synthetic": {"num_train": 96, "num_test": 48, "image_size": 24}},
        "model": {"backbone": "smallcnn"},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 4e-3, "threads": 1},
    })


ARMS = [Arm("an", "an", 1.0, 1.0), Arm("an + BoostLU (inference)", "an", 1.0, 5.0, reuse="an"),
        Arm("ll-r + BoostLU", "ll-r", 5.0, 5.0)]


def params_for(method):
    return {"delta_rel": 10.0} if method.startswith("ll-") else {}


@pytest.mark.slow
def test_parallel_arms_give_the_sequential_results(tmp_path):
    files = {}
    for jobs in (1, 2):
        specs = plan(ARMS, [0, 1], tiny_config(), tmp_path / f"jobs{jobs}", params_for)
        results = run_arms(specs, jobs=jobs)
        assert [r.method for r in results] == ["an", "an", "ll-r"] * 2
        out = tmp_path / f"jobs{jobs}"  # the inference-only arms name their source run
        files[jobs] = {p.relative_to(out): p.read_text().replace(str(out), "OUT")
                       for p in sorted(out.glob("*/test_results.json"))}
        assert multiprocessing.active_children() == []
    assert len(files[1]) == 6 and files[1] == files[2]


@pytest.mark.slow
def test_failing_arm_stops_the_others_and_names_itself(tmp_path):
    arms = [Arm("long", "an", 1.0, 1.0), Arm("broken", "ll-r", 1.0, 1.0)]
    specs = plan(arms, [0], tiny_config(epochs=500), tmp_path,
                 lambda m: {"delta_rel": "x"} if m == "ll-r" else {})
    with pytest.raises(PamcError, match=r"arm 'broken' seed 0: delta_rel must be a number"):
        run_arms(specs, jobs=2)
    assert multiprocessing.active_children() == []
    assert not RunDir(specs[0].run_dir).is_finished and not specs[1].run_dir.exists()


def test_jobs_must_be_positive():
    with pytest.raises(PamcError, match="--jobs must be >= 1"):
        run_arms([], jobs=0)


def test_explicit_thread_count_wins_and_is_restored():
    before = torch.get_num_threads()
    assert resolve_threads(3) == 3
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("busy, cores, expected", [(0, 2, 2), (1, 2, 1), (5, 2, 1), (1, 4, 3)])
def test_auto_threads_take_the_idle_cores(monkeypatch, busy, cores, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads_mod, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads_mod, "other_runnable", lambda: busy)
    assert resolve_threads("auto") == expected
    assert resolve_threads("auto", deterministic=True) == cores  # the machine only, not its load


def test_auto_threads_keep_torchrun_setting(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads("auto") == torch.get_num_threads()


def test_other_runnable_reads_proc_loadavg(monkeypatch, tmp_path):
    fake = tmp_path / "loadavg"
    fake.write_text("0.50 0.40 0.30 3/200 12345\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(fake if path == "/proc/loadavg" else path, *a, **k))
    assert threads_mod.other_runnable(samples=3, interval_s=0.0) == 2  # 3 running, this process among them


def test_threads_config_key():
    assert tiny_config().train.threads == 1
    assert replace(tiny_config(), train__threads="auto").train.threads == "auto"
    assert 1 <= usable_cores()
    for bad in (0, "many", 1.5):
        with pytest.raises(ConfigError, match="train.threads"):
            replace(tiny_config(), train__threads=bad)


BASE = config_from_dict({"data": {"synthetic": {"num_train": 40, "num_test": 20, "image_size": 32}},
                         "model": {"backbone": "smallcnn"}, "train": {"epochs": 1, "batch_size": 8}})
REUSE_ARMS = [Arm("an", "an", 1.0, 1.0), Arm("an + BoostLU (inference)", "an", 1.0, 5.0, reuse="an")]


def test_slug():
    assert slug("ll-r + BoostLU") == "ll-r-boostlu" and slug("an + BoostLU (inference)") == "an-boostlu-inference"


def test_plan_is_picklable_data_seed_major(tmp_path):
    specs = plan(REUSE_ARMS, [3, 4], BASE, tmp_path, lambda method: {})
    assert [(s.arm, s.seed) for s in specs] == [("an", 3), ("an + BoostLU (inference)", 3), ("an", 4),
                                                ("an + BoostLU (inference)", 4)]
    assert specs[1].config.model.eval_alpha == 5.0 and specs[1].config.train.seed == 3
    assert specs[1].run_dir == tmp_path / "an-boostlu-inference-seed3"
    assert pickle.loads(pickle.dumps(specs)) == specs
    assert plan(REUSE_ARMS, [0], BASE, tmp_path, lambda m: {}, record_reused=False)[1].run_dir is None


def test_runner_trains_reuses_and_skips_finished_runs(tmp_path):
    bundle = build_dataset(BASE.data)
    specs = plan(REUSE_ARMS, [0], BASE, tmp_path, lambda method: {})
    first = run_arms(specs, dataset=bundle)
    trained, reused = first
    assert reused.evaluated_from == str(tmp_path / "an-seed0") and reused.eval_alpha == 5.0
    assert (reused.best_epoch, reused.best_val_map) == (trained.best_epoch, trained.best_val_map)
    assert RunDir.open(tmp_path / "an-boostlu-inference-seed0").read_results() == reused
    stamp = (tmp_path / "an-seed0" / "best.safetensors").stat().st_mtime_ns
    assert run_arms(specs, dataset=bundle) == first  # both finished: read back, nothing retrained
    assert (tmp_path / "an-seed0" / "best.safetensors").stat().st_mtime_ns == stamp
    # a finished run of another config is refused, never removed or retrained
    other = plan(REUSE_ARMS[:1], [0], config_from_dict({**BASE.to_dict(), "train": {"epochs": 1, "batch_size": 4}}),
                 tmp_path, lambda method: {})
    before = {p: p.read_bytes() for p in (tmp_path / "an-seed0").iterdir()}
    with pytest.raises(PamcError, match="an-seed0 holds a finished run with another config"):
        run_arms(other, dataset=bundle)
    assert {p: p.read_bytes() for p in (tmp_path / "an-seed0").iterdir()} == before
