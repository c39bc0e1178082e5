"""Accumulates batch predictions over an evaluation pass and reports mAP."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from pamc.evaluation.metrics import (
    annotated_classes, average_precision, group_average_precision, masked_mean, scored_classes,
)
from pamc.evaluation.sparse import AnnotatedScores


def _owned_copy(x: Tensor | np.ndarray, dtype: type, name: str, num_classes: int) -> np.ndarray:
    """A private (B, C) copy, so that later in-place changes by the caller cannot leak in."""
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        x = x.float().numpy() if x.is_floating_point() else x.numpy()
    x = np.array(x, dtype=dtype, copy=True)
    if x.ndim != 2 or x.shape[1] != num_classes:
        raise ValueError(f"{name} must have shape (B, {num_classes}), got {x.shape}")
    return x


class MultiLabelEvaluator:
    """Collects (scores, labels) batches with ``process`` and computes mAP in ``evaluate``.

    Scores are kept as float32 and labels as int8 (pamc convention: +1, -1, 0 unobserved), so
    an evaluation set costs 5 bytes per entry. With ``ignore_unobserved`` the entries labelled
    0 are left out of each class's ranking (OpenImages), and only the annotated entries of each
    batch are kept (:class:`~pamc.evaluation.sparse.AnnotatedScores`, about 7 bytes per
    annotation, no (N, C) matrix); the AP is the same as the dense computation's. With
    ``class_frequency`` (training positives per class) ``evaluate`` also reports the mAP of
    ``num_groups`` groups of classes of rising frequency, rarest first (OpenImages table).

    A class without any evaluated entry (only possible with ``ignore_unobserved``) is left out
    of every mean, as the authors' OpenImages evaluation does; ``unannotated="zero"`` counts it
    as AP 0. Every result says how many classes were scored and how many were left out.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_unobserved: bool = False,
        class_frequency: np.ndarray | None = None,
        num_groups: int = 5,
        unannotated: str = "skip",
    ) -> None:
        scored_classes(np.zeros(1, dtype=bool), unannotated)  # rejects an unknown choice
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_frequency is not None:
            class_frequency = np.asarray(class_frequency)
            if class_frequency.shape != (num_classes,):
                raise ValueError(
                    f"class_frequency has shape {class_frequency.shape}, expected ({num_classes},)"
                )
            if not 1 <= num_groups <= num_classes:
                raise ValueError(f"num_groups must be in [1, {num_classes}], got {num_groups}")
        self.num_classes = num_classes
        self.ignore_unobserved = ignore_unobserved
        self.class_frequency = class_frequency
        self.num_groups = num_groups
        self.unannotated = unannotated
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._annotated = AnnotatedScores(num_classes) if ignore_unobserved else None
        self._num_batches = 0

    def reset(self) -> None:
        """Forget every processed batch, ready for a new pass."""
        self._scores.clear()
        self._labels.clear()
        self._annotated = AnnotatedScores(self.num_classes) if self.ignore_unobserved else None
        self._num_batches = 0

    def process(self, scores: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> None:
        """Record one batch: scores (B, C), any monotone score such as logits or probabilities."""
        if self._annotated is not None:
            self._annotated.add(scores, labels)  # copies the annotated entries only
        else:
            scores = _owned_copy(scores, np.float32, "scores", self.num_classes)
            labels = _owned_copy(labels, np.int8, "labels", self.num_classes)
            if scores.shape != labels.shape:
                raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
            self._scores.append(scores)
            self._labels.append(labels)
        self._num_batches += 1

    def extend(self, other: "MultiLabelEvaluator") -> None:
        """Append the batches recorded by ``other`` (e.g. another rank's shard), without copying."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        if other.unannotated != self.unannotated:
            raise ValueError("cannot merge evaluators that treat unannotated classes differently")
        if other.ignore_unobserved != self.ignore_unobserved:
            raise ValueError("cannot merge an evaluator that ignores unobserved entries with one that does not")
        self._num_batches += other._num_batches
        if self._annotated is not None and other._annotated is not None:
            self._annotated.extend(other._annotated)
            return
        self._scores.extend(other._scores)
        self._labels.extend(other._labels)

    @property
    def num_samples(self) -> int:
        if self._annotated is not None:
            return self._annotated.num_samples
        return sum(len(batch) for batch in self._scores)

    def evaluate(self) -> dict[str, Any]:
        """mAP and per-class AP in percent (0-100), sample and class counts, optional group mAPs.

        ``ap`` holds None for a class left out; ``num_classes_scored`` and
        ``num_classes_left_out`` count the classes in and out of the mean.
        """
        if not self._num_batches:
            raise ValueError("evaluate() called before any batch was processed")
        if self._annotated is not None:
            ap = self._annotated.average_precision()
            annotated = self._annotated.annotated_classes()
        else:
            labels = np.concatenate(self._labels)
            ap = average_precision(np.concatenate(self._scores), labels, ignore_unobserved=self.ignore_unobserved)
            annotated = annotated_classes(labels, ignore_unobserved=self.ignore_unobserved)
        scored = scored_classes(annotated, self.unannotated)
        mean = masked_mean(ap, scored)
        result: dict[str, Any] = {
            "map": 0.0 if mean is None else mean * 100.0,
            "ap": [float(v) * 100.0 if s else None for v, s in zip(ap, scored)],
            "num_samples": self.num_samples,
            "num_classes_scored": int(scored.sum()),
            "num_classes_left_out": int((~scored).sum()),
        }
        if self.class_frequency is not None:
            groups = group_average_precision(ap, self.class_frequency, self.num_groups, scored)
            result["group_map"] = [None if value is None else value * 100.0 for value in groups]
        return result
