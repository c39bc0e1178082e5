"""mAP against scikit-learn (ties, empty classes, ignored entries) and hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pamc.evaluation import (
    MultiLabelEvaluator,
    average_precision,
    group_mean_average_precision,
    mean_average_precision,
)
from pamc.evaluation import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def sklearn_ap(scores: np.ndarray, labels: np.ndarray, ignore_unobserved: bool = False) -> np.ndarray:
    """Per-class reference; AP = 0 where a class has no positive among its evaluated entries."""
    result = []
    for c in range(scores.shape[1]):
        keep = labels[:, c] != 0 if ignore_unobserved else np.ones(len(labels), dtype=bool)
        y, s = labels[keep, c] == 1, scores[keep, c]
        if not y.any():
            result.append(0.0)
            continue
        result.append(sklearn_metrics.average_precision_score(y, s))
    return np.array(result)


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores with few distinct values (many ties), +1/-1/0 labels, some degenerate classes."""
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(50, 301)), int(rng.integers(1, 21))
    scores = np.round(rng.random((n, c)), int(rng.integers(1, 3)))
    labels = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(n, c), p=[0.6, 0.25, 0.15])
    if c >= 3:
        labels[:, 0] = np.where(labels[:, 0] == 1, -1, labels[:, 0])  # no positive
        labels[:, 1] = 1  # all positive
        labels[: n // 2, 2] = 0  # half unobserved
    return scores, labels


def test_sklearn_returns_zero_without_positives() -> None:
    # documents the convention we share with scikit-learn (1.9 returns 0.0 and warns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = sklearn_metrics.average_precision_score([0, 0, 0], [0.3, 0.2, 0.1])
    assert value == 0.0
    assert average_precision(np.array([[0.3], [0.2], [0.1]]), np.array([[-1], [-1], [0]]))[0] == 0.0


@pytest.mark.parametrize("seed", range(12))
def test_matches_sklearn_with_ties(seed: int) -> None:
    scores, labels = random_case(seed)
    np.testing.assert_allclose(average_precision(scores, labels), sklearn_ap(scores, labels), atol=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_ignore_unobserved_matches_sklearn_on_observed_subset(seed: int) -> None:
    scores, labels = random_case(seed)
    ours = average_precision(scores, labels, ignore_unobserved=True)
    np.testing.assert_allclose(ours, sklearn_ap(scores, labels, ignore_unobserved=True), atol=1e-6)


def test_degenerate_classes() -> None:
    checked = 0
    for seed in range(12):
        scores, labels = random_case(seed)
        if scores.shape[1] < 3:
            continue
        ap = average_precision(scores, labels)
        assert ap[0] == 0.0  # no positive
        assert ap[1] == pytest.approx(1.0)  # all positive
        checked += 1
    assert checked >= 6
    no_positive_at_all = average_precision(np.ones((5, 3)), -np.ones((5, 3)))
    np.testing.assert_array_equal(no_positive_at_all, np.zeros(3))
    assert average_precision(np.ones((0, 3)), np.ones((0, 3))).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("seed", range(4))
def test_float32_and_torch_inputs(seed: int) -> None:
    scores, labels = random_case(seed)
    scores32 = scores.astype(np.float32)
    expected = sklearn_ap(scores32, labels)
    np.testing.assert_allclose(average_precision(scores32, labels), expected, atol=1e-6)
    np.testing.assert_allclose(
        average_precision(scores32, labels, ignore_unobserved=True),
        sklearn_ap(scores32, labels, ignore_unobserved=True),
        atol=1e-6,
    )
    torch_ap = average_precision(torch.from_numpy(scores32), torch.from_numpy(labels))
    np.testing.assert_allclose(torch_ap, expected, atol=1e-6)
    low = torch.from_numpy(scores32).to(torch.bfloat16)
    np.testing.assert_allclose(
        average_precision(low, labels), sklearn_ap(low.float().numpy(), labels), atol=1e-6
    )


def test_float64_scores_that_are_not_float32_keep_their_order() -> None:
    # these differ only beyond float32 precision; widening to float32 would tie them
    scores = np.array([[1.0 + 1e-12], [1.0], [1.0 - 1e-12], [0.5]])
    labels = np.array([[1], [-1], [1], [-1]])
    assert average_precision(scores, labels)[0] == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(scores.astype(np.float32), labels)[0] == pytest.approx(2 / 3)


def test_zero_one_labels_and_many_classes_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 20, size=(400, 150)).astype(np.float32)  # heavy ties
    labels = (rng.random((400, 150)) < 0.1).astype(np.int64)  # {0, 1} matrix
    monkeypatch.setattr(metrics, "_CHUNK_ENTRIES", 400 * 40)  # several chunks, uneven last one
    monkeypatch.setattr(metrics, "_SORT_CLASSES", 16)
    monkeypatch.setattr(metrics, "_BAND_ROWS", 64)
    expected = sklearn_ap(scores, labels)
    np.testing.assert_allclose(average_precision(scores, labels), expected, atol=1e-6)
    integer_scores = scores.astype(np.int64)
    np.testing.assert_allclose(average_precision(integer_scores, labels), expected, atol=1e-6)
    assert mean_average_precision(scores, labels) == pytest.approx(expected.mean(), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_threads_split_the_classes_without_changing_the_result(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    scores, labels = random_case(seed + 100)
    scores = np.tile(scores, (1, 7))  # enough classes for several chunks per thread
    labels = np.tile(labels, (1, 7))
    monkeypatch.setattr(metrics, "_CHUNK_ENTRIES", scores.shape[0] * 5)
    expected = sklearn_ap(scores, labels, ignore_unobserved=True)
    for threads in (1, 2, 3, 64):
        got = average_precision(scores, labels, ignore_unobserved=True, threads=threads)
        np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        average_precision(scores, labels, threads=0)


def test_hand_computed_no_ties() -> None:
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    labels = np.array([[1], [-1], [1], [-1]])
    # positives at ranks 1 and 3: precision 1/1 and 2/3
    assert average_precision(scores, labels)[0] == pytest.approx((1 + 2 / 3) / 2)


def test_hand_computed_ties() -> None:
    scores = np.array([[0.9], [0.9], [0.7], [0.7], [0.1]])
    labels = np.array([[1], [-1], [-1], [1], [1]])
    # thresholds 0.9: P=1/2 R=1/3; 0.7: P=2/4 R=2/3; 0.1: P=3/5 R=1
    expected = (1 / 3) * (1 / 2) + (1 / 3) * (2 / 4) + (1 / 3) * (3 / 5)
    assert average_precision(scores, labels)[0] == pytest.approx(expected)
    # breaking the ties in favour of the positives would give a higher value
    assert expected < (1 + 2 / 4 + 3 / 5) / 3
    # -0.0 and 0.0 are one threshold, as for scikit-learn
    signed_zero = average_precision(np.array([[0.0], [-0.0], [-1.0]]), np.array([[-1], [1], [-1]]))
    assert signed_zero[0] == pytest.approx(1 / 2)


def test_hand_computed_ignore_unobserved() -> None:
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    labels = np.array([[0], [1], [0], [-1]])
    assert average_precision(scores, labels)[0] == pytest.approx(1 / 2)
    assert average_precision(scores, labels, ignore_unobserved=True)[0] == pytest.approx(1.0)


def test_mean_average_precision_includes_empty_classes() -> None:
    scores = np.array([[0.9, 0.1], [0.8, 0.2]])
    labels = np.array([[1, -1], [-1, -1]])
    assert mean_average_precision(scores, labels) == pytest.approx(0.5)


def test_group_map_hand_checked() -> None:
    scores = np.array([[0.9, 0.1, 0.5, 0.4], [0.8, 0.2, 0.6, 0.3], [0.7, 0.3, 0.7, 0.2]])
    labels = np.array([[1, 1, -1, 1], [-1, -1, 1, -1], [-1, -1, 0, -1]])
    ap = average_precision(scores, labels, ignore_unobserved=True)
    np.testing.assert_allclose(ap, [1.0, 1 / 3, 1.0, 1.0])
    frequency = np.array([30, 5, 5, 10])  # ascending (stable): classes 1, 2, 3, 0
    groups = group_mean_average_precision(scores, labels, frequency, num_groups=2)
    assert groups == pytest.approx([(1 / 3 + 1.0) / 2, 1.0])
    groups = group_mean_average_precision(scores, labels, frequency, num_groups=3)
    assert groups == pytest.approx([(1 / 3 + 1.0) / 2, 1.0, 1.0])  # array_split: sizes 2, 1, 1
    with pytest.raises(ValueError, match="num_groups"):
        group_mean_average_precision(scores, labels, frequency, num_groups=5)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        average_precision(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="2-d"):
        average_precision(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.array([[0.1], [np.nan]]), np.array([[1], [-1]]))
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.array([[0.1], [np.nan]]), np.array([[-1], [1]]))


def test_evaluator_batches_equal_one_shot() -> None:
    scores, labels = random_case(5)
    frequency = np.random.default_rng(0).integers(0, 100, scores.shape[1])
    evaluator = MultiLabelEvaluator(
        scores.shape[1], ignore_unobserved=True, class_frequency=frequency, num_groups=2
    )
    for start in range(0, len(scores), 37):
        stop = start + 37
        evaluator.process(torch.from_numpy(scores[start:stop]), torch.from_numpy(labels[start:stop]))
    result = evaluator.evaluate()
    expected = average_precision(scores.astype(np.float32), labels, ignore_unobserved=True)
    assert result["num_samples"] == len(scores)
    np.testing.assert_allclose(result["ap"], expected * 100, atol=1e-9)
    assert result["map"] == pytest.approx(expected.mean() * 100)
    groups = group_mean_average_precision(scores.astype(np.float32), labels, frequency, 2)
    assert result["group_map"] == pytest.approx([100 * g for g in groups])

    evaluator.reset()
    with pytest.raises(ValueError, match="before any batch"):
        evaluator.evaluate()


def test_evaluator_copies_its_input() -> None:
    scores = np.array([[0.9, 0.2], [0.1, 0.8]], dtype=np.float32)
    labels = np.array([[1, -1], [-1, 1]])
    evaluator = MultiLabelEvaluator(2)
    evaluator.process(scores, labels)
    scores[:] = 0.0  # a caller reusing its buffer must not change what was recorded
    result = evaluator.evaluate()
    assert result["map"] == pytest.approx(100.0)
    assert "group_map" not in result
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        evaluator.process(np.zeros((2, 3)), np.zeros((2, 3)))


def test_classes_without_an_annotated_entry_are_left_out_unless_counted_as_zero() -> None:
    # class 0: scores 0.9(+) 0.4(-) -> AP 1; class 1: 0.8(-) 0.3(+) -> AP 1/2; class 2: nobody annotated it
    scores = np.array([[0.9, 0.8, 0.7], [0.4, 0.3, 0.2]], dtype=np.float32)
    labels = np.array([[1, -1, 0], [-1, 1, 0]], dtype=np.int8)
    assert mean_average_precision(scores, labels, ignore_unobserved=True) == pytest.approx(0.75)
    assert mean_average_precision(scores, labels, ignore_unobserved=True, unannotated="zero") == pytest.approx(0.5)
    for split in (False, True):  # dense and streamed (annotated entries only) paths agree
        for unannotated, expected_map, scored in (("skip", 75.0, 2), ("zero", 50.0, 3)):
            ev = MultiLabelEvaluator(3, ignore_unobserved=split, unannotated=unannotated,
                                     class_frequency=np.array([5, 1, 3]), num_groups=3)
            ev.process(scores, labels if split else np.where(labels == 0, -1, labels))
            result = ev.evaluate()
            if split:
                assert result["map"] == pytest.approx(expected_map)
                assert (result["num_classes_scored"], result["num_classes_left_out"]) == (scored, 3 - scored)
                # groups by frequency: [class 1], [class 2], [class 0]
                assert result["group_map"][0] == pytest.approx(50.0) and result["group_map"][2] == pytest.approx(100.0)
                assert result["group_map"][1] == (None if unannotated == "skip" else 0.0)
                assert result["ap"][2] == (None if unannotated == "skip" else 0.0)
            else:  # complete labels: every class is annotated (class 2 with negatives only: AP 0)
                assert result["map"] == pytest.approx(50.0)
                assert (result["num_classes_scored"], result["num_classes_left_out"]) == (3, 0)
    with pytest.raises(ValueError, match="unannotated"):
        MultiLabelEvaluator(3, unannotated="drop")
