"""The image cache: every image decoded and resized once, stored as uint8 in a memory map.

Decoding is done with Pillow: ``Image.open(path).convert("RGB").resize((S, S), BILINEAR)``,
a direct resize to S x S that does not keep the aspect ratio (Pillow's bilinear filter widens
its support when downscaling, so it also antialiases). A JPEG at least twice the target size
in both sides is first decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (Pillow's
``Image.draft``: the largest reduction that keeps both sides >= S), which skips most of the
decoding work; the final resize then has less to shrink (``benchmarks/bench_input.py`` gives
the largest pixel difference against a full decode). :func:`decode_image` is that decode path,
the cache stores exactly its output, and inference (:mod:`pamc.data.preprocess`) decodes
through it too, so an image file and its cached copy give the same uint8 pixels.

The cache is built by worker processes (default: the usable cores), each decoding a chunk of
images straight into the memory map; every image is decoded on its own, so the file is the
same whatever the number of processes.

A cache is two files in the cache folder, named by a key over (cache format, image size, data
root, image list):

- ``images-<S>-<key>.u8``: a raw C-order uint8 array of shape (N, S, S, 3), i.e. each image
  in Pillow's own (height, width, RGB) order, opened with :func:`numpy.memmap`. It is exposed
  as an (N, 3, S, S) view, so batches come out as channels_last uint8 tensors: decoding needs
  no transpose, and the float batch in channels_last order (the training default) is a plain
  same-order copy instead of a transposing one;
- ``images-<S>-<key>.npz``: ``ok`` (N,) bool, False for images that were missing or could not
  be decoded, and ``sizes`` (N, 2) int32, the original (width, height). It is written last, so
  a cache without it is incomplete and gets rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pamc.errors import DataError

log = logging.getLogger(__name__)

CACHE_FORMAT = "3"  # 3: JPEG draft decoding; 2: images stored (H, W, 3); 1 stored (3, H, W)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
CHUNK = 64  # images per worker task


def decode_image(path: str | Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The decode path of training and inference: (3, size, size) uint8 and the original
    (width, height). A JPEG at least ``2 * size`` on both sides is decoded in draft mode.

    The pixels are a channel-first view of Pillow's (size, size, 3) array (no copy).
    """
    with Image.open(path) as im:
        original = im.size
        if im.format == "JPEG" and 2 * size <= min(original):
            im.draft("RGB", (size, size))
        rgb = im.convert("RGB")
    resized = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(resized).transpose(2, 0, 1), original


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cache_key(root: str | Path, paths: Sequence[str], size: int) -> str:
    digest = hashlib.sha1(f"pamc-image-cache {CACHE_FORMAT} {size} {Path(root).resolve()}\n".encode())
    for p in paths:
        digest.update(p.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


@dataclass
class CachedImages:
    """An opened cache: the (N, 3, S, S) view of the memory map, usable rows, original sizes."""

    array: np.ndarray
    ok: np.ndarray
    sizes: np.ndarray
    path: Path


class ImageRows:
    """Rows ``rows`` of a uint8 image array (usually a memory map), read by batch.

    ``loader[idx]`` returns a uint8 tensor (B, 3, S, S); reads are done in ascending row order
    so that a memory-mapped file is read as sequentially as the batch allows. An array stored
    channels-last (the image cache) gives channels_last tensors, copied in storage order.
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray) -> None:
        self.array = array
        self.rows = np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: torch.Tensor | np.ndarray | int | slice) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        rows = self.rows[index]
        if np.ndim(rows) == 0:
            return torch.from_numpy(np.array(self.array[int(rows)]))
        stored_hwc = self.array.ndim == 4 and self.array.strides[1] < self.array.strides[3]
        source = self.array.transpose(0, 2, 3, 1) if stored_hwc else self.array
        out = np.empty((len(rows), *source.shape[1:]), dtype=self.array.dtype)
        for j in np.argsort(rows, kind="stable"):  # one copy per image, in file order
            out[j] = source[rows[j]]
        batch = torch.from_numpy(out)
        return batch.permute(0, 3, 1, 2) if stored_hwc else batch

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        out = self[np.arange(len(self))].numpy()
        return out if dtype is None else out.astype(dtype)


def open_or_build_cache(
    root: str | Path,
    paths: Sequence[str],
    size: int,
    cache_dir: str | Path,
    *,
    strict: bool = False,
    workers: int | None = None,
    what: str = "images",
    progress: Callable[[int, int], None] | None = None,
) -> CachedImages:
    """Open the cache of ``paths`` (relative to ``root``) at ``size``, building it if absent.

    Images that are missing or cannot be decoded are marked not ok and reported in one
    warning with their counts; with ``strict`` the first one raises :class:`DataError`.
    """
    root = Path(root)
    cache_dir = Path(cache_dir)
    key = cache_key(root, paths, size)
    data_path = cache_dir / f"images-{size}-{key}.u8"
    meta_path = cache_dir / f"images-{size}-{key}.npz"
    shape = (len(paths), size, size, 3)  # stored (H, W, 3), see the module docstring
    if meta_path.is_file() and data_path.is_file() and data_path.stat().st_size == int(np.prod(shape)):
        with np.load(meta_path) as meta:
            ok, sizes = meta["ok"], meta["sizes"]
        if not strict or ok.all():
            log.info("%s: reusing image cache %s", what, data_path)
            _report(what, paths, ok, None, strict=False, root=root)
            return CachedImages(_channels_first(np.memmap(data_path, np.uint8, "c", shape=shape)), ok, sizes,
                                data_path)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp_path = data_path.with_suffix(".u8.tmp")
        array = np.memmap(tmp_path, np.uint8, "w+", shape=shape) if len(paths) else np.zeros(shape, np.uint8)
    except OSError as exc:
        raise DataError(f"cannot write the image cache in {cache_dir}: {exc.strerror or exc}; "
                        "set data.cache_dir to a writable folder") from None
    ok = np.zeros(len(paths), dtype=bool)
    sizes = np.zeros((len(paths), 2), dtype=np.int32)
    missing = np.zeros(len(paths), dtype=bool)
    starts = range(0, len(paths), CHUNK)
    workers = min(workers or usable_cores(), len(starts)) or 1
    log.info("%s: decoding %d images to %dx%d into %s (%d processes)", what, len(paths), size, size, data_path,
             workers)
    try:
        if len(paths):
            array.flush()  # the workers write through their own maps of the file
        jobs = [(str(root), list(paths[s:s + CHUNK]), s, size, str(tmp_path), shape) for s in starts]
        pool = ProcessPoolExecutor(workers, mp_context=_process_context()) if workers > 1 else None
        try:
            results = pool.map(_decode_chunk, jobs) if pool is not None else map(_decode_chunk, jobs)
            for start, (chunk_ok, chunk_sizes, chunk_missing) in zip(starts, results):
                stop = start + len(chunk_ok)
                ok[start:stop], sizes[start:stop], missing[start:stop] = chunk_ok, chunk_sizes, chunk_missing
                if strict and not ok[:stop].all():
                    _report(what, paths, ok[:stop], missing[:stop], strict=True, root=root)
                if progress is not None:
                    progress(stop, len(paths))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        _report(what, paths, ok, missing, strict=strict, root=root)
    except BaseException:
        if len(paths):
            del array
            tmp_path.unlink(missing_ok=True)
        raise
    if len(paths) and not ok.any():  # nothing usable: keep no cache, the caller reports it
        del array
        tmp_path.unlink(missing_ok=True)
    elif len(paths):
        array.flush()
        del array
        os.replace(tmp_path, data_path)
        _save_npz(meta_path, ok=ok, sizes=sizes)
        return CachedImages(_channels_first(np.memmap(data_path, np.uint8, "c", shape=shape)), ok, sizes, data_path)
    return CachedImages(np.zeros((0, 3, size, size), np.uint8), ok, sizes, data_path)


def _process_context() -> multiprocessing.context.BaseContext:
    """``fork`` where there is one (the workers need no fresh interpreter), else ``spawn``."""
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def _decode_chunk(job: tuple[str, list[str], int, int, str, tuple[int, ...]]) -> tuple[np.ndarray, ...]:
    """Decode ``paths`` into rows ``start..`` of the cache file; returns (ok, sizes, missing)."""
    root, paths, start, size, file, shape = job
    ok = np.zeros(len(paths), dtype=bool)
    sizes = np.zeros((len(paths), 2), dtype=np.int32)
    missing = np.zeros(len(paths), dtype=bool)
    array = np.memmap(file, np.uint8, "r+", shape=shape)
    for i, rel in enumerate(paths):
        path = Path(root) / rel
        if not path.is_file():
            missing[i] = True
            continue
        try:
            pixels, original = decode_image(path, size)
        except DECODE_ERRORS:
            continue
        array[start + i] = pixels.transpose(1, 2, 0)  # back to Pillow's order: a contiguous copy
        sizes[i] = original
        ok[i] = True
    array.flush()
    del array
    return ok, sizes, missing


def _channels_first(stored: np.ndarray) -> np.ndarray:
    """The (N, 3, S, S) view of a cache stored (N, S, S, 3)."""
    return stored.transpose(0, 3, 1, 2)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    from pamc.engine.checkpoint import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def _report(what: str, paths: Sequence[str], ok: np.ndarray, missing: np.ndarray | None, *,
            strict: bool, root: Path) -> None:
    bad = np.flatnonzero(~ok)
    if not bad.size:
        return
    if missing is None:
        log.warning("%s: %d of %d images are missing or unreadable and were skipped (cached result)",
                    what, bad.size, len(paths))
        return
    absent = np.flatnonzero(missing)
    broken = np.setdiff1d(bad, absent)
    if strict:
        first = bad[0]
        reason = "is missing" if missing[first] else "cannot be decoded (corrupt or truncated)"
        raise DataError(f"{what}: image {root / paths[first]} {reason} (strict mode)")
    parts = []
    if absent.size:
        parts.append(f"{absent.size} missing (first: {paths[absent[0]]})")
    if broken.size:
        parts.append(f"{broken.size} corrupt or truncated (first: {paths[broken[0]]})")
    log.warning("%s: skipped %d of %d images: %s", what, bad.size, len(paths), ", ".join(parts))
