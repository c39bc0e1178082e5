"""Label matrices, observed-label generation and the training label store.

Convention, used everywhere in pamc: a label matrix is (N, C) int8 with
``+1`` = observed positive, ``-1`` = observed negative, ``0`` = unobserved (unknown).
A fully labelled matrix holds only +1 and -1.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from pamc.errors import DataError

POSITIVE, NEGATIVE, UNOBSERVED = 1, -1, 0
DEFAULT_OBSERVATION_SEED = 1200


def check_label_values(labels: np.ndarray, what: str = "labels") -> None:
    """Raise :class:`DataError` if ``labels`` holds a value outside {-1, 0, 1}."""
    bad = ~np.isin(labels, (-1, 0, 1))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"{what}: value {labels[row, col].item()!r} at row {row}, class {col} is not one of -1, 0, 1")


def check_observed(name: str, any_observed: bool) -> None:
    """A training split where every label is unobserved cannot be trained on: a :class:`DataError`."""
    if not any_observed:
        raise DataError(f"{name}: the training split has no observed label (every label is unobserved); "
                        "there is nothing to train on")


def observe(
    full: np.ndarray,
    num_pos: int = 1,
    num_neg: int = 0,
    seed: int = DEFAULT_OBSERVATION_SEED,
    protocol: str = "pamc",
) -> np.ndarray:
    """Keep ``num_pos`` random positives and ``num_neg`` random negatives per image.

    Everything else becomes unobserved (0). An image with fewer positives (negatives) than
    asked keeps all it has. The same ``seed`` always gives the same observed matrix.

    ``protocol="pamc"`` draws all rows at once from ``default_rng(seed)``;
    ``protocol="authors"`` gives exactly the matrix of the authors' preprocessing (see
    :func:`observe_authors`).
    """
    full = np.asarray(full)
    check_label_values(full, "full labels")
    if protocol == "authors":
        return observe_authors(full, num_pos, num_neg, seed)
    if protocol != "pamc":
        raise ValueError(f"unknown data protocol {protocol!r}; expected authors or pamc")
    rng = np.random.default_rng(seed)
    observed = np.zeros(full.shape, dtype=np.int8)
    for value, count in ((POSITIVE, num_pos), (NEGATIVE, num_neg)):
        if count <= 0:
            continue
        keys = rng.random(full.shape)
        keys[full != value] = np.inf
        take = min(count, full.shape[1])
        cols = np.argpartition(keys, take - 1, axis=1)[:, :take] if take < full.shape[1] else np.argsort(keys, axis=1)
        rows = np.repeat(np.arange(full.shape[0]), cols.shape[1])
        cols = cols.reshape(-1)
        keep = np.isfinite(keys[rows, cols])
        observed[rows[keep], cols[keep]] = value
    return observed


def observe_authors(full: np.ndarray, num_pos: int, num_neg: int, seed: int) -> np.ndarray:
    """The observed labels of the authors' ``preproc/generate_observed_labels.py``.

    One ``np.random.RandomState(seed)`` serves the whole matrix (a fresh one per label file).
    Image by image, in row order, the column indices of its positives are shuffled in place
    and the first ``num_pos`` are kept, then the same for its negatives with ``num_neg``. Both
    shuffles happen even when the count is 0, because each one advances the generator.
    """
    full = np.asarray(full)
    rng = np.random.RandomState(seed)
    observed = np.zeros(full.shape, dtype=np.int8)
    for i, row in enumerate(full):
        for value, count in ((POSITIVE, num_pos), (NEGATIVE, num_neg)):
            cols = np.flatnonzero(row == value)
            rng.shuffle(cols)
            observed[i, cols[:count]] = value
    return observed


def false_negative_rate(full: np.ndarray, observed: np.ndarray) -> float:
    """Share of unobserved entries that are true positives (what assume-negative gets wrong)."""
    unobserved = np.asarray(observed) == UNOBSERVED
    return float(((np.asarray(full) == POSITIVE) & unobserved).sum() / max(int(unobserved.sum()), 1))


def label_blocks(labels, rows_per_block: int = 1 << 16) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first_row, rows)`` over a whole label store (dense or sparse), ``rows_per_block`` dense
    int8 rows at a time: how code that must see every row reads a store without densifying it."""
    num_rows = labels.shape[0]
    for start in range(0, num_rows, rows_per_block):
        yield start, labels.get(torch.arange(start, min(start + rows_per_block, num_rows)))


class LabelStore:
    """The training set's observed labels, read by batch and corrected in place.

    Label-correction methods (LL-Cp) flip entries to observed positive here, so every later
    epoch sees the corrected labels.
    """

    def __init__(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels)
        check_label_values(labels, "observed labels")
        self._labels = torch.from_numpy(labels.astype(np.int8, copy=True))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._labels.shape)  # type: ignore[return-value]

    def __len__(self) -> int:
        return self._labels.shape[0]

    def get(self, index: torch.Tensor) -> torch.Tensor:
        """Dense int8 rows for the dataset indices ``index``."""
        return self._labels[index]

    def set_positive(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        """Mark entries ``(rows[i], cols[i])`` as observed positives."""
        self._labels[rows.cpu(), cols.cpu()] = POSITIVE

    def to_numpy(self) -> np.ndarray:
        return self._labels.numpy().copy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the contents, for the training state (see :func:`label_store_from_state`)."""
        return {"dense": self._labels.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the contents with a :meth:`state_dict` of a store of the same shape."""
        if set(state) != {"dense"}:
            raise DataError(f"not a dense label-store state (keys {sorted(state)})")
        self.load(state["dense"].numpy())

    def load(self, labels: np.ndarray) -> None:
        """Replace the contents from a dense matrix."""
        if tuple(labels.shape) != self.shape:
            raise DataError(f"label store shape {self.shape} does not match {tuple(labels.shape)}")
        self._labels.copy_(torch.from_numpy(np.asarray(labels, dtype=np.int8)))
