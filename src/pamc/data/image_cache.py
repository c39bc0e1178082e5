"""The image cache: every image decoded and resized once, stored as uint8 in a memory map.

Decoding is done with Pillow: ``Image.open(path).convert("RGB").resize((S, S), BILINEAR)``,
a direct resize to S x S that does not keep the aspect ratio (Pillow's bilinear filter widens
its support when downscaling, so it also antialiases). :func:`decode_image` is that decode path
and the cache stores exactly its output, so reading from the cache gives the same uint8 pixels.

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
import os
import tempfile
import warnings
from contextlib import contextmanager
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pamc.config import DEFAULT_MAX_IMAGE_PIXELS
from pamc.errors import DataError, OutputError

log = logging.getLogger(__name__)

CACHE_FORMAT = "2"  # 2: images stored (H, W, 3); 1 stored (3, H, W)
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# pamc checks its own pixel budget (data.max_image_pixels) from the header, before decoding
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageTooLarge(ValueError):
    """An image whose header gives more pixels than the budget; it is not decoded."""


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """``Image.open(path)`` (header only), refused with :class:`ImageTooLarge` over ``max_pixels``."""
    try:
        im = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"image {path} is over the pixel budget of {max_pixels}") from None
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise ImageTooLarge(f"image {path} is {width} x {height} = {width * height} pixels, over the pixel "
                            f"budget of {max_pixels} (data.max_image_pixels)")
    return im


def to_rgb8(im: Image.Image) -> Image.Image:
    """``im`` as 8-bit RGB, high bit depths rescaled rather than clipped.

    16-bit images (``I;16*``, and ``I`` whose values fit 16 bits) map 0..65535 onto 0..255
    (``round(v * 255 / 65535)``); float images (``F``) in [0, 1] are scaled by 255, other float
    ranges are min-max scaled (NaN becomes 0). Every other mode is Pillow's ``convert("RGB")``.
    """
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.int64)
        if im.mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
            a = _min_max(a.astype(np.float64))
        else:
            a = (np.clip(a, 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(a.astype(np.uint8)).convert("RGB")  # 2-D uint8: mode L
    if im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if a.size and (a.min() < 0 or a.max() > 1):
            a = _min_max(a)
        else:
            a = np.rint(a * 255)
        return Image.fromarray(a.astype(np.uint8)).convert("RGB")  # 2-D uint8: mode L
    return im.convert("RGB")


def _min_max(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return np.rint((a - lo) * (255 / (hi - lo))) if hi > lo else np.zeros_like(a)


def decode_image(path: str | Path, size: int,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """The reference decode path: (3, size, size) uint8 and the original (width, height).

    The pixels are a channel-first view of Pillow's (size, size, 3) array (no copy). An image
    over ``max_pixels`` (by its header) raises :class:`ImageTooLarge` before it is decoded.
    """
    with open_image(path, max_pixels) as im:
        rgb = to_rgb8(im)
    original = rgb.size
    resized = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(resized).transpose(2, 0, 1), original


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
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    workers: int | None = None,
    what: str = "images",
    progress: Callable[[int, int], None] | None = None,
) -> CachedImages:
    """Open the cache of ``paths`` (relative to ``root``) at ``size``, building it if absent.

    Images that are missing, cannot be decoded or are over ``max_pixels`` are marked not ok and
    reported in one warning with their counts; with ``strict`` the first one raises
    :class:`DataError`. The build holds a lock file next to the cache: a second process building
    the same cache waits for it, then reuses the finished cache. The data file is allocated in
    full before it is memory-mapped, so a full disk is an :class:`OutputError`, never SIGBUS.
    """
    root = Path(root)
    cache_dir = Path(cache_dir)
    key = cache_key(root, paths, size)
    data_path = cache_dir / f"images-{size}-{key}.u8"
    meta_path = cache_dir / f"images-{size}-{key}.npz"
    shape = (len(paths), size, size, 3)  # stored (H, W, 3), see the module docstring
    reused = _reuse(meta_path, data_path, shape, strict, what, paths, root)
    if reused is not None:
        return reused
    from pamc.engine.checkpoint import make_dirs

    make_dirs(cache_dir)
    with _build_lock(data_path.with_suffix(".lock"), what):
        reused = _reuse(meta_path, data_path, shape, strict, what, paths, root)
        if reused is not None:
            return reused
        return _build(root, paths, size, data_path, meta_path, shape, strict=strict, max_pixels=max_pixels,
                      workers=workers, what=what, progress=progress)


def _reuse(meta_path: Path, data_path: Path, shape: tuple[int, ...], strict: bool, what: str,
           paths: Sequence[str], root: Path) -> CachedImages | None:
    """The complete cache at ``data_path`` (its ``.npz`` is written last), or None."""
    if meta_path.is_file() and data_path.is_file() and data_path.stat().st_size == int(np.prod(shape)):
        with np.load(meta_path) as meta:
            ok, sizes = meta["ok"], meta["sizes"]
        if not strict or ok.all():
            log.info("%s: reusing image cache %s", what, data_path)
            _report(what, paths, ok, None, None, strict=False, root=root)
            return CachedImages(_channels_first(np.memmap(data_path, np.uint8, "c", shape=shape)), ok, sizes,
                                data_path)
    return None


@contextmanager
def _build_lock(path: Path, what: str):
    """Hold the OS lock ``path`` (released by a crash too), waiting for another holder once."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("%s: another process is building this image cache (%s); waiting for it", what, path)
            lock.acquire()
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()


def _allocate(tmp_path: Path, nbytes: int) -> None:
    """Reserve ``nbytes`` on disk for ``tmp_path`` (ENOSPC here, not SIGBUS in the memory map)."""
    with open(tmp_path, "r+b") as f:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(f.fileno(), 0, nbytes)
        else:  # no fallocate: write the zeros with ordinary writes
            block = bytes(1 << 20)
            for start in range(0, nbytes, len(block)):
                f.write(block[: min(len(block), nbytes - start)])


def _build(root: Path, paths: Sequence[str], size: int, data_path: Path, meta_path: Path,
           shape: tuple[int, ...], *, strict: bool, max_pixels: int, workers: int | None, what: str,
           progress: Callable[[int, int], None] | None) -> CachedImages:
    array = np.zeros(shape, np.uint8)
    tmp_path: Path | None = None
    if len(paths):
        try:
            fd, name = tempfile.mkstemp(prefix=f".{data_path.name}.", suffix=".tmp", dir=data_path.parent)
            os.close(fd)
            tmp_path = Path(name)
            _allocate(tmp_path, int(np.prod(shape)))
            array = np.memmap(tmp_path, np.uint8, "r+", shape=shape)
        except OSError as exc:
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)
            raise OutputError(f"cannot write {data_path}: {exc.strerror or exc}; "
                              "set data.cache_dir to a writable folder") from None
    ok = np.zeros(len(paths), dtype=bool)
    sizes = np.zeros((len(paths), 2), dtype=np.int32)
    missing = np.zeros(len(paths), dtype=bool)
    too_large = np.zeros(len(paths), dtype=bool)

    def work(i: int) -> None:
        file = root / paths[i]
        if not file.is_file():
            missing[i] = True
            return
        try:
            pixels, original = decode_image(file, size, max_pixels)
        except ImageTooLarge:
            too_large[i] = True
            return
        except _DECODE_ERRORS:
            return
        array[i] = pixels.transpose(1, 2, 0)  # back to Pillow's order: a contiguous copy
        sizes[i] = original
        ok[i] = True

    log.info("%s: decoding %d images to %dx%d into %s", what, len(paths), size, size, data_path)
    workers = workers or min(8, os.cpu_count() or 1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(paths), 1024):
                stop = min(start + 1024, len(paths))
                list(pool.map(work, range(start, stop)))
                if strict and not ok[:stop].all():
                    _report(what, paths, ok[:stop], missing[:stop], too_large[:stop], strict=True, root=root,
                            max_pixels=max_pixels)
                if progress is not None:
                    progress(stop, len(paths))
        _report(what, paths, ok, missing, too_large, strict=strict, root=root, max_pixels=max_pixels)
        if tmp_path is not None and ok.any():
            array.flush()
            del array
            os.replace(tmp_path, data_path)
            tmp_path = None
            _save_npz(meta_path, ok=ok, sizes=sizes)
            return CachedImages(_channels_first(np.memmap(data_path, np.uint8, "c", shape=shape)), ok, sizes,
                                data_path)
    except OSError as exc:
        raise OutputError(f"cannot write {data_path}: {exc.strerror or exc}") from None
    finally:
        if tmp_path is not None:  # failed, interrupted or nothing usable: keep no cache
            del array
            tmp_path.unlink(missing_ok=True)
    return CachedImages(np.zeros((0, 3, size, size), np.uint8), ok, sizes, data_path)


def _channels_first(stored: np.ndarray) -> np.ndarray:
    """The (N, 3, S, S) view of a cache stored (N, S, S, 3)."""
    return stored.transpose(0, 3, 1, 2)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    from pamc.engine.checkpoint import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def _report(what: str, paths: Sequence[str], ok: np.ndarray, missing: np.ndarray | None,
            too_large: np.ndarray | None = None, *, strict: bool, root: Path,
            max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    bad = np.flatnonzero(~ok)
    if not bad.size:
        return
    if missing is None:
        log.warning("%s: %d of %d images are missing, unreadable or too large and were skipped (cached result)",
                    what, bad.size, len(paths))
        return
    large = np.zeros(len(paths), dtype=bool) if too_large is None else too_large
    absent = np.flatnonzero(missing)
    over = np.flatnonzero(large)
    broken = np.setdiff1d(bad, np.union1d(absent, over))
    if strict:
        first = bad[0]
        reason = ("is missing" if missing[first] else
                  f"is over the pixel budget of {max_pixels} (data.max_image_pixels)" if large[first] else
                  "cannot be decoded (corrupt or truncated)")
        raise DataError(f"{what}: image {root / paths[first]} {reason} (strict mode)")
    parts = []
    if absent.size:
        parts.append(f"{absent.size} missing (first: {paths[absent[0]]})")
    if broken.size:
        parts.append(f"{broken.size} corrupt or truncated (first: {paths[broken[0]]})")
    if over.size:
        parts.append(f"{over.size} over the pixel budget of {max_pixels} (first: {paths[over[0]]})")
    log.warning("%s: skipped %d of %d images: %s", what, bad.size, len(paths), ", ".join(parts))
