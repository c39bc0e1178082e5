"""Average precision over annotated entries only, for label sets too large to hold densely.

With ``ignore_unobserved=True`` (OpenImages) only the annotated (image, class) entries take
part in a class's ranking, so an evaluation pass only needs, per annotated entry, its class,
its score and whether it is positive: memory O(annotations), never an (N, C) matrix.
:class:`AnnotatedScores` collects these entries batch by batch and
:func:`sparse_average_precision` computes per-class AP from them in one vectorized pass: the
entries are sorted once by (class, score); tied scores of a class form one
threshold, and each positive contributes the precision at its threshold,
``AP = mean over positives i of TP(score >= s_i) / #(score >= s_i)``, which is what
scikit-learn's ``average_precision_score`` and the dense
:func:`~pamc.evaluation.metrics.average_precision` (``ignore_unobserved=True``) compute. A
class without an annotated positive gets AP = 0, as there; :meth:`AnnotatedScores.annotated_classes`
says which classes have an annotated entry at all (the others are left out of the mAP).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor


def _class_dtype(num_classes: int) -> type:
    return np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32


def sparse_average_precision(classes: np.ndarray, scores: np.ndarray, positive: np.ndarray,
                             num_classes: int) -> np.ndarray:
    """Per-class AP (C,) float64 of annotated entries given as parallel 1-d arrays.

    ``classes`` are class numbers in ``[0, num_classes)``, ``scores`` any real dtype (compared
    as given, so pass float32 scores to match a float32 dense evaluation exactly) and
    ``positive`` booleans; every entry not positive is a negative. NaN scores raise ValueError.
    """
    classes, scores, positive = np.asarray(classes), np.asarray(scores), np.asarray(positive, dtype=bool)
    if not classes.ndim == scores.ndim == positive.ndim == 1 or not classes.size == scores.size == positive.size:
        raise ValueError("classes, scores and positive must be 1-d arrays of one length")
    result = np.zeros(num_classes, dtype=np.float64)
    if classes.size == 0:
        return result
    if classes.min() < 0 or classes.max() >= num_classes:
        raise ValueError(f"a class number is outside [0, {num_classes})")
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    order = np.lexsort((scores, classes))  # by class, then ascending score
    cls, sc, pos = classes[order].astype(np.int64), scores[order], positive[order]
    del order
    # a threshold is a run of equal (class, score); the entries scored >= it run from its start
    # to the end of the class
    starts_run = np.empty(cls.size, dtype=bool)
    starts_run[0] = True
    np.logical_or(cls[1:] != cls[:-1], sc[1:] != sc[:-1], out=starts_run[1:])
    run_start = np.flatnonzero(starts_run)
    run_of = np.cumsum(starts_run) - 1
    del starts_run, sc
    class_end = np.cumsum(np.bincount(cls, minlength=num_classes))  # one past each class's last entry
    seen_pos = np.concatenate(([0], np.cumsum(pos)))  # positives among the first k sorted entries
    at = np.flatnonzero(pos)
    c = cls[at]
    start = run_start[run_of[at]]
    precision = (seen_pos[class_end[c]] - seen_pos[start]) / (class_end[c] - start)
    num_pos = np.bincount(c, minlength=num_classes)
    total = np.bincount(c, precision, minlength=num_classes)
    np.divide(total, num_pos, out=result, where=num_pos > 0)
    return result


class AnnotatedScores:
    """The (class, score, positive) of every annotated entry seen, collected batch by batch.

    ``add(scores, labels)`` takes a dense (B, C) batch (labels +1 / -1 / 0, 0 = unannotated)
    and keeps only its annotated entries: 4 bytes of float32 score, 2 (or 4) of class and 1 of
    label per entry.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._classes: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._positive: list[np.ndarray] = []
        self.num_samples = 0

    def add(self, scores: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> None:
        scores = _batch(scores, "scores", self.num_classes)
        labels = _batch(labels, "labels", self.num_classes).astype(np.int8, copy=False)
        if scores.shape != labels.shape:
            raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
        rows, cols = np.nonzero(labels)
        self._classes.append(cols.astype(_class_dtype(self.num_classes)))
        self._scores.append(scores[rows, cols].astype(np.float32))
        self._positive.append(labels[rows, cols] == 1)
        self.num_samples += scores.shape[0]

    def extend(self, other: "AnnotatedScores") -> None:
        """Append the entries collected by ``other`` (another rank's shard), without copying."""
        self._classes.extend(other._classes)
        self._scores.extend(other._scores)
        self._positive.extend(other._positive)
        self.num_samples += other.num_samples

    @property
    def num_entries(self) -> int:
        return sum(len(c) for c in self._classes)

    def annotated_classes(self) -> np.ndarray:
        """Boolean (C,) mask of the classes with at least one annotated entry collected."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for classes in self._classes:
            counts += np.bincount(classes, minlength=self.num_classes)
        return counts > 0

    def average_precision(self) -> np.ndarray:
        """Per-class AP (C,) over every entry collected so far."""
        def joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        return sparse_average_precision(joined(self._classes, np.int16), joined(self._scores, np.float32),
                                        joined(self._positive, bool), self.num_classes)


def _batch(x: Tensor | np.ndarray, name: str, num_classes: int) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        x = x.float().numpy() if x.is_floating_point() else x.numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != num_classes:
        raise ValueError(f"{name} must have shape (B, {num_classes}), got {x.shape}")
    return x
