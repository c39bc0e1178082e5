"""PASCAL VOC 2007 / 2012 in the VOCdevkit layout.

Labels come from ``ImageSets/Main/<class>_<split>.txt`` (``<id> <flag>``, flag 1 present,
-1 absent, 0 "difficult"); images from ``JPEGImages/<id>.jpg``; boxes, when the folder
exists, from ``Annotations/<id>.xml``. Protocol: VOC2007 trains on ``trainval`` and tests on
``test``; VOC2012 trains on ``train`` and tests on ``val`` (its test labels are not public).
A difficult flag counts as positive by default (``data.voc_difficult``), as absent under
``data.protocol: authors`` (their ``preproc/format_pascal.py`` keeps flag 1 only).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from pamc.config import DataConfig
from pamc.data.adapters.common import (
    ParsedDataset, SplitIndex, adapter, check_image_paths, numbered_lines, require, require_root,
)
from pamc.data.catalog import VOC_CLASSES
from pamc.errors import DataError

log = logging.getLogger(__name__)

SPLITS = {"2007": ("trainval", "test"), "2012": ("train", "val")}
_DIFFICULT = {"positive": 1, "negative": -1, "ignore": 0}


def year_dir(root: Path, year: str) -> Path:
    """``root`` itself if it is the VOC<year> folder, else ``root/VOC<year>`` (VOCdevkit)."""
    for candidate in (root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}", root):
        if (candidate / "ImageSets" / "Main").is_dir():
            return candidate
    return require(root / f"VOC{year}" / "ImageSets" / "Main", "VOC folder").parent.parent


def read_flags(base: Path, split: str, allow_outside: bool = False) -> tuple[list[str], np.ndarray]:
    """Image ids and the raw (N, 20) int8 flags (1, 0 difficult, -1) of ``split``."""
    ids: list[str] | None = None
    columns = []
    for name in VOC_CLASSES:
        path = require(base / "ImageSets" / "Main" / f"{name}_{split}.txt", "split file")
        these, flags, linenos = [], [], []
        for lineno, line in numbered_lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("1", "0", "-1"):
                raise DataError(f"{path}:{lineno}: expected '<image id> <1|0|-1>', got {line!r}")
            these.append(parts[0])
            flags.append(int(parts[1]))
            linenos.append(lineno)
        if ids is None:
            ids = these
            check_image_paths(base, [f"JPEGImages/{i}.jpg" for i in ids], lambda i: f"{path}:{linenos[i]}",
                              allow_outside=allow_outside)
        elif these != ids:
            raise DataError(f"{path} lists different images than {VOC_CLASSES[0]}_{split}.txt")
        columns.append(np.asarray(flags, dtype=np.int8))
    assert ids is not None
    if not ids:
        raise DataError(f"{base}: split {split!r} lists no images")
    return ids, np.stack(columns, axis=1)


def read_boxes(base: Path, ids: list[str]) -> np.ndarray:
    """Boxes ``(row, class, x0, y0, x1, y1)`` from ``Annotations/<id>.xml`` (none if absent)."""
    folder = base / "Annotations"
    if not folder.is_dir():
        return np.zeros((0, 6))
    lookup = {name: i for i, name in enumerate(VOC_CLASSES)}
    boxes = []
    for row, image_id in enumerate(ids):
        path = folder / f"{image_id}.xml"
        if not path.is_file():
            continue
        try:
            tree = ET.parse(path)
        except ET.ParseError as exc:
            raise DataError(f"{path}: malformed XML ({exc})") from None
        for obj in tree.getroot().iter("object"):
            name = (obj.findtext("name") or "").strip()
            box = obj.find("bndbox")
            if name not in lookup or box is None:
                raise DataError(f"{path}: object with unknown class {name!r} or without bndbox")
            try:
                x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                raise DataError(f"{path}: bndbox of {name!r} is not four numbers") from None
            if not np.isfinite([x0, y0, x1, y1]).all():
                raise DataError(f"{path}: bndbox of {name!r} is not four finite numbers")
            boxes.append((row, lookup[name], x0 - 1, y0 - 1, x1, y1))  # VOC pixels are 1-based
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 6)


def parse_voc(cfg: DataConfig, year: str) -> ParsedDataset:
    base = year_dir(require_root(cfg), year)
    difficult = _DIFFICULT[cfg.resolved_voc_difficult]
    splits = []
    for split in SPLITS[year]:
        ids, flags = read_flags(base, split, cfg.allow_outside_root)
        labels = np.where(flags == 0, difficult, flags).astype(np.int8)
        splits.append(SplitIndex.from_dense([f"JPEGImages/{i}.jpg" for i in ids], labels, read_boxes(base, ids)))
    return ParsedDataset(f"voc{year}", base, VOC_CLASSES, splits[0], splits[1],
                         partial_test=cfg.resolved_voc_difficult == "ignore")


@adapter("voc2007")
def voc2007(cfg: DataConfig) -> ParsedDataset:
    """PASCAL VOC 2007: trainval (80/20 train/val), test."""
    return parse_voc(cfg, "2007")


@adapter("voc2012")
def voc2012(cfg: DataConfig) -> ParsedDataset:
    """PASCAL VOC 2012: train (80/20 train/val), val as the test set."""
    return parse_voc(cfg, "2012")
