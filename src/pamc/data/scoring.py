"""Which classes an evaluation split can score.

Average precision ranks a class's positives among its negatives. A class with no negative in a
split gets AP 1 and a class with no positive AP 0, whatever the model: such a class carries no
information, and a split where every class is like that (validation drawn from a
single-positive training set) gives the same mAP to every model.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from pamc.data.labels import LabelStore
from pamc.data.sparse_labels import SparseLabelStore

if TYPE_CHECKING:
    from pamc.data.datasets import DatasetBundle

log = logging.getLogger(__name__)

Labels = np.ndarray | LabelStore | SparseLabelStore


def class_label_counts(labels: Labels, ignore_unobserved: bool) -> tuple[np.ndarray, np.ndarray]:
    """(positives, negatives) per class as evaluation sees them: an entry 0 is left out when
    ``ignore_unobserved``, else it counts as negative."""
    if isinstance(labels, SparseLabelStore):
        pos = labels.class_counts(1)
        neg = labels.class_counts(-1) if ignore_unobserved else len(labels) - pos
        return pos, neg
    dense = labels.to_numpy() if isinstance(labels, LabelStore) else np.asarray(labels)
    pos = (dense == 1).sum(0)
    neg = (dense == -1).sum(0) if ignore_unobserved else len(dense) - pos
    return pos, neg


def unscorable_classes(labels: Labels, ignore_unobserved: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the classes with no positive, and of those with no negative (sorted)."""
    pos, neg = class_label_counts(labels, ignore_unobserved)
    return np.flatnonzero(pos == 0), np.flatnonzero((neg == 0) & (pos > 0))


def _names(class_names: tuple[str, ...], idx: np.ndarray, shown: int = 8) -> str:
    names = [class_names[i] for i in idx[:shown]]
    more = f" and {len(idx) - shown} more" if len(idx) > shown else ""
    return ", ".join(names) + more


def warn_unscorable(bundle: "DatasetBundle") -> dict[str, int]:
    """One warning per evaluated split (val, test) naming the classes it cannot score.

    Returns the number of unscorable classes per split.
    """
    counts = {}
    for what in ("val", "test"):
        split = getattr(bundle, what)
        if split.full is None:
            continue
        no_pos, no_neg = unscorable_classes(split.full, bundle.partial_test_labels)
        counts[what] = len(no_pos) + len(no_neg)
        if not counts[what]:
            continue
        parts = []
        if len(no_neg):
            parts.append(f"no negative (AP 100 whatever the model): {_names(bundle.class_names, no_neg)}")
        if len(no_pos):
            parts.append(f"no positive (AP 0): {_names(bundle.class_names, no_pos)}")
        log.warning("%s %s: %d of %d classes cannot be scored; %s", bundle.name, what, counts[what],
                    bundle.num_classes, "; ".join(parts))
    return counts
