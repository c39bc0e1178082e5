"""MS-COCO 2014 or 2017: ``annotations/instances_{train,val}YEAR.json``, images in
``trainYEAR/`` and ``valYEAR/``. The 80 classes are taken in category-id order; an image is
positive for every category it has an annotation of (crowd annotations included), and the boxes
are those annotations. Images without any annotation are left out, as in the single-positive
benchmark. Protocol: trainYEAR (80/20 train/val), valYEAR as the test set.

``coco2014`` and ``coco2017`` read one layout each; ``coco`` reads whichever one the root holds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pamc.config import DataConfig
from pamc.data.adapters.common import ParsedDataset, SplitIndex, adapter, require, require_root
from pamc.errors import DataError

log = logging.getLogger(__name__)


def _load(path: Path) -> dict:
    require(path, "annotation file")
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing the {key!r} list")
    return data


def read_instances(path: Path, folder: str, categories: list[dict] | None = None) -> tuple[tuple[str, ...], list[int], SplitIndex]:
    """Class names, category ids and the split index of one ``instances_*.json``."""
    data = _load(path)
    cats = sorted(data["categories"] if categories is None else categories, key=lambda c: c["id"])
    cat_ids = [int(c["id"]) for c in cats]
    column = {cid: k for k, cid in enumerate(cat_ids)}
    images = {}
    for img in data["images"]:
        iid = int(img["id"])
        if iid in images:
            raise DataError(f"{path}: image id {iid} is listed twice")
        images[iid] = (img["file_name"], float(img.get("width", 0)), float(img.get("height", 0)))
    labelled: dict[int, set[int]] = {}
    boxes_raw = []
    for ann in data["annotations"]:
        iid, cid = int(ann["image_id"]), int(ann["category_id"])
        if iid not in images:
            raise DataError(f"{path}: annotation {ann.get('id')} refers to unknown image id {iid}")
        if cid not in column:
            raise DataError(f"{path}: annotation {ann.get('id')} has unknown category id {cid}")
        labelled.setdefault(iid, set()).add(column[cid])
        if "bbox" in ann:
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes_raw.append((iid, column[cid], x, y, x + w, y + h))
    order = sorted(labelled)
    dropped = len(images) - len(order)
    if dropped:
        log.info("%s: %d images without annotations left out", path.name, dropped)
    row_of = {iid: r for r, iid in enumerate(order)}
    full = -np.ones((len(order), len(cat_ids)), dtype=np.int8)
    for iid, cols in labelled.items():
        full[row_of[iid], sorted(cols)] = 1
    boxes = np.asarray([(row_of[i], *rest) for i, *rest in boxes_raw], dtype=np.float64).reshape(-1, 6)
    paths = [f"{folder}/{images[iid][0]}" for iid in order]
    names = tuple(str(c["name"]) for c in cats)
    return names, cat_ids, SplitIndex.from_dense(paths, full, boxes)


YEARS = ("2014", "2017")


def _parse(cfg: DataConfig, year: str) -> ParsedDataset:
    root = require_root(cfg)
    ann = root / "annotations"
    names, ids, pool = read_instances(ann / f"instances_train{year}.json", f"train{year}")
    test_names, test_ids, test = read_instances(ann / f"instances_val{year}.json", f"val{year}")
    if test_ids != ids:
        raise DataError(f"instances_train{year}.json and instances_val{year}.json have different categories")
    for folder in (f"train{year}", f"val{year}"):
        require(root / folder, "image folder")
    return ParsedDataset(f"coco{year}", root, names, pool, test)


def detect_year(root: Path) -> str:
    """The COCO release whose ``annotations/instances_train*.json`` is in ``root``."""
    found = [y for y in YEARS if (root / "annotations" / f"instances_train{y}.json").is_file()]
    if len(found) != 1:
        what = "both the 2014 and the 2017 layout" if found else "neither the 2014 nor the 2017 layout"
        raise DataError(f"{root} holds {what} (annotations/instances_train{{2014,2017}}.json); "
                        "choose --dataset coco2014 or coco2017")
    return found[0]


@adapter("coco2014")
def coco2014(cfg: DataConfig) -> ParsedDataset:
    """MS-COCO 2014: train2014 (80/20 train/val), val2014 as the test set; 80 classes."""
    return _parse(cfg, "2014")


@adapter("coco2017")
def coco2017(cfg: DataConfig) -> ParsedDataset:
    """MS-COCO 2017: train2017 (80/20 train/val), val2017 as the test set; 80 classes."""
    return _parse(cfg, "2017")


@adapter("coco")
def coco(cfg: DataConfig) -> ParsedDataset:
    """MS-COCO in whichever layout (2014 or 2017) the root holds."""
    return _parse(cfg, detect_year(require_root(cfg)))
