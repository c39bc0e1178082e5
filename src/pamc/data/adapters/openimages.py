"""OpenImages V3 (the 2017_11 release layout), with its real partial labels.

Reads ``classes-trainable.txt`` (the 5000 trainable label ids), ``class-descriptions.csv``
(``<label id>,<name>``, no header) and ``<split>/annotations-human.csv`` for ``train`` and
``test`` (columns ImageID, Source, LabelName, Confidence). Confidence 1 -> +1, 0 -> -1, an
absent label is 0 (unobserved); labels outside the trainable list are ignored. Images are
``images/<split>/<ImageID>.jpg``. The labels are trained on directly (no observation
generator); evaluation leaves unannotated entries out and reports the mAP of 5 groups of
classes sorted by training frequency (group 1 rarest).
"""

from __future__ import annotations

import csv as csvlib
import io
from array import array
from pathlib import Path

import numpy as np

from pamc.config import DataConfig
from pamc.data.adapters.common import (
    ParsedDataset, SplitIndex, adapter, check_image_paths, read_lines, read_text, require, require_root,
)
from pamc.errors import DataError

COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")
_CONFIDENCE = {"1": 1, "0": -1, "1.0": 1, "0.0": -1}


def read_annotations(path: Path, column: dict[str, int], split: str, allow_outside: bool = False) -> SplitIndex:
    """One ``annotations-human.csv`` as a split index; rows in order of first appearance."""
    require(path, "annotation file")
    image_row: dict[str, int] = {}
    first_line = array("q")
    rows, cols, values = array("q"), array("l"), array("b")
    reader = None
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csvlib.reader(f)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header[:4]) != COLUMNS:
                raise DataError(f"{path}: expected the header {','.join(COLUMNS)}, got {header}")
            for row in reader:
                if not row:
                    continue
                if len(row) < 4:
                    raise DataError(f"{path}:{reader.line_num}: expected 4 columns, got {len(row)}")
                image, label, confidence = row[0], row[2], row[3].strip()
                value = _CONFIDENCE.get(confidence)
                if value is None:
                    raise DataError(f"{path}:{reader.line_num}: confidence {confidence!r} is not 0 or 1")
                r = image_row.setdefault(image, len(image_row))
                if r == len(first_line):
                    first_line.append(reader.line_num)
                k = column.get(label)
                if k is None:
                    continue
                rows.append(r)
                cols.append(k)
                values.append(value)
    except UnicodeDecodeError:
        where = f"after line {reader.line_num}" if reader is not None else "in its header"
        raise DataError(f"{path}: not UTF-8 text ({where}); save the file as UTF-8") from None
    except (OSError, csvlib.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not image_row:
        raise DataError(f"{path}: no annotation rows (empty dataset)")
    paths = check_image_paths(path.parent.parent, [f"images/{split}/{image}.jpg" for image in image_row],
                              lambda r: f"{path}:{first_line[r]}", allow_outside=allow_outside)
    return SplitIndex(paths, np.frombuffer(rows, dtype=np.int64), np.frombuffer(cols, dtype=np.dtype("l")),
                      np.frombuffer(values, dtype=np.int8))


@adapter("openimages-v3")
def openimages_v3(cfg: DataConfig) -> ParsedDataset:
    """OpenImages V3 (2017_11): train (80/20 train/val) and test, 5000 trainable classes."""
    root = require_root(cfg)
    trainable = read_lines(require(root / "classes-trainable.txt", "class list"))
    if len(set(trainable)) != len(trainable):
        raise DataError(f"{root / 'classes-trainable.txt'}: a label id is listed twice")
    names = {}
    desc = read_text(root / "class-descriptions.csv", "class descriptions")
    try:
        for row in csvlib.reader(io.StringIO(desc, newline="")):
            if len(row) >= 2:
                names[row[0]] = row[1]
    except csvlib.Error as exc:
        raise DataError(f"cannot read {root / 'class-descriptions.csv'}: {exc}") from None
    column = {mid: k for k, mid in enumerate(trainable)}
    allow = cfg.allow_outside_root
    pool = read_annotations(root / "train" / "annotations-human.csv", column, "train", allow)
    test = read_annotations(root / "test" / "annotations-human.csv", column, "test", allow)
    described = [names.get(mid, mid) for mid in trainable]
    repeated = {n for n in described if described.count(n) > 1} if len(set(described)) < len(described) else set()
    class_names = tuple(f"{n} ({mid})" if n in repeated else n for n, mid in zip(described, trainable))
    return ParsedDataset("openimages-v3", root, class_names, pool, test, partial=True, partial_test=True,
                         group_map=True)
