"""CUB-200-2011 with its 312 binary attributes as the labels.

Reads ``images.txt`` (``<id> <path>``, images under ``images/``), ``train_test_split.txt``
(``<id> <1 train|0 test>``) and ``attributes/image_attribute_labels.txt``
(``<image id> <attribute id> <is_present> <certainty> <time>``): is_present 1 -> +1, 0 -> -1.
Attribute names come from ``attributes.txt`` (in the root, its parent or ``attributes/``)
when present. ``data.root`` may be the ``CUB_200_2011`` folder or the folder holding it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pamc.config import DataConfig
from pamc.data.adapters.common import (
    ParsedDataset, SplitIndex, adapter, check_image_paths, numbered_lines, require, require_root,
)
from pamc.errors import DataError

NUM_ATTRIBUTES = 312


def _id_table(path: Path) -> tuple[dict[int, str], dict[int, int]]:
    """``{id: value}`` of an ``<id> <value>`` file and ``{id: line number}``."""
    table: dict[int, str] = {}
    lines: dict[int, int] = {}
    for lineno, line in numbered_lines(path):
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}:{lineno}: expected '<id> <value>', got {line!r}")
        if int(parts[0]) in table:
            raise DataError(f"{path}:{lineno}: id {parts[0]} is listed twice")
        table[int(parts[0])] = parts[1].strip()
        lines[int(parts[0])] = lineno
    return table, lines


def attribute_names(base: Path) -> tuple[str, ...]:
    for path in (base / "attributes" / "attributes.txt", base / "attributes.txt", base.parent / "attributes.txt"):
        if path.is_file():
            table, _ = _id_table(path)
            return tuple(table[k] for k in sorted(table))
    return tuple(f"attribute_{k}" for k in range(1, NUM_ATTRIBUTES + 1))


@adapter("cub")
def cub(cfg: DataConfig) -> ParsedDataset:
    """CUB-200-2011, 312 attributes; official train (80/20 train/val) and test split."""
    root = require_root(cfg)
    base = root / "CUB_200_2011" if (root / "CUB_200_2011").is_dir() else root
    images, image_lines = _id_table(base / "images.txt")
    split, split_lines = _id_table(base / "train_test_split.txt")
    names = attribute_names(base)
    if set(split) != set(images):
        raise DataError(f"{base / 'train_test_split.txt'} and images.txt list different image ids")
    bad = next((i for i in split if split[i] not in ("0", "1")), None)
    if bad is not None:
        raise DataError(f"{base / 'train_test_split.txt'}:{split_lines[bad]}: split value {split[bad]!r} "
                        "is not 1 (train) or 0 (test)")
    ids = sorted(images)
    paths = check_image_paths(base, [f"images/{images[i]}" for i in ids],
                      lambda r: f"{base / 'images.txt'}:{image_lines[ids[r]]}", allow_outside=cfg.allow_outside_root)
    row_of = {iid: r for r, iid in enumerate(ids)}
    full = np.zeros((len(ids), len(names)), dtype=np.int8)
    path = require(base / "attributes" / "image_attribute_labels.txt", "attribute file")
    lineno = 0
    try:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    iid, aid, present = int(parts[0]), int(parts[1]), parts[2]
                except (IndexError, ValueError):
                    raise DataError(f"{path}:{lineno}: expected '<image id> <attribute id> <is_present> ...'") from None
                if iid not in row_of:
                    raise DataError(f"{path}:{lineno}: unknown image id {iid}")
                if not 1 <= aid <= len(names):
                    raise DataError(f"{path}:{lineno}: attribute id {aid} outside 1..{len(names)}")
                if present not in ("0", "1"):
                    raise DataError(f"{path}:{lineno}: is_present {present!r} is not 0 or 1")
                full[row_of[iid], aid - 1] = 1 if present == "1" else -1
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (after line {lineno}); save the file as UTF-8") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    is_train = np.array([split[i] == "1" for i in ids])
    pool = SplitIndex.from_dense([p for p, t in zip(paths, is_train) if t], full[is_train])
    test = SplitIndex.from_dense([p for p, t in zip(paths, is_train) if not t], full[~is_train])
    unlabelled = int((full == 0).sum())
    return ParsedDataset("cub", base, names, pool, test, partial_test=unlabelled > 0)
