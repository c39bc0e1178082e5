"""Average precision and mAP over label matrices, exact to scikit-learn and fast.

AP of one class is the step integral of its precision-recall curve,
``sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds in descending order, where
tied scores form one threshold. This equals ``sklearn.metrics.average_precision_score``
(checked to 1e-6 in the tests, ties included). Summed per positive it reads
``AP = mean over positives i of TP(score >= s_i) / #(score >= s_i)``, which is what is
computed here: each class column is sorted once (classes in bounded chunks, the sort
vectorized over the chunk) and the positives are located in it by binary search.

A class without a positive among its evaluated entries gets AP = 0, the field's convention;
scikit-learn 1.9 returns 0.0 there as well (with a warning). A class without any evaluated
entry (possible only with ``ignore_unobserved``: OpenImages classes nobody annotated in the
test set) is left out of the mAP, as the authors' OpenImages evaluation does
(``compute_metrics_openimages`` in snucml/LargeLossMatters); ``unannotated="zero"`` counts it
as AP 0 instead. :func:`scored_classes` says which classes are scored.

Labels follow the pamc convention (+1 positive, -1 negative, 0 unobserved); a {0, 1} matrix
also works. An entry is positive iff its label equals 1. Every other entry is a negative,
unless ``ignore_unobserved=True``, which drops the entries labelled 0 from that class's
ranking entirely (OpenImages evaluation; with a {0, 1} matrix that leaves only positives).
Scores may be any float or integer dtype, numpy or torch; NaN scores raise ValueError
(except in ignored entries). float32 input is sorted as float32, never widened.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor

_CHUNK_ENTRIES = 2**23  # classes are processed in chunks of about this many (N * k) entries
_SORT_CLASSES = 64  # transposing and sorting run fastest on small, cache-sized groups
_BAND_ROWS = 512
_FLOAT32_EXACT = (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.float16, np.float32)
_NAN_BITS = {
    np.dtype(np.float32): (np.uint32, np.uint32(0x7FC00000)),
    np.dtype(np.float64): (np.uint64, np.uint64(0x7FF8000000000000)),
}


def _as_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        x = x.numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (N, C) matrix, got shape {x.shape}")
    return x


def _positives(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the positives of an (N, k) chunk grouped by class, and their count per class."""
    num_classes = labels.shape[1]
    samples, classes = np.divmod(np.flatnonzero(labels == 1), num_classes)
    values = scores[samples, classes]
    small = np.int16 if num_classes <= np.iinfo(np.int16).max else np.int64
    by_class = np.argsort(classes.astype(small), kind="stable")  # a radix sort for int16
    return values[by_class], np.bincount(classes, minlength=num_classes)


def _ranked(
    scores: np.ndarray, labels: np.ndarray, ignore_unobserved: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each class's evaluated scores sorted ascending (k, N), NaN-padded, and their count (k,).

    The class-major copy is made in bands of samples so that the strided reads stay in cache.
    Ignored unobserved entries become NaN, which sorts after every score.
    """
    num_samples, num_classes = scores.shape
    dtype = np.dtype(np.float32 if scores.dtype.type in _FLOAT32_EXACT else np.float64)
    bits, nan_bits = _NAN_BITS[dtype]
    ranked = np.empty((num_classes, num_samples), dtype=dtype)
    num_valid = np.full(num_classes, num_samples, dtype=np.int64)
    for start in range(0, num_samples, _BAND_ROWS):
        band = slice(start, start + _BAND_ROWS)
        band_scores = scores[band]
        if ignore_unobserved:
            unobserved = labels[band] == 0
            num_valid -= np.count_nonzero(unobserved, axis=0)
            # setting the exponent and quiet bits makes a NaN; much faster than np.where
            band_bits = band_scores.astype(dtype, copy=False).view(bits)
            band_scores = (band_bits | (unobserved * nan_bits)).view(dtype)
        ranked.T[band] = band_scores
    if dtype == np.float64:
        narrow = ranked.astype(np.float32)
        if np.array_equal(narrow, ranked, equal_nan=True):  # same order and ties, sorts faster
            ranked = narrow
    ranked.sort(axis=1)
    last = ranked[num_valid > 0, num_valid[num_valid > 0] - 1]
    if np.isnan(last).any():
        raise ValueError("scores contain NaN")
    return ranked, num_valid


def _chunk_ap(scores: np.ndarray, labels: np.ndarray, ignore_unobserved: bool) -> np.ndarray:
    """Per-class AP of an (N, k) chunk, see the module docstring for the formula."""
    num_samples, num_classes = scores.shape
    values, num_pos = _positives(scores, labels)
    if np.isnan(values).any():
        raise ValueError("scores contain NaN")
    offsets = np.concatenate(([0], np.cumsum(num_pos)))
    bounds = offsets.tolist()
    num_valid = np.empty(num_classes, dtype=np.int64)
    # rank of each positive: how many evaluated entries of its class score strictly below it
    below = np.empty(values.size, dtype=np.int64)
    for first in range(0, num_classes, _SORT_CLASSES):
        group = slice(first, first + _SORT_CLASSES)
        ranked, num_valid[group] = _ranked(scores[:, group], labels[:, group], ignore_unobserved)
        for row in np.flatnonzero(num_pos[group]).tolist():
            lo, hi = bounds[first + row], bounds[first + row + 1]
            queries = values[lo:hi].astype(ranked.dtype, copy=False)  # exact, see _ranked
            queries.sort()  # sorted queries make the binary searches about twice as fast
            below[lo:hi] = ranked[row].searchsorted(queries, side="left")

    # positives are now ordered by (class, rank); equal keys are tied scores of one class
    rows = np.repeat(np.arange(num_classes), num_pos)
    key = rows * num_samples + below
    is_first = np.diff(key, prepend=-1) != 0
    first_tied = np.maximum.accumulate(np.where(is_first, np.arange(key.size), 0))
    positives_at_or_above = (num_pos[rows] - (first_tied - offsets[rows])).astype(np.float64)
    entries_at_or_above = num_valid[rows] - below
    total = np.bincount(rows, positives_at_or_above / entries_at_or_above, minlength=num_classes)
    return np.divide(total, num_pos, out=np.zeros(num_classes), where=num_pos > 0)


def average_precision(
    scores: ArrayLike, labels: ArrayLike, *, ignore_unobserved: bool = False, threads: int | None = None
) -> np.ndarray:
    """Per-class average precision (C,) float64 of scores (N, C) against labels (N, C).

    Equal to ``sklearn.metrics.average_precision_score`` run on each column, ties included;
    a class with no positive gets 0. Classes are processed in chunks of ~8M entries, so
    temporary memory stays near 64 MB per array and thread whatever the matrix size.

    Chunks run on ``threads`` threads (NumPy's sorts and copies release the GIL); the default
    is PyTorch's intra-op thread count (``torch.get_num_threads()``, which torchrun sets to 1
    per process). The result does not depend on the number of threads.
    """
    scores = _as_numpy(scores, "scores")
    labels = _as_numpy(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    num_samples, num_classes = scores.shape
    result = np.zeros(num_classes, dtype=np.float64)
    if num_samples == 0:
        return result
    threads = torch.get_num_threads() if threads is None else threads
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    chunk = max(1, min(_CHUNK_ENTRIES // num_samples, -(-num_classes // threads)))
    starts = range(0, num_classes, chunk)

    def run(start: int) -> None:
        stop = min(start + chunk, num_classes)
        result[start:stop] = _chunk_ap(scores[:, start:stop], labels[:, start:stop], ignore_unobserved)

    if threads == 1 or len(starts) == 1:
        for start in starts:
            run(start)
    else:
        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            list(pool.map(run, starts))  # list() re-raises a worker's error here
    return result


UNANNOTATED_CHOICES = ("skip", "zero")


def scored_classes(annotated: np.ndarray, unannotated: str = "skip") -> np.ndarray:
    """Boolean (C,) mask of the classes a mAP averages over.

    ``annotated`` says which classes have at least one evaluated entry. ``unannotated="skip"``
    scores only those (the authors' OpenImages evaluation), ``"zero"`` scores every class,
    the unannotated ones with AP 0.
    """
    if unannotated not in UNANNOTATED_CHOICES:
        raise ValueError(f"unannotated must be one of {UNANNOTATED_CHOICES}, got {unannotated!r}")
    annotated = np.asarray(annotated, dtype=bool)
    return annotated if unannotated == "skip" else np.ones_like(annotated)


def annotated_classes(labels: ArrayLike, *, ignore_unobserved: bool = False) -> np.ndarray:
    """Boolean (C,) mask of the classes with at least one evaluated entry in ``labels``."""
    labels = _as_numpy(labels, "labels")
    if not ignore_unobserved:
        return np.full(labels.shape[1], labels.shape[0] > 0)
    return np.count_nonzero(labels, axis=0) > 0


def masked_mean(values: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean of ``values[mask]``, None when the mask selects nothing."""
    return float(values[mask].mean()) if mask.any() else None


def mean_average_precision(
    scores: ArrayLike, labels: ArrayLike, *, ignore_unobserved: bool = False, unannotated: str = "skip"
) -> float:
    """Mean of the per-class AP over the scored classes (a fraction, 0..1; 0 if none is scored).

    Classes without a positive count with AP 0; classes without any evaluated entry are left
    out unless ``unannotated="zero"`` (see :func:`scored_classes`).
    """
    ap = average_precision(scores, labels, ignore_unobserved=ignore_unobserved)
    scored = scored_classes(annotated_classes(labels, ignore_unobserved=ignore_unobserved), unannotated)
    mean = masked_mean(ap, scored)
    return 0.0 if mean is None else mean


def group_average_precision(
    ap: np.ndarray, class_frequency: ArrayLike, num_groups: int, scored: np.ndarray | None = None
) -> list[float | None]:
    """Mean of per-class ``ap`` in ``num_groups`` equal groups of classes, rarest group first.

    Groups are made over all classes; with ``scored`` each group's mean is over its scored
    classes only (None for a group without one).
    """
    if isinstance(class_frequency, torch.Tensor):
        class_frequency = class_frequency.detach().cpu().numpy()
    frequency = np.asarray(class_frequency)
    if frequency.shape != ap.shape:
        raise ValueError(f"class_frequency has shape {frequency.shape}, expected {ap.shape}")
    if not 1 <= num_groups <= ap.size:
        raise ValueError(f"num_groups must be in [1, {ap.size}], got {num_groups}")
    order = np.argsort(frequency, kind="stable")
    scored = np.ones(ap.shape, dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    return [masked_mean(ap[group], scored[group]) for group in np.array_split(order, num_groups)]


def group_mean_average_precision(
    scores: ArrayLike,
    labels: ArrayLike,
    class_frequency: ArrayLike,
    num_groups: int = 5,
    *,
    ignore_unobserved: bool = True,
    unannotated: str = "skip",
) -> list[float | None]:
    """mAP of classes grouped by training-set frequency; group 1 holds the rarest classes.

    Classes are sorted ascending by ``class_frequency`` (stable) and split into ``num_groups``
    groups of (nearly) equal size with ``np.array_split``, as in the OpenImages table; each
    group averages over its scored classes (:func:`scored_classes`).
    """
    ap = average_precision(scores, labels, ignore_unobserved=ignore_unobserved)
    scored = scored_classes(annotated_classes(labels, ignore_unobserved=ignore_unobserved), unannotated)
    return group_average_precision(ap, class_frequency, num_groups, scored)
