"""Splits and bundles of a dataset, and the synthetic scenes' reader (see :mod:`pamc.data.catalog`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

import torch

from pamc.config import DataConfig
from pamc.data.catalog import register_dataset
from pamc.data.labels import LabelStore, check_observed, observe
from pamc.data.sparse_labels import SparseLabelStore
from pamc.data.synthetic import make_scenes
from pamc.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One split held as uint8 images (N,3,H,W) with its label matrices.

    ``images`` is an array or an :class:`~pamc.data.image_cache.ImageRows` view of the image
    cache (a memory map read by batch). ``observed`` is a dense or sparse label store.

    ``full`` is the ground truth (+1/-1, or 0 where a test set is only partly annotated), a
    dense matrix or, for large partly annotated sets (OpenImages val/test), a label store;
    read it by rows with :meth:`full_rows`. ``observed`` is what training may use. ``boxes``
    rows are ``(row, class, x0, y0, x1, y1)`` with ``row`` indexing this split.
    """

    images: np.ndarray
    full: np.ndarray | LabelStore | SparseLabelStore | None
    observed: LabelStore | SparseLabelStore
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), dtype=np.int64))

    def __len__(self) -> int:
        return len(self.observed)

    def full_rows(self, index: np.ndarray | torch.Tensor) -> np.ndarray | None:
        """Dense int8 ground-truth rows for the split indices ``index`` (None without ``full``)."""
        if self.full is None:
            return None
        if isinstance(self.full, np.ndarray):
            return np.asarray(self.full[np.asarray(index)], dtype=np.int8)
        return self.full.get(torch.as_tensor(np.asarray(index), dtype=torch.long)).numpy()


@dataclass
class DatasetBundle:
    """The three splits of a dataset and its metadata."""

    name: str
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    # test labels only partly annotated (OpenImages): entries labelled 0 are left out of mAP
    partial_test_labels: bool = False
    # training positives per class; when set, evaluation also reports 5 frequency-group mAPs
    class_frequency: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def split_indices(n: int, val_fraction: float, seed: int, protocol: str = "pamc") -> tuple[np.ndarray, np.ndarray]:
    """A seeded random train/validation split of ``range(n)`` (sorted index arrays).

    ``round(n * val_fraction)`` indices go to validation. ``protocol="pamc"`` permutes with
    ``default_rng(seed)`` and takes validation first; ``protocol="authors"`` is the authors'
    ``datasets.py:generate_split``: ``RandomState(seed).permutation(n)``, train its first
    ``n - n_val`` entries, validation its last ``n_val``.
    """
    n_val = int(round(n * val_fraction))
    if n_val == 0 or n_val == n:
        raise DataError(f"cannot hold out {val_fraction:.0%} of {n} images for validation")
    if protocol == "authors":
        perm = np.random.RandomState(seed).permutation(n)
        return np.sort(perm[: n - n_val]), np.sort(perm[n - n_val:])
    if protocol != "pamc":
        raise ValueError(f"unknown data protocol {protocol!r}; expected authors or pamc")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def subset_boxes(boxes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Boxes of the images ``rows``, renumbered to positions in ``rows``."""
    if len(boxes) == 0:
        return boxes.reshape(0, 6)
    lookup = np.full(max(int(boxes[:, 0].max()), int(rows.max(initial=0))) + 1, -1, dtype=np.int64)
    lookup[rows] = np.arange(len(rows))
    position = lookup[boxes[:, 0]]
    out = boxes[position >= 0].copy()
    out[:, 0] = position[position >= 0]
    return out


def split_train_pool(
    images: np.ndarray,
    full: np.ndarray,
    observed: np.ndarray,
    boxes: np.ndarray,
    cfg: DataConfig,
) -> tuple[Split, Split]:
    """Hold out ``cfg.val_fraction`` of a training pool for validation (paper: 20%)."""
    train_idx, val_idx = split_indices(len(full), cfg.val_fraction, cfg.split_seed, cfg.protocol)
    return tuple(  # type: ignore[return-value]
        Split(images[idx], full[idx], LabelStore(observed[idx]), subset_boxes(boxes, idx))
        for idx in (train_idx, val_idx)
    )


def synthetic(cfg: DataConfig) -> DatasetBundle:
    """The built-in synthetic scenes (train pool and test set drawn with different seeds)."""
    s = cfg.synthetic
    kwargs = dict(num_classes=s.num_classes, image_size=s.image_size, min_objects=s.min_objects,
                  max_objects=s.max_objects, noise=s.noise)
    pool = make_scenes(s.num_train, seed=s.seed, **kwargs)
    test = make_scenes(s.num_test, seed=s.seed + 100_003, **kwargs)
    observed = observe(pool.labels, cfg.num_pos, cfg.num_neg, cfg.obs_seed, cfg.protocol)
    train, val = split_train_pool(pool.images, pool.labels, observed, pool.boxes, cfg)
    check_observed("synthetic", bool(train.observed.to_numpy().any()))
    test_split = Split(test.images, test.labels, LabelStore(test.labels), test.boxes)
    log.info("synthetic: %d train, %d val, %d test images, %d classes",
             len(train), len(val), len(test_split), s.num_classes)
    return DatasetBundle("synthetic", pool.class_names, train, val, test_split)


register_dataset("synthetic", synthetic)
