"""Shared pieces of the label benchmarks: a simulated OpenImages-size label set and peak RSS."""

from __future__ import annotations

import resource

import numpy as np


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def openimages_like_annotations(
    num_images: int, num_classes: int, per_image: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Annotated entries (rows, cols, values) like OpenImages' human labels.

    Each image gets Poisson(``per_image``) annotations (at least one) of uniform random
    classes, 2 in 5 of them positive (+1), the rest negative (-1). The arrays use the
    narrowest dtypes (int32 rows, int16 classes below 32k, int8 values) so that simulating
    1.7M images does not itself dominate the memory being measured.
    """
    rng = np.random.default_rng(seed)
    counts = np.maximum(rng.poisson(per_image, num_images), 1)
    rows = np.repeat(np.arange(num_images, dtype=np.int32), counts)
    del counts
    cols = rng.integers(0, num_classes, rows.size, dtype=np.int16 if num_classes < 2**15 else np.int32)
    values = rng.integers(0, 5, rows.size, dtype=np.int8)
    values = np.where(values < 2, np.int8(1), np.int8(-1))
    return rows, cols, values
