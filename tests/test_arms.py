"""The arms runner shared by the demo and the zoo."""

from __future__ import annotations

import pickle

from pamc.arms import Arm, plan, run_arms, slug
from pamc.config import config_from_dict
from pamc.data import build_dataset
from pamc.engine import RunDir

BASE = config_from_dict({"data": {"synthetic": {"num_train": 40, "num_test": 20, "image_size": 32}},
                         "model": {"backbone": "smallcnn"}, "train": {"epochs": 1, "batch_size": 8}})
ARMS = [Arm("an", "an", 1.0, 1.0), Arm("an + BoostLU (inference)", "an", 1.0, 5.0, reuse="an")]


def test_slug():
    assert slug("ll-r + BoostLU") == "ll-r-boostlu" and slug("an + BoostLU (inference)") == "an-boostlu-inference"


def test_plan_is_picklable_data_seed_major(tmp_path):
    specs = plan(ARMS, [3, 4], BASE, tmp_path, lambda method: {})
    assert [(s.arm, s.seed) for s in specs] == [("an", 3), ("an + BoostLU (inference)", 3), ("an", 4),
                                                ("an + BoostLU (inference)", 4)]
    assert specs[1].config.model.eval_alpha == 5.0 and specs[1].config.train.seed == 3
    assert specs[1].run_dir == tmp_path / "an-boostlu-inference-seed3"
    assert pickle.loads(pickle.dumps(specs)) == specs
    assert plan(ARMS, [0], BASE, tmp_path, lambda m: {}, record_reused=False)[1].run_dir is None


def test_runner_trains_reuses_and_skips_finished_runs(tmp_path):
    bundle = build_dataset(BASE.data)
    specs = plan(ARMS, [0], BASE, tmp_path, lambda method: {})
    first = run_arms(specs, dataset=bundle)
    trained, reused = first
    assert reused.evaluated_from == str(tmp_path / "an-seed0") and reused.eval_alpha == 5.0
    assert (reused.best_epoch, reused.best_val_map) == (trained.best_epoch, trained.best_val_map)
    assert RunDir.open(tmp_path / "an-boostlu-inference-seed0").read_results() == reused
    stamp = (tmp_path / "an-seed0" / "best.safetensors").stat().st_mtime_ns
    assert run_arms(specs, dataset=bundle) == first  # both finished: read back, nothing retrained
    assert (tmp_path / "an-seed0" / "best.safetensors").stat().st_mtime_ns == stamp
