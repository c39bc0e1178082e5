"""The streamed AP over annotated entries equals the dense ``ignore_unobserved`` AP."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from pamc.evaluation import (
    AnnotatedScores, MultiLabelEvaluator, average_precision, group_mean_average_precision, sparse_average_precision,
)


def partial_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores with many ties; +1/-1/0 labels, mostly unannotated; degenerate classes."""
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(20, 400)), int(rng.integers(4, 40))
    scores = np.round(rng.random((n, c)), int(rng.integers(1, 3))).astype(np.float32)
    labels = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(n, c), p=[0.2, 0.65, 0.15])
    labels[:, 0] = np.where(labels[:, 0] == 1, -1, labels[:, 0])  # annotated, but no positive
    labels[:, 1] = 0  # not annotated at all
    labels[: n // 2, 2] = 1  # many positives
    labels[:, 3] = np.where(labels[:, 3] == 0, 0, 1)  # annotated entries all positive
    return scores, labels


def entries(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(labels)
    return cols, scores[rows, cols], labels[rows, cols] == 1


@pytest.mark.parametrize("seed", range(20))
def test_equals_the_dense_ignore_unobserved_ap(seed: int) -> None:
    scores, labels = partial_case(seed)
    dense = average_precision(scores, labels, ignore_unobserved=True)
    sparse = sparse_average_precision(*entries(scores, labels), labels.shape[1])
    np.testing.assert_allclose(sparse, dense, rtol=0, atol=1e-9)
    assert sparse[0] == sparse[1] == 0.0  # no annotated positive: AP 0, as in the dense code
    assert sparse[3] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_equals_scikit_learn_on_each_class_s_annotated_entries(seed: int) -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    scores, labels = partial_case(100 + seed)
    sparse = sparse_average_precision(*entries(scores, labels), labels.shape[1])
    for c in range(labels.shape[1]):
        keep = labels[:, c] != 0
        y = labels[keep, c] == 1
        expected = sklearn_metrics.average_precision_score(y, scores[keep, c]) if y.any() else 0.0
        assert sparse[c] == pytest.approx(expected, abs=1e-12)


def test_entry_order_does_not_matter_and_float64_keeps_its_ties() -> None:
    scores, labels = partial_case(3)
    cols, values, positive = entries(scores.astype(np.float64) + 1e-12, labels)
    perm = np.random.default_rng(0).permutation(len(cols))
    dense = average_precision(scores.astype(np.float64) + 1e-12, labels, ignore_unobserved=True)
    np.testing.assert_allclose(sparse_average_precision(cols[perm], values[perm], positive[perm], labels.shape[1]),
                               dense, atol=1e-9)


def test_hand_computed_ties() -> None:
    # one class: scores 0.9(+) 0.5(-) 0.5(+) 0.1(+); the tie forms one threshold with precision 2/3
    ap = sparse_average_precision(np.zeros(4, dtype=int), np.array([0.9, 0.5, 0.5, 0.1]),
                                  np.array([True, False, True, True]), 2)
    assert ap[0] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3) and ap[1] == 0.0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        sparse_average_precision(np.array([0, 0]), np.array([0.1, np.nan]), np.array([True, False]), 1)
    with pytest.raises(ValueError, match="outside"):
        sparse_average_precision(np.array([0, 3]), np.array([0.1, 0.2]), np.array([True, False]), 3)
    with pytest.raises(ValueError, match="one length"):
        sparse_average_precision(np.array([0]), np.array([0.1, 0.2]), np.array([True, False]), 3)
    assert sparse_average_precision(np.zeros(0, int), np.zeros(0), np.zeros(0, bool), 3).tolist() == [0, 0, 0]


@pytest.mark.parametrize("seed", range(6))
def test_evaluator_streams_only_annotated_entries_and_keeps_the_group_map(seed: int) -> None:
    scores, labels = partial_case(seed)
    scores[labels == 0] = np.nan  # unannotated entries are never looked at
    num_classes = labels.shape[1]
    frequency = np.random.default_rng(seed).integers(0, 50, num_classes)
    evaluator = MultiLabelEvaluator(num_classes, ignore_unobserved=True, class_frequency=frequency)
    for start in range(0, len(scores), 32):
        evaluator.process(torch.from_numpy(scores[start:start + 32]), torch.from_numpy(labels[start:start + 32]))
    assert evaluator._annotated.num_entries == np.count_nonzero(labels) and not evaluator._scores
    result = evaluator.evaluate()
    filled = np.where(labels == 0, np.float32(0.5), scores)
    dense = average_precision(filled, labels, ignore_unobserved=True)
    assert result["num_samples"] == len(scores)
    # class 1 has no annotated entry: left out of the mAP (as the authors' OpenImages evaluation)
    assert result["ap"][1] is None
    assert (result["num_classes_scored"], result["num_classes_left_out"]) == (num_classes - 1, 1)
    np.testing.assert_allclose(np.delete(result["ap"], 1).astype(float), np.delete(dense, 1) * 100, rtol=0, atol=1e-9)
    assert result["map"] == pytest.approx(np.delete(dense, 1).mean() * 100, abs=1e-9)
    groups = group_mean_average_precision(filled, labels, frequency, 5)
    np.testing.assert_allclose(result["group_map"], [100 * g for g in groups], rtol=0, atol=1e-9)


def test_evaluator_shards_merge_after_pickling_and_reset() -> None:
    scores, labels = partial_case(7)
    shards = [MultiLabelEvaluator(labels.shape[1], ignore_unobserved=True) for _ in range(2)]
    for r, shard in enumerate(shards):
        shard.process(scores[r::2], labels[r::2])
    merged = MultiLabelEvaluator(labels.shape[1], ignore_unobserved=True)
    for shard in shards:
        merged.extend(pickle.loads(pickle.dumps(shard)))  # what the distributed gather does
    assert merged.num_samples == len(scores)
    ap = merged.evaluate()["ap"]
    assert ap[1] is None  # not annotated at all
    np.testing.assert_allclose(np.delete(ap, 1).astype(float),
                               np.delete(average_precision(scores, labels, ignore_unobserved=True), 1) * 100, atol=1e-9)
    with pytest.raises(ValueError, match="cannot merge"):
        merged.extend(MultiLabelEvaluator(labels.shape[1]))
    merged.reset()
    assert merged.num_samples == 0
    with pytest.raises(ValueError, match="before any batch"):
        merged.evaluate()


def test_annotated_scores_copy_their_input() -> None:
    store = AnnotatedScores(2)
    scores = np.array([[0.9, 0.2], [0.1, 0.8]], dtype=np.float32)
    store.add(scores, np.array([[1, -1], [-1, 1]]))
    scores[:] = 0.0
    assert store.average_precision().tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        store.add(np.zeros((2, 3)), np.zeros((2, 3)))


def test_openimages_val_and_test_stay_sparse_and_evaluate_as_the_dense_labels(tmp_path) -> None:
    import json

    from dataset_fixtures import make_openimages
    from pamc.config import load_config
    from pamc.data import ArrayLoader, DeviceTransform, SparseLabelStore, build_dataset
    from pamc.engine import fit, load_checkpoint, restore_model
    from pamc.engine.trainer import predict

    truth = make_openimages(tmp_path / "oi", n_train=40, n_test=30)["test"][1]
    results = {}
    for mode in ("sparse", "dense"):
        cfg = load_config(None, {
            "data.dataset": "openimages-v3", "data.root": str(tmp_path / "oi"), "data.image_size": 32,
            "data.cache_dir": str(tmp_path / "c"), "data.label_store": mode, "model.backbone": "smallcnn",
            "train.epochs": 1, "train.batch_size": 8, "train.deterministic": True, "output_dir": str(tmp_path / mode),
        })
        bundle = build_dataset(cfg.data)
        if mode == "sparse":
            assert isinstance(bundle.val.full, SparseLabelStore) and bundle.val.full is bundle.val.observed
            assert isinstance(bundle.test.full, SparseLabelStore) and bundle.test.full is bundle.test.observed
            assert np.array_equal(bundle.test.full_rows(np.arange(len(truth))), truth)
        else:
            assert isinstance(bundle.test.full, np.ndarray)
        fit(cfg, dataset=bundle, callbacks=())
        results[mode] = json.loads((tmp_path / mode / "test_results.json").read_text())
    assert results["sparse"]["test_ap"] == results["dense"]["test_ap"]
    assert results["sparse"]["test_group_map"] == results["dense"]["test_group_map"]
    # and both equal the dense ignore_unobserved AP of the best model's test scores
    path = tmp_path / "sparse" / "best.safetensors"
    model = restore_model(load_checkpoint(path), path)
    scores = predict(model, ArrayLoader(bundle.test, 64), DeviceTransform(torch.device("cpu")))
    dense = average_precision(scores, truth, ignore_unobserved=True) * 100
    np.testing.assert_allclose(list(results["sparse"]["test_ap"].values()), dense, rtol=0, atol=1e-9)
