"""The user's own data: a CSV of image paths and labels (``--dataset csv``).

``data.root`` is the CSV file, or a folder holding ``train.csv`` (and optionally
``test.csv`` and ``classes.txt``). Two forms are read, chosen by the header:

- **list**: columns ``image,labels[,negatives]``; ``labels`` and ``negatives`` are
  ``;``-separated class names (observed positives and observed negatives). A class in neither
  list is unobserved.
- **wide**: an ``image`` column and one column per class holding 1, 0 (unobserved) or -1.

The class list is ``classes.txt`` (one name a line) next to the CSV when present, else the
sorted union of the names found. Image paths are relative to the CSV's folder. The labels are
used as observed labels directly (no observation generator). ``data.test_csv`` gives a test
set; without one, 20% of the images (seeded) are held out for testing.
"""

from __future__ import annotations

import csv as csvlib
import io
from pathlib import Path

import numpy as np

from pamc.config import DataConfig
from pamc.data.adapters.common import (
    ParsedDataset, SplitIndex, adapter, check_image_paths, numbered_lines, read_text, require, require_root,
)
from pamc.errors import DataError


RESERVED = ("image", "labels", "negatives")


def _rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    text = read_text(path, "CSV file")
    try:
        reader = csvlib.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        rows = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    except csvlib.Error as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if header is None:
        raise DataError(f"{path} is empty")
    header = [h.strip() for h in header]
    if "image" not in header:
        raise DataError(f"{path}: the header has no 'image' column (got {', '.join(header)})")
    for j, name in enumerate(header):
        if not name:
            raise DataError(f"{path}:1: column {j + 1} of the header has no name"
                            + (" (a trailing comma?)" if j == len(header) - 1 else ""))
        if name in header[:j]:
            raise DataError(f"{path}:1: column {name!r} appears twice (columns {header.index(name) + 1} and {j + 1})")
    return header, rows


def _names(cell: str) -> list[str]:
    return [n.strip() for n in cell.split(";") if n.strip()]


def class_names_of(paths: list[Path], classes_file: Path | None) -> tuple[str, ...]:
    """``classes.txt`` if given, else the sorted union of the class names in the CSVs."""
    if classes_file is not None:
        lines = numbered_lines(classes_file)
        seen: dict[str, int] = {}
        for lineno, name in lines:
            if name in RESERVED or ";" in name:
                raise DataError(f"{classes_file}:{lineno}: {name!r} cannot be a class name "
                                f"({', '.join(RESERVED)} are column names and ';' separates names)")
            if name in seen:
                raise DataError(f"{classes_file}:{lineno}: class {name!r} is listed twice (first at line {seen[name]})")
            seen[name] = lineno
        return tuple(seen)
    found: set[str] = set()
    for path in paths:
        header, rows = _rows(path)
        if "labels" in header:
            cols = [header.index(c) for c in ("labels", "negatives") if c in header]
            for _, row in rows:
                for c in cols:
                    found.update(_names(row[c]) if c < len(row) else [])
        else:
            found.update(h for h in header if h != "image")
    return tuple(sorted(found))


def read_csv(path: Path, class_names: tuple[str, ...], prefix: str, allow_outside: bool = False) -> SplitIndex:
    """One CSV as a :class:`SplitIndex`; paths become ``prefix/<image>``.

    Image paths must resolve inside the CSV's folder (see :func:`check_image_paths`).
    """
    header, rows = _rows(path)
    lookup = {name: i for i, name in enumerate(class_names)}
    image_col = header.index("image")
    entries_r: list[int] = []
    entries_c: list[int] = []
    entries_v: list[int] = []
    paths: list[str] = []
    linenos: list[int] = []
    if "labels" in header:
        spec = [(header.index("labels"), 1)] + ([(header.index("negatives"), -1)] if "negatives" in header else [])
    else:
        spec = []
        for j, name in enumerate(header):
            if j != image_col and name not in lookup:
                raise DataError(f"{path}:1: column {name!r} is not a known class")
    for lineno, row in rows:
        image = row[image_col].strip() if image_col < len(row) else ""
        if not image:
            raise DataError(f"{path}:{lineno}: empty image path")
        r = len(paths)
        paths.append(image)
        linenos.append(lineno)
        seen: dict[int, int] = {}
        if spec:
            for col, value in spec:
                for name in _names(row[col]) if col < len(row) else []:
                    if name not in lookup:
                        raise DataError(f"{path}:{lineno}: unknown class {name!r}")
                    k = lookup[name]
                    if seen.get(k, value) != value:
                        raise DataError(f"{path}:{lineno}: class {name!r} is both a label and a negative")
                    seen[k] = value
        else:
            if len(row) != len(header):
                raise DataError(f"{path}:{lineno}: expected {len(header)} columns, got {len(row)}")
            for j, cell in enumerate(row):
                if j == image_col:
                    continue
                cell = cell.strip() or "0"
                if cell not in ("1", "0", "-1", "+1", "1.0", "0.0", "-1.0"):
                    raise DataError(f"{path}:{lineno}: value {cell!r} for class {header[j]!r} is not one of -1, 0, 1")
                value = int(float(cell))
                if value:
                    seen[lookup[header[j]]] = value
        for k, value in seen.items():
            entries_r.append(r)
            entries_c.append(k)
            entries_v.append(value)
    if not paths:
        raise DataError(f"{path}: no image rows (empty dataset)")
    paths = check_image_paths(path.parent, paths, lambda i: f"{path}:{linenos[i]}", allow_outside=allow_outside)
    if prefix:
        paths = [f"{prefix}/{p}" for p in paths]
    return SplitIndex(paths, np.asarray(entries_r), np.asarray(entries_c), np.asarray(entries_v))


def _train_csv(root: Path) -> Path:
    if root.is_file():
        return root
    return require(root / "train.csv", "CSV file")


@adapter("csv")
def csv_dataset(cfg: DataConfig) -> ParsedDataset:
    """Images listed in a CSV with partial labels (list or wide form)."""
    train = _train_csv(require_root(cfg))
    test = Path(cfg.test_csv).expanduser() if cfg.test_csv else None
    if test is None and (train.parent / "test.csv").is_file() and train.name == "train.csv":
        test = train.parent / "test.csv"
    if test is not None:
        require(test, "test CSV")
    classes_file = train.parent / "classes.txt"
    csvs = [train] + ([test] if test is not None else [])
    class_names = class_names_of(csvs, classes_file if classes_file.is_file() else None)
    if not class_names:
        raise DataError(f"{train}: no class names found")
    base = train.parent
    allow = cfg.allow_outside_root
    pool = read_csv(train, class_names, "", allow)
    test_index = read_csv(test, class_names, _relative(test.parent, base), allow) if test is not None else pool
    return ParsedDataset("csv", base, class_names, pool, test_index, partial=True, partial_test=True,
                         test_pool_fraction=None if test is not None else cfg.val_fraction)


def _relative(folder: Path, base: Path) -> str:
    try:
        rel = folder.resolve().relative_to(base.resolve())
        return "" if str(rel) == "." else rel.as_posix()
    except ValueError:
        return str(folder.resolve())
