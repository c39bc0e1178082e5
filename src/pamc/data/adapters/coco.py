"""MS-COCO 2014: ``annotations/instances_{train,val}2014.json``, images in ``train2014/`` and
``val2014/``. The 80 classes are taken in category-id order; an image is positive for every
category it has an annotation of (crowd annotations included), and the boxes are those
annotations. Images without any annotation are left out, as in the single-positive benchmark.
Protocol: train2014 (80/20 train/val), val2014 as the test set.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from pamc.config import DataConfig
from pamc.data.adapters.common import (
    ParsedDataset, SplitIndex, adapter, check_image_paths, read_text, require, require_root,
)
from pamc.errors import DataError

log = logging.getLogger(__name__)


def _load(path: Path) -> dict:
    text = read_text(path, "annotation file")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise DataError(f"{path} is not valid JSON ({reason})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level must be a JSON object, got {_kind(data)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing the {key!r} list")
    return data


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _field(path: Path, where: str, item: object, key: str, kinds: tuple[type, ...], what: str) -> object:
    """``item[key]``, checked to be of ``kinds``; errors name the JSON path ``where.key``."""
    if not isinstance(item, dict):
        raise DataError(f"{path}: {where} must be an object, got {_kind(item)}")
    if key not in item:
        raise DataError(f"{path}: {where} has no {key!r}")
    value = item[key]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise DataError(f"{path}: {where}.{key} must be {what}, got {value!r}"[:300])
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{path}: {where}.{key} must be a finite number, got {value!r}")
    return value


def _id(path: Path, where: str, item: object, key: str) -> int:
    value = _field(path, where, item, key, (int,), "an integer id")
    return int(value)  # type: ignore[arg-type]


def read_instances(path: Path, folder: str, categories: list[dict] | None = None, *,
                   allow_outside: bool = False) -> tuple[tuple[str, ...], list[int], SplitIndex]:
    """Class names, category ids and the split index of one ``instances_*.json``.

    Image paths are ``folder/file_name`` under the data root, the folder above ``annotations/``.
    """
    data = _load(path)
    raw_cats = data["categories"] if categories is None else categories
    for j, c in enumerate(raw_cats):
        _id(path, f"categories[{j}]", c, "id")
        _field(path, f"categories[{j}]", c, "name", (str,), "a string")
    cats = sorted(raw_cats, key=lambda c: c["id"])
    cat_ids = [int(c["id"]) for c in cats]
    if len(set(cat_ids)) != len(cat_ids):
        raise DataError(f"{path}: a category id is listed twice")
    column = {cid: k for k, cid in enumerate(cat_ids)}
    images = {}
    for j, img in enumerate(data["images"]):
        where = f"images[{j}]"
        iid = _id(path, where, img, "id")
        if iid in images:
            raise DataError(f"{path}: {where}: image id {iid} is listed twice")
        name = _field(path, where, img, "file_name", (str,), "a string")
        size = [float(_field(path, where, img, k, (int, float), "a number")) if k in img else 0.0
                for k in ("width", "height")]
        images[iid] = (name, size[0], size[1], j)
    labelled: dict[int, set[int]] = {}
    boxes_raw = []
    for j, ann in enumerate(data["annotations"]):
        where = f"annotations[{j}]"
        iid, cid = _id(path, where, ann, "image_id"), _id(path, where, ann, "category_id")
        if iid not in images:
            raise DataError(f"{path}: {where} refers to unknown image id {iid}")
        if cid not in column:
            raise DataError(f"{path}: {where} has unknown category id {cid}")
        labelled.setdefault(iid, set()).add(column[cid])
        if "bbox" in ann:
            bbox = ann["bbox"]
            if (not isinstance(bbox, list) or len(bbox) != 4
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               for v in bbox)):
                raise DataError(f"{path}: {where}.bbox must be four finite numbers [x, y, w, h], got {bbox!r}"[:300])
            x, y, w, h = (float(v) for v in bbox)
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
    paths = check_image_paths(path.parent.parent, [f"{folder}/{images[iid][0]}" for iid in order],
                              lambda r: f"{path}: images[{images[order[r]][3]}].file_name",
                              allow_outside=allow_outside)
    names = tuple(str(c["name"]) for c in cats)
    return names, cat_ids, SplitIndex.from_dense(paths, full, boxes)


@adapter("coco2014")
def coco2014(cfg: DataConfig) -> ParsedDataset:
    """MS-COCO 2014: train2014 (80/20 train/val), val2014 as the test set; 80 classes."""
    root = require_root(cfg)
    ann = root / "annotations"
    names, ids, pool = read_instances(ann / "instances_train2014.json", "train2014",
                                      allow_outside=cfg.allow_outside_root)
    test_names, test_ids, test = read_instances(ann / "instances_val2014.json", "val2014",
                                                allow_outside=cfg.allow_outside_root)
    if test_ids != ids:
        raise DataError("instances_train2014.json and instances_val2014.json have different categories")
    for folder in ("train2014", "val2014"):
        require(root / folder, "image folder")
    return ParsedDataset("coco2014", root, names, pool, test)
