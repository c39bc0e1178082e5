"""Evaluation of multi-label classifiers: per-class AP, mAP and frequency-grouped mAP."""

from pamc.evaluation.evaluator import MultiLabelEvaluator
from pamc.evaluation.metrics import (
    average_precision,
    group_mean_average_precision,
    mean_average_precision,
)
from pamc.evaluation.sparse import AnnotatedScores, sparse_average_precision

__all__ = [
    "MultiLabelEvaluator",
    "average_precision",
    "group_mean_average_precision",
    "mean_average_precision",
    "AnnotatedScores",
    "sparse_average_precision",
]
