"""NUS-WIDE (81 concepts), in either of two layouts.

- **formatted** (single-positive benchmark): ``formatted_{train,val}_images.npy`` (image paths
  relative to the root) and ``formatted_{train,val}_labels.npy`` ((N, 81) of 0/1); ``val`` is
  the test set.
- **official**: ``ImageList/{Train,Test}Imagelist.txt`` (paths under ``Flickr/``, ``\\``
  separators accepted) and ``Groundtruth/TrainTestLabels/Labels_<concept>_{Train,Test}.txt``
  (one 0/1 per image, in list order).

Concept names come from ``Concepts81.txt`` (root or ``ConceptsList/``) when present; in the
official layout otherwise from the label file names. Many NUS-WIDE images are dead links: the
image cache skips missing images and warns once with their count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pamc.config import DataConfig
from pamc.data.adapters.common import (
    ParsedDataset, SplitIndex, adapter, check_image_paths, numbered_lines, read_lines, require, require_root,
)
from pamc.errors import DataError


def _concepts(root: Path) -> tuple[str, ...] | None:
    for path in (root / "Concepts81.txt", root / "ConceptsList" / "Concepts81.txt"):
        if path.is_file():
            return tuple(read_lines(path))
    return None


def _formatted(root: Path, split: str, num_classes: int | None, allow_outside: bool) -> SplitIndex:
    def load(name: str) -> np.ndarray:
        path = require(root / f"formatted_{split}_{name}.npy")
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None

    images = load("images")
    if images.ndim != 1 or images.dtype.kind not in "US":
        raise DataError(f"formatted_{split}_images.npy must be a 1-D array of strings, got {images.dtype} "
                        f"with shape {images.shape}")
    paths = [str(p) for p in images.tolist()]
    labels = load("labels")
    if labels.ndim != 2 or labels.shape[0] != len(paths):
        raise DataError(f"formatted_{split}_labels.npy has shape {labels.shape}, expected ({len(paths)}, C)")
    if num_classes is not None and labels.shape[1] != num_classes:
        raise DataError(f"formatted_{split}_labels.npy has {labels.shape[1]} classes, Concepts81.txt {num_classes}")
    if labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
        raise DataError(f"formatted_{split}_labels.npy holds values other than 0 and 1")
    paths = check_image_paths(root, paths, lambda i: f"{root / f'formatted_{split}_images.npy'}[{i}]",
                              allow_outside=allow_outside)
    return SplitIndex.from_dense(paths, np.where(labels == 1, 1, -1).astype(np.int8))


def _official(root: Path, split: str, names: tuple[str, ...], allow_outside: bool) -> SplitIndex:
    listing = require(root / "ImageList" / f"{split}Imagelist.txt", "image list")
    lines = numbered_lines(listing)
    paths = check_image_paths(root, ["Flickr/" + line.replace("\\", "/") for _, line in lines],
                              lambda i: f"{listing}:{lines[i][0]}", allow_outside=allow_outside)
    full = np.empty((len(paths), len(names)), dtype=np.int8)
    for k, name in enumerate(names):
        path = require(root / "Groundtruth" / "TrainTestLabels" / f"Labels_{name}_{split}.txt", "label file")
        values = read_lines(path)
        if len(values) != len(paths):
            raise DataError(f"{path} has {len(values)} lines, {listing.name} lists {len(paths)} images")
        bad = next((v for v in values if v not in ("0", "1")), None)
        if bad is not None:
            raise DataError(f"{path}: value {bad!r} is not 0 or 1")
        full[:, k] = np.where(np.asarray(values) == "1", 1, -1)
    return SplitIndex.from_dense(paths, full)


def _drop_unlabelled(index: SplitIndex) -> SplitIndex:
    has_pos = np.zeros(len(index), dtype=bool)
    has_pos[index.rows[index.values == 1]] = True
    return index.subset(has_pos)


@adapter("nuswide")
def nuswide(cfg: DataConfig) -> ParsedDataset:
    """NUS-WIDE, 81 concepts (formatted .npy files or the official ground-truth layout)."""
    root = require_root(cfg)
    names = _concepts(root)
    if (root / "formatted_train_labels.npy").exists():
        pool = _formatted(root, "train", None if names is None else len(names), cfg.allow_outside_root)
        test = _formatted(root, "val", None if names is None else len(names), cfg.allow_outside_root)
        if names is None:
            names = tuple(f"concept_{k}" for k in range(_width(root)))
    else:
        folder = require(root / "Groundtruth" / "TrainTestLabels", "NUS-WIDE label folder (or formatted_train_labels.npy)")
        if names is None:
            names = tuple(sorted(p.name[len("Labels_"):-len("_Train.txt")] for p in folder.glob("Labels_*_Train.txt")))
            if not names:
                raise DataError(f"{folder}: no Labels_<concept>_Train.txt files")
        pool = _official(root, "Train", names, cfg.allow_outside_root)
        test = _official(root, "Test", names, cfg.allow_outside_root)
    # images without any concept carry no positive to observe; the benchmark leaves them out
    return ParsedDataset("nuswide", root, names, _drop_unlabelled(pool), _drop_unlabelled(test))


def _width(root: Path) -> int:
    return int(np.load(root / "formatted_train_labels.npy", mmap_mode="r").shape[1])
