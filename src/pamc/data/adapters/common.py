"""What every adapter produces, and how it becomes a :class:`DatasetBundle`.

An adapter only parses: it returns a :class:`ParsedDataset` whose splits are
:class:`SplitIndex` objects (image paths relative to the data root, a sparse label matrix as
entry lists, boxes in original pixels). :func:`assemble` then decodes the images into the
image cache, draws the observed labels (cached) and makes the train/val/test splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pamc.config import DataConfig
from pamc.data.catalog import default_image_size, parser, register_dataset
from pamc.data.datasets import DatasetBundle, Split, split_indices, subset_boxes
from pamc.data.image_cache import ImageRows, _save_npz, open_or_build_cache
from pamc.data.labels import LabelStore, check_label_values, check_observed, observe
from pamc.data.sparse_labels import SparseLabelStore, make_label_store
from pamc.errors import DataError

log = logging.getLogger(__name__)

FREQUENCY_GROUPS = 5  # group_map datasets: the evaluator's default number of frequency groups
INDEX_FORMAT = 1
Store = LabelStore | SparseLabelStore


@dataclass
class SplitIndex:
    """One split before decoding: paths, labels as (row, col, value) entries, boxes.

    ``values`` are +1 / -1; an entry that is absent is 0 (unobserved or unknown). ``boxes``
    rows are ``(row, class, x0, y0, x1, y1)`` in the original image's pixels (float64).
    """

    paths: list[str]
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.int8)
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 6)
        rows, cols = np.asarray(self.rows), np.asarray(self.cols)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.paths)):
            raise DataError(f"label entry row outside [0, {len(self.paths)})")
        if rows.size:
            # canonical form: sorted by (row, class), one entry per pair (a repeat keeps its last
            # value), built in blocks by the sparse store so that OpenImages-size lists stay small
            store = SparseLabelStore.from_coo(rows, cols, self.values, (len(self.paths), int(cols.max()) + 1))
            rows, cols, self.values = store.to_coo()
        self.rows = rows.astype(np.int64, copy=False)
        self.cols = cols.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def from_dense(cls, paths: list[str], labels: np.ndarray, boxes: np.ndarray | None = None) -> "SplitIndex":
        labels = np.asarray(labels)
        check_label_values(labels, "labels")
        rows, cols = np.nonzero(labels)
        return cls(paths, rows, cols, labels[rows, cols], np.zeros((0, 6)) if boxes is None else boxes)

    def dense(self, num_classes: int) -> np.ndarray:
        out = np.zeros((len(self), num_classes), dtype=np.int8)
        out[self.rows, self.cols] = self.values
        return out

    def subset(self, keep: np.ndarray) -> "SplitIndex":
        """The rows where the boolean mask ``keep`` is True, renumbered."""
        keep = np.asarray(keep, dtype=bool)
        new_row = np.cumsum(keep) - 1
        entry = keep[self.rows]
        boxes = self.boxes[keep[self.boxes[:, 0].astype(np.int64)]] if len(self.boxes) else self.boxes
        boxes = boxes.copy()
        if len(boxes):
            boxes[:, 0] = new_row[boxes[:, 0].astype(np.int64)]
        paths = [p for p, k in zip(self.paths, keep.tolist()) if k]
        return SplitIndex(paths, new_row[self.rows[entry]], self.cols[entry], self.values[entry], boxes)

    def save(self, path: Path) -> None:
        _save_npz(path, paths=np.array(self.paths, dtype=str), rows=self.rows, cols=self.cols,
                  values=self.values, boxes=self.boxes)

    @classmethod
    def load(cls, path: Path) -> "SplitIndex":
        with np.load(path) as f:
            return cls(f["paths"].tolist(), f["rows"], f["cols"], f["values"], f["boxes"])


@dataclass
class ParsedDataset:
    """An adapter's output: a training pool and a test split over one class list.

    ``partial`` means the pool's labels are real partial labels used as observed labels
    directly (OpenImages, csv); otherwise they are full labels and the observed labels are
    drawn from them. ``partial_test`` means test entries labelled 0 are unannotated and left
    out of evaluation.
    """

    name: str
    root: Path
    class_names: tuple[str, ...]
    pool: SplitIndex
    test: SplitIndex
    partial: bool = False
    partial_test: bool = False
    group_map: bool = False
    test_pool_fraction: float | None = None  # hold the test split out of the pool instead
    val: SplitIndex | None = None  # a separate validation set (csv --val-csv) instead of 20% of the pool


def adapter(name: str):
    """Register ``parse(cfg) -> ParsedDataset`` as the reader of ``name`` in the dataset catalog
    (:data:`pamc.data.catalog.DATASETS`); building the dataset assembles what it parses."""

    def decorator(parse):
        def build(cfg: DataConfig) -> DatasetBundle:
            return assemble(parse_dataset(cfg), cfg)

        build.__doc__ = parse.__doc__
        register_dataset(name, build, parse)
        return parse

    return decorator


def require(path: Path, what: str = "") -> Path:
    """``path`` if it exists, else a :class:`DataError` naming it."""
    if not path.exists():
        raise DataError(f"missing {what + ' ' if what else ''}{path}")
    return path


def require_root(cfg: DataConfig) -> Path:
    if cfg.root is None:
        raise DataError(f"dataset {cfg.dataset!r} needs a data root (--data-root or data.root)")
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    return root


def read_text(path: Path, what: str = "") -> str:
    """The text of ``path`` as UTF-8 (a BOM is dropped); a one-line error naming the file and line."""
    require(path, what)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file, with a one-line error if it is unreadable."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def numbered_lines(path: Path, what: str = "") -> list[tuple[int, str]]:
    """``(line number, stripped line)`` of the non-empty lines of a UTF-8 text file."""
    return [(n, line.strip()) for n, line in enumerate(read_text(path, what).splitlines(), 1) if line.strip()]


def check_image_paths(root: Path, paths: list[str], where: Callable[[int], str], *,
                      allow_outside: bool = False) -> list[str]:
    """``paths`` normalised (``a/./b`` is ``a/b``), each resolving inside ``root``, none repeated.

    Image paths come from dataset files and are relative to ``root``. Each is resolved with its
    symlinks; one that is absolute, climbs out with ``..`` or goes through a symlink to outside
    ``root`` is an error naming ``where(i)`` (the file and line, or JSON path, that lists it),
    unless ``allow_outside`` (``data.allow_outside_root``). Two entries that name one file after
    normalisation are an error as well.
    """
    base = os.path.realpath(root)
    inside_dirs: dict[str, bool] = {}
    first: dict[str, int] = {}
    out = []
    for i, path in enumerate(paths):
        if not path or "\x00" in path:
            raise DataError(f"{where(i)}: empty or malformed image path {path!r}")
        norm = os.path.normpath(path)
        if not allow_outside:
            full = os.path.join(base, norm)
            folder = os.path.dirname(full)
            ok = inside_dirs.get(folder)
            if ok is None:
                ok = inside_dirs[folder] = _inside(os.path.realpath(folder), base)
            if not ok or (os.path.islink(full) and not _inside(os.path.realpath(full), base)):
                raise DataError(f"{where(i)}: image path {path!r} resolves outside the data root {root} "
                                "(set data.allow_outside_root: true to allow it)")
        if norm in first:
            raise DataError(f"{where(i)}: image {path!r} is listed twice (first at {where(first[norm])})")
        first[norm] = i
        out.append(norm)
    return out


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _digest(*parts: object) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def default_cache_dir(cfg: DataConfig, root: Path) -> Path:
    """``data.cache_dir``, else ``.pamc-cache`` in the data root (next to a CSV root file)."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return (root.parent if root.is_file() else root) / ".pamc-cache"


def observed_labels_file(full: np.ndarray, cfg: DataConfig, cache_dir: Path) -> Path:
    """Where :func:`observed_pool_labels` keeps the observed labels of ``full`` under ``cfg``."""
    parts = [np.ascontiguousarray(full).tobytes(), list(full.shape), cfg.num_pos, cfg.num_neg, cfg.obs_seed]
    tag = ""
    if cfg.protocol != "pamc":  # pamc's files keep the names they had before protocols existed
        parts.append(cfg.protocol)
        tag = f"-{cfg.protocol}"
    key = _digest(*parts)
    return cache_dir / f"observed-{cfg.num_pos}pos-{cfg.num_neg}neg-seed{cfg.obs_seed}{tag}-{key}.npz"


def observed_pool_labels(full: np.ndarray, cfg: DataConfig, cache_dir: Path) -> np.ndarray:
    """``observe(full, num_pos, num_neg, obs_seed, protocol)``, cached in ``cache_dir`` and reused."""
    path = observed_labels_file(full, cfg, cache_dir)
    if path.is_file():
        with np.load(path) as f:
            observed = np.zeros(full.shape, dtype=np.int8)
            observed[f["rows"], f["cols"]] = f["values"]
        log.info("reusing observed labels %s", path)
        return observed
    observed = observe(full, cfg.num_pos, cfg.num_neg, cfg.obs_seed, cfg.protocol)
    rows, cols = np.nonzero(observed)
    from pamc.engine.checkpoint import make_dirs

    make_dirs(cache_dir)
    _save_npz(path, rows=rows, cols=cols, values=observed[rows, cols])
    log.info("wrote observed labels %s (%d positives, %d negatives)", path,
             int((observed == 1).sum()), int((observed == -1).sum()))
    return observed


def _scaled_boxes(index: SplitIndex, sizes: np.ndarray, size: int) -> np.ndarray:
    if not len(index.boxes):
        return np.zeros((0, 6), dtype=np.int64)
    b = index.boxes.copy()
    row = b[:, 0].astype(np.int64)
    sx = size / np.maximum(sizes[row, 0], 1)
    sy = size / np.maximum(sizes[row, 1], 1)
    b[:, 2], b[:, 4] = b[:, 2] * sx, b[:, 4] * sx
    b[:, 3], b[:, 5] = b[:, 3] * sy, b[:, 5] * sy
    out = np.rint(b).astype(np.int64)
    out[:, 2:] = np.clip(out[:, 2:], 0, size)
    return out


def load_images(parsed: ParsedDataset, index: SplitIndex, what: str, cfg: DataConfig, cache_dir: Path,
                progress=None) -> tuple[np.ndarray, ImageRows, np.ndarray]:
    """Decode (or reuse) the cache of ``index``. Returns (ok mask, images of the ok rows, their boxes)."""
    size = default_image_size(cfg)
    cached = open_or_build_cache(parsed.root, index.paths, size, cache_dir, strict=cfg.strict,
                                 max_pixels=cfg.max_image_pixels,
                                 what=f"{parsed.name} {what}", progress=progress)
    if not cached.ok.any():
        raise DataError(f"{parsed.name} {what}: no usable images ({len(index)} listed)")
    kept = index.subset(cached.ok)
    boxes = _scaled_boxes(kept, cached.sizes[cached.ok], size)
    return cached.ok, ImageRows(cached.array, np.flatnonzero(cached.ok)), boxes


def assemble(parsed: ParsedDataset, cfg: DataConfig, progress=None) -> DatasetBundle:
    """Images from the cache, observed labels, and the train/val/test splits of ``parsed``.

    Observed labels are drawn once over the whole parsed training pool (so they do not depend
    on which images turn out unreadable), cached next to the image cache, then the unusable
    images are dropped and the pool is split 80/20 into train/val (``cfg.val_fraction``), unless
    the adapter gives a separate validation set (``parsed.val``), which then holds the whole pool.

    With real partial labels every split's labels go into one label store chosen by
    ``cfg.label_store`` (sparse at OpenImages scale); a validation or test split's ground truth
    is then that same store, so no dense (N, C) matrix is made.

    Under ``cfg.protocol == "authors"`` an image with full labels is kept only if it has a
    positive label, in the pool and in the test set (the authors' ``preproc/format_*.py``).
    """
    parsed = apply_protocol(parsed, cfg)
    cache_dir = default_cache_dir(cfg, Path(cfg.root).expanduser() if cfg.root else parsed.root)
    num_classes = len(parsed.class_names)
    if num_classes == 0:
        raise DataError(f"{parsed.name}: no classes")
    if len(parsed.pool) == 0:
        raise DataError(f"{parsed.name}: the training set lists no images (empty dataset)")
    if parsed.group_map and num_classes < FREQUENCY_GROUPS:
        raise DataError(f"{parsed.name}: {num_classes} classes; its evaluation reports {FREQUENCY_GROUPS} "
                        f"frequency groups of classes and needs at least {FREQUENCY_GROUPS}")
    ok, pool_images, pool_boxes = load_images(parsed, parsed.pool, "train", cfg, cache_dir, progress)
    pool = parsed.pool.subset(ok)
    if parsed.partial:
        observed = None
    else:
        observed = observed_pool_labels(parsed.pool.dense(num_classes), cfg, cache_dir)[ok]
    if parsed.test_pool_fraction is not None:
        rest_idx, test_idx = split_indices(len(pool), parsed.test_pool_fraction, cfg.split_seed + 1,
                                           cfg.protocol)
        log.info("%s: no test set given; holding out %d of %d images for testing",
                 parsed.name, len(test_idx), len(pool))
    else:
        if len(parsed.test) == 0:
            raise DataError(f"{parsed.name}: the test set lists no images (empty dataset)")
        test_ok, test_images, test_boxes = load_images(parsed, parsed.test, "test", cfg, cache_dir, progress)
        test = parsed.test.subset(test_ok)
        rest_idx = np.arange(len(pool))
    if parsed.val is None:
        train_pos, val_pos = split_indices(len(rest_idx), cfg.val_fraction, cfg.split_seed, cfg.protocol)
        train_rows, val_rows = rest_idx[train_pos], rest_idx[val_pos]
    else:
        if len(parsed.val) == 0:
            raise DataError(f"{parsed.name}: the validation set lists no images (empty dataset)")
        val_ok, val_images, val_boxes = load_images(parsed, parsed.val, "val", cfg, cache_dir, progress)
        train_rows = rest_idx
    observed_any = (_mask(len(pool), train_rows)[pool.rows].any() if parsed.partial
                    else bool(np.any(observed[train_rows])))
    check_observed(parsed.name, observed_any)

    def partial_labels(index: SplitIndex, evaluated: bool) -> tuple[np.ndarray | Store | None, Store]:
        """(full, observed) of a split with real partial labels; see the docstring."""
        store = make_label_store(index.rows, index.cols, index.values, (len(index), num_classes), cfg.label_store)
        if isinstance(store, SparseLabelStore):
            return (store if evaluated else None), store
        return index.dense(num_classes), store

    def pool_split(rows: np.ndarray, evaluated: bool) -> Split:
        sub = pool.subset(_mask(len(pool), rows))  # rows are ascending: the mask keeps their order
        if parsed.partial:
            full, store = partial_labels(sub, evaluated)
        else:
            store = LabelStore(observed[rows])
            full = sub.dense(num_classes)
        return Split(ImageRows(pool_images.array, pool_images.rows[rows]), full, store,
                     subset_boxes(pool_boxes, rows))

    def test_labels(index: SplitIndex) -> tuple[np.ndarray | Store, Store]:
        if parsed.partial:
            return partial_labels(index, evaluated=True)
        full = index.dense(num_classes)
        return full, LabelStore(full)

    train = pool_split(train_rows, evaluated=False)
    if parsed.val is None:
        val = pool_split(val_rows, evaluated=True)
    else:
        val = Split(val_images, *test_labels(parsed.val.subset(val_ok)), val_boxes)
    if parsed.test_pool_fraction is not None:
        test_full, test_store = test_labels(pool.subset(_mask(len(pool), test_idx)))
        test_split = Split(ImageRows(pool_images.array, pool_images.rows[test_idx]), test_full, test_store,
                           subset_boxes(pool_boxes, test_idx))
    else:
        test_full, test_store = test_labels(test)
        test_split = Split(test_images, test_full, test_store, test_boxes)
    frequency = None
    if parsed.group_map:
        train_entry = _mask(len(pool), train_rows)[pool.rows] & (pool.values == 1)
        frequency = np.bincount(pool.cols[train_entry], minlength=num_classes)
    log.info("%s: %d train, %d val, %d test images, %d classes", parsed.name, len(train), len(val),
             len(test_split), num_classes)
    return DatasetBundle(parsed.name, parsed.class_names, train, val, test_split,
                         partial_test_labels=parsed.partial_test, class_frequency=frequency)


def apply_protocol(parsed: ParsedDataset, cfg: DataConfig) -> ParsedDataset:
    """The images ``cfg.protocol`` trains and tests on: under ``authors`` an image with full
    labels is kept only if it has a positive label (the authors' ``preproc/format_*.py``)."""
    if cfg.protocol != "authors" or parsed.partial:
        return parsed
    return dataclasses.replace(parsed, pool=with_positive(parsed.pool), test=with_positive(parsed.test))


def with_positive(index: SplitIndex) -> SplitIndex:
    """The rows of ``index`` with at least one positive label."""
    keep = np.zeros(len(index), dtype=bool)
    keep[index.rows[index.values == 1]] = True
    return index if keep.all() else index.subset(keep)


def _mask(n: int, rows: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[rows] = True
    return m


INDEX_META = "index.json"


def index_key(cfg: DataConfig, root: Path) -> str:
    """What the parsed index depends on: dataset, root and the parsing options."""
    test_csv, val_csv = (str(Path(p).expanduser().resolve()) if p else None for p in (cfg.test_csv, cfg.val_csv))
    outside = ("allow_outside_root",) if cfg.allow_outside_root else ()  # an index checked without it
    return _digest(INDEX_FORMAT, cfg.dataset, str(root.resolve()), cfg.resolved_voc_difficult, test_csv, cfg.val_fraction,
                   val_csv, cfg.test_labels, *outside)


def save_index(parsed: ParsedDataset, folder: Path, key: str) -> None:
    """Write ``index.json`` (metadata) and ``index-train.npz`` / ``index-test.npz``."""
    from pamc.engine.checkpoint import atomic_write_text, make_dirs

    make_dirs(folder)
    parsed.pool.save(folder / "index-train.npz")
    parsed.test.save(folder / "index-test.npz")
    if parsed.val is not None:
        parsed.val.save(folder / "index-val.npz")
    meta = {
        "format": INDEX_FORMAT, "key": key, "dataset": parsed.name, "root": str(parsed.root.resolve()),
        "class_names": list(parsed.class_names), "partial": parsed.partial,
        "partial_test": parsed.partial_test, "group_map": parsed.group_map,
        "test_pool_fraction": parsed.test_pool_fraction, "val": parsed.val is not None,
        "num_train": len(parsed.pool), "num_test": len(parsed.test),
        "num_labels": {"positive": int((parsed.pool.values == 1).sum()), "negative": int((parsed.pool.values == -1).sum())},
    }
    atomic_write_text(folder / INDEX_META, json.dumps(meta, indent=1))


def load_index(folder: Path, key: str) -> ParsedDataset | None:
    """The index saved by :func:`save_index` if it matches ``key``, else None."""
    path = folder / INDEX_META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if meta.get("key") != key:
        return None
    log.info("reusing the dataset index in %s", folder)
    return ParsedDataset(meta["dataset"], Path(meta["root"]), tuple(meta["class_names"]),
                         SplitIndex.load(folder / "index-train.npz"), SplitIndex.load(folder / "index-test.npz"),
                         partial=meta["partial"], partial_test=meta["partial_test"], group_map=meta["group_map"],
                         test_pool_fraction=meta["test_pool_fraction"],
                         val=SplitIndex.load(folder / "index-val.npz") if meta.get("val") else None)


def parse_dataset(cfg: DataConfig) -> ParsedDataset:
    """The parsed index of ``cfg.dataset``: from the prepared folder when it matches, else parsed."""
    root = require_root(cfg)
    folder = default_cache_dir(cfg, root)
    parsed = load_index(folder, index_key(cfg, root))
    return parsed if parsed is not None else parser(cfg.dataset)(cfg)
