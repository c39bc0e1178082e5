"""A sparse label store for label matrices too large to hold densely (OpenImages).

The store keeps only the observed entries (+1 / -1) of an (N, C) label matrix in compressed
sparse rows: ``indptr`` (N+1,) int64, ``indices`` (nnz,) int16 or int32 column numbers sorted
within each row, and ``values`` (nnz,) int8. At 1.7M images x 5000 classes with ~10 observed
labels per image that is about 65 MB, where the dense int8 matrix would take 8.5 GB.

It has the interface of :class:`~pamc.data.labels.LabelStore`: ``get`` returns dense int8 rows
for a batch, and ``set_positive`` records label corrections (LL-Cp). Corrections go into a
small pending buffer that is overlaid on reads and merged into the rows when it grows.
"""

from __future__ import annotations

import numpy as np
import torch

from pamc.data.labels import POSITIVE, check_label_values
from pamc.errors import DataError

DENSE_LIMIT_BYTES = 256 * 2**20  # above this many dense bytes, ``make_label_store`` goes sparse


class SparseLabelStore:
    """Observed labels as CSR; same interface as the dense :class:`LabelStore`."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, num_classes: int,
                 *, merge_every: int = 1 << 18) -> None:
        indptr = np.asarray(indptr, dtype=np.int64)
        if indptr.ndim != 1 or indptr.size < 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise DataError("sparse labels: indptr must start at 0 and never decrease")
        if indptr[-1] != len(indices) or len(indices) != len(values):
            raise DataError("sparse labels: indptr, indices and values do not agree in length")
        values = np.asarray(values)
        _check_values(values)
        if len(indices) and (int(np.min(indices)) < 0 or int(np.max(indices)) >= num_classes):
            raise DataError(f"sparse labels: a class index is outside [0, {num_classes})")
        self._indptr = indptr
        self._indices = np.asarray(indices, dtype=_col_dtype(num_classes))
        self._values = values.astype(np.int8, copy=False)
        self._num_classes = int(num_classes)
        self._merge_every = int(merge_every)
        self._pending_rows = np.zeros(0, dtype=np.int64)
        self._pending_cols = np.zeros(0, dtype=np.int64)

    @classmethod
    def from_coo(cls, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int],
                 *, block: int = 1 << 20) -> "SparseLabelStore":
        """Build from entry lists; zeros are dropped, a repeated (row, col) keeps its last value.

        Entries are grouped by row (a stable sort, skipped when the rows are already in order,
        as in a file grouped by image) and then sorted and de-duplicated one block of about
        ``block`` entries at a time, so the temporaries stay small whatever the size.
        """
        num_rows, num_classes = shape
        rows, cols, values = np.asarray(rows), np.asarray(cols), np.asarray(values)
        if not rows.shape == cols.shape == values.shape or rows.ndim != 1:
            raise DataError("sparse labels: rows, cols and values must be 1-d and of one length")
        _check_values(values)
        if rows.size and (rows.min() < 0 or rows.max() >= num_rows):
            raise DataError(f"sparse labels: a row index is outside [0, {num_rows})")
        if cols.size and (cols.min() < 0 or cols.max() >= num_classes):
            raise DataError(f"sparse labels: a class index is outside [0, {num_classes})")
        if rows.size > 1 and np.any(rows[1:] < rows[:-1]):
            order = np.argsort(rows, kind="stable")
            rows, cols, values = rows[order], cols[order], values[order]
            del order
        col_dtype = _col_dtype(num_classes)
        counts = np.zeros(num_rows, dtype=np.int64)
        out_cols, out_values = [], []
        start = 0
        while start < rows.size:
            stop = min(start + block, rows.size)
            stop = int(np.searchsorted(rows, rows[stop - 1], side="right"))  # whole rows only
            first = int(rows[start])
            key = (rows[start:stop] - first).astype(np.int64) * num_classes + cols[start:stop]
            _compress(key, values[start:stop], num_classes, first, counts, out_cols, out_values, col_dtype)
            start = stop
        indptr = np.zeros(num_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        indices = np.concatenate(out_cols) if out_cols else np.zeros(0, dtype=col_dtype)
        vals = np.concatenate(out_values) if out_values else np.zeros(0, dtype=np.int8)
        return cls(indptr, indices, vals, num_classes)

    @classmethod
    def from_dense(cls, labels: np.ndarray) -> "SparseLabelStore":
        labels = np.asarray(labels)
        check_label_values(labels, "observed labels")
        rows, cols = np.nonzero(labels)
        return cls.from_coo(rows, cols, labels[rows, cols], labels.shape)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._indptr) - 1, self._num_classes)

    @property
    def nnz(self) -> int:
        """Stored entries (pending corrections not yet merged are not counted)."""
        return int(self._indptr[-1])

    @property
    def nbytes(self) -> int:
        return self._indptr.nbytes + self._indices.nbytes + self._values.nbytes

    def __len__(self) -> int:
        return self.shape[0]

    def get(self, index: torch.Tensor) -> torch.Tensor:
        """Dense int8 rows (B, C) for the dataset indices ``index``."""
        idx = np.asarray(index.cpu().numpy() if isinstance(index, torch.Tensor) else index, dtype=np.int64)
        out = np.zeros((idx.size, self._num_classes), dtype=np.int8)
        start, stop = self._indptr[idx], self._indptr[idx + 1]
        counts = stop - start
        total = int(counts.sum())
        if total:
            out_rows = np.repeat(np.arange(idx.size), counts)
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(start, counts)
            out[out_rows, self._indices[offsets]] = self._values[offsets]
        if self._pending_rows.size:
            hit = np.isin(self._pending_rows, idx)
            if hit.any():
                position = {int(r): i for i, r in enumerate(idx.tolist())}
                for r, c in zip(self._pending_rows[hit].tolist(), self._pending_cols[hit].tolist()):
                    out[position[r], c] = POSITIVE
        return torch.from_numpy(out)

    def set_positive(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        """Mark entries ``(rows[i], cols[i])`` as observed positives."""
        r = np.asarray(rows.cpu().numpy() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64).ravel()
        c = np.asarray(cols.cpu().numpy() if isinstance(cols, torch.Tensor) else cols, dtype=np.int64).ravel()
        if r.size != c.size:
            raise ValueError("rows and cols differ in length")
        if r.size and (r.min() < 0 or r.max() >= len(self) or c.min() < 0 or c.max() >= self._num_classes):
            raise IndexError("set_positive: an index is out of range")
        self._pending_rows = np.concatenate([self._pending_rows, r])
        self._pending_cols = np.concatenate([self._pending_cols, c])
        if self._pending_rows.size >= self._merge_every:
            self.merge()

    def merge(self, block: int = 1 << 20) -> None:
        """Fold the pending corrections into the sparse rows, one block of rows at a time."""
        if not self._pending_rows.size:
            return
        order = np.argsort(self._pending_rows, kind="stable")
        p_rows, p_cols = self._pending_rows[order], self._pending_cols[order]
        num_rows, num_classes = self.shape
        col_dtype = _col_dtype(num_classes)
        counts = np.zeros(num_rows, dtype=np.int64)
        out_cols: list[np.ndarray] = []
        out_values: list[np.ndarray] = []
        r0 = 0
        while r0 < num_rows:
            r1 = int(np.searchsorted(self._indptr, self._indptr[r0] + block, side="right")) - 1
            r1 = min(max(r1, r0 + 1), num_rows)
            lo, hi = self._indptr[r0], self._indptr[r1]
            local = np.repeat(np.arange(r1 - r0, dtype=np.int64), np.diff(self._indptr[r0:r1 + 1]))
            p_lo, p_hi = np.searchsorted(p_rows, [r0, r1])
            key = np.concatenate([local * num_classes + self._indices[lo:hi],
                                  (p_rows[p_lo:p_hi] - r0) * num_classes + p_cols[p_lo:p_hi]])
            vals = np.concatenate([self._values[lo:hi], np.full(p_hi - p_lo, POSITIVE, dtype=np.int8)])
            _compress(key, vals, num_classes, r0, counts, out_cols, out_values, col_dtype)
            r0 = r1
        indptr = np.zeros(num_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        self._indptr = indptr
        self._indices = np.concatenate(out_cols) if out_cols else np.zeros(0, dtype=col_dtype)
        self._values = np.concatenate(out_values) if out_values else np.zeros(0, dtype=np.int8)
        self._pending_rows = np.zeros(0, dtype=np.int64)
        self._pending_cols = np.zeros(0, dtype=np.int64)

    def to_numpy(self) -> np.ndarray:
        """The dense (N, C) int8 matrix; refuses matrices above 2 GB."""
        if len(self) * self._num_classes > 2**31:
            raise DataError(f"label matrix {self.shape} is too large to densify")
        return self.get(torch.arange(len(self))).numpy()

    def to_coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, values) of the stored entries, pending corrections merged first."""
        self.merge()
        rows = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self._indptr))
        return rows, self._indices.astype(np.int64), self._values.copy()

    _STATE_KEYS = frozenset({"indptr", "indices", "values", "num_classes"})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the contents in CSR form (pending corrections merged), for the training state."""
        self.merge()
        return {"indptr": torch.from_numpy(self._indptr.copy()), "indices": torch.from_numpy(self._indices.copy()),
                "values": torch.from_numpy(self._values.copy()), "num_classes": torch.tensor(self._num_classes)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the contents with a :meth:`state_dict` of a store of the same shape (never densified)."""
        other = label_store_from_state(state)
        if not isinstance(other, SparseLabelStore):
            raise DataError("not a sparse label-store state")
        if other.shape != self.shape:
            raise DataError(f"label store shape {self.shape} does not match {other.shape}")
        self._indptr, self._indices, self._values = other._indptr, other._indices, other._values
        self._pending_rows = np.zeros(0, dtype=np.int64)
        self._pending_cols = np.zeros(0, dtype=np.int64)

    def load(self, labels: np.ndarray) -> None:
        """Replace the contents from a dense matrix."""
        if tuple(labels.shape) != self.shape:
            raise DataError(f"label store shape {self.shape} does not match {tuple(labels.shape)}")
        other = SparseLabelStore.from_dense(labels)
        self._indptr, self._indices, self._values = other._indptr, other._indices, other._values
        self._pending_rows = np.zeros(0, dtype=np.int64)
        self._pending_cols = np.zeros(0, dtype=np.int64)

    def class_counts(self, value: int = POSITIVE) -> np.ndarray:
        """How many rows hold ``value`` in each class (C,) int64."""
        self.merge()
        return np.bincount(self._indices[self._values == value].astype(np.int64), minlength=self._num_classes)

    def subset(self, rows: np.ndarray) -> "SparseLabelStore":
        """A new store holding the rows ``rows`` in that order."""
        self.merge()
        rows = np.asarray(rows, dtype=np.int64)
        start, stop = self._indptr[rows], self._indptr[rows + 1]
        counts = stop - start
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        offsets = np.arange(int(indptr[-1])) - np.repeat(indptr[:-1], counts) + np.repeat(start, counts)
        return SparseLabelStore(indptr, self._indices[offsets], self._values[offsets], self._num_classes)


def _compress(key: np.ndarray, values: np.ndarray, num_classes: int, first_row: int, counts: np.ndarray,
              out_cols: list[np.ndarray], out_values: list[np.ndarray], col_dtype: type) -> None:
    """Sort one block's entries by ``key = local_row * C + col``, keep the last value of each
    key, drop zeros, and append the columns and values; adds the per-row counts to ``counts``."""
    order = np.argsort(key, kind="stable")
    key, vals = key[order], values[order]
    keep = np.ones(key.size, dtype=bool)
    keep[:-1] = key[1:] != key[:-1]
    keep &= vals != 0
    local_row, col = np.divmod(key[keep], num_classes)
    if local_row.size:
        counts[first_row:first_row + int(local_row[-1]) + 1] += np.bincount(local_row)
    out_cols.append(col.astype(col_dtype))
    out_values.append(vals[keep].astype(np.int8))


def _check_values(values: np.ndarray) -> None:
    """Labels must be -1, 0 or 1; for integers a min/max test, without np.isin's temporaries."""
    if values.size and np.issubdtype(values.dtype, np.integer):
        if values.min() >= -1 and values.max() <= 1:
            return
    check_label_values(values.reshape(-1, 1), "observed labels")


def _col_dtype(num_classes: int) -> type:
    return np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32


def label_store_from_state(state: dict[str, torch.Tensor]):
    """A new dense or sparse store holding a ``state_dict()`` of either kind."""
    from pamc.data.labels import LabelStore

    if set(state) == {"dense"}:
        return LabelStore(state["dense"].numpy())
    if set(state) != SparseLabelStore._STATE_KEYS:
        raise DataError(f"not a label-store state (keys {sorted(state)})")
    return SparseLabelStore(state["indptr"].numpy(), state["indices"].numpy(), state["values"].numpy(),
                            int(state["num_classes"]))


def make_label_store(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int],
                     mode: str = "auto"):
    """A dense :class:`LabelStore` or a :class:`SparseLabelStore` for the given entries.

    ``mode`` is ``dense``, ``sparse`` or ``auto`` (sparse when the dense matrix would exceed
    :data:`DENSE_LIMIT_BYTES`).
    """
    from pamc.data.labels import LabelStore

    if mode not in ("auto", "dense", "sparse"):
        raise DataError(f"unknown label store mode {mode!r}; choose auto, dense or sparse")
    if mode == "sparse" or (mode == "auto" and shape[0] * shape[1] > DENSE_LIMIT_BYTES):
        return SparseLabelStore.from_coo(rows, cols, values, shape)
    dense = np.zeros(shape, dtype=np.int8)
    check_label_values(np.asarray(values).reshape(-1, 1), "observed labels")
    dense[rows, cols] = values
    return LabelStore(dense)
