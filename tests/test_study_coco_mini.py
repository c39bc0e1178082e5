"""The fold protocol of benchmarks/study_coco_mini.py, on random labels (no shared data needed)."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from study_coco_mini import fold_bundle, fold_test_rows  # noqa: E402


def test_folds_partition_the_photos_and_keep_one_true_positive() -> None:
    rng = np.random.default_rng(3)
    n, c, folds = 53, 6, 5
    full = np.where(rng.random((n, c)) < 0.4, 1, -1).astype(np.int8)
    full[np.arange(n), rng.integers(0, c, n)] = 1  # every photo has a positive
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(3, axis=1)
    tests = [fold_test_rows(n, folds, k) for k in range(folds)]
    assert sorted(np.concatenate(tests).tolist()) == list(range(n))  # each photo is tested exactly once
    assert [len(t) for t in tests] == [11, 11, 11, 10, 10]
    for k in range(folds):
        bundle = fold_bundle(tuple("abcdef"), images, full, folds, k)
        ids = [set(getattr(bundle, s).images[:, 0, 0, 0].tolist()) for s in ("train", "val", "test")]
        assert ids[2] == set(tests[k].tolist())
        assert not (ids[0] & ids[1]) and not (ids[0] | ids[1]) & ids[2] and len(ids[0] | ids[1] | ids[2]) == n
        observed = bundle.train.observed.to_numpy()
        assert ((observed == 1).sum(1) == 1).all() and (observed != -1).all()
        assert (bundle.train.full[observed == 1] == 1).all()
        assert np.array_equal(bundle.test.full, full[np.sort(tests[k])])
