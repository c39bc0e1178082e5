"""Input pipeline speed: per-sample JPEG decoding against the image cache, side by side.

    python benchmarks/bench_input.py                     # 300 JPEGs of 500x375, 448x448 inputs
    python benchmarks/bench_input.py --n 500 --repeats 7 --device cuda --json out.json

Writes --n photo-size JPEGs (500x375, colour fields with fine noise, quality 90, about 90 kB
each like VOC's photos; the decode time hardly depends on the content: 3.0 to 3.5 ms per image
from 52 to 96 kB) into a temporary folder, then measures in one process, one thread (so
images/s is per core):

- **decode**: the reference implementations' per-sample path, torchvision's
  ``Resize((448, 448))``, ``RandomHorizontalFlip``, ``ToTensor`` and ``Normalize`` written out
  with Pillow and torch (torchvision is not needed): Pillow open, RGB, bilinear resize, flip of
  the Pillow image, HWC uint8 -> CHW float / 255, then ``(x - mean) / std`` on a copy;
- **cache**: the image cache (built once, its build time is reported), read by the training
  loader (``ArrayLoader`` over ``ImageRows``, shuffled batches of --batch) and transformed by
  ``DeviceTransform`` (flip + normalise) on the CPU exactly as the trainer sets it up: output
  in channels_last (the default memory format) into one reused buffer;
- **cache-fresh**: the same, but with a freshly allocated NCHW output per batch (the
  trainer's transform before the reused buffer), to show what the buffer saves;
- **cache-gather**: the same reads without the transform, i.e. the CPU cost per image when
  the flip and normalisation run on the accelerator, as in training on a GPU.

Every pass covers all images; medians over --repeats and the ratios are printed. The script
also checks that the cached pixels equal the decode path exactly (exit code 1 otherwise).

Then the **cache build** itself, on --build-n JPEGs of 500x375 to 448 px and of 640x480 to
224 px, each build into a fresh folder, interleaved over --build-repeats:

- **today's**: the build before worker processes and draft mode, reproduced here: a thread
  pool of min(8, CPUs) threads, each image fully decoded, then resized;
- **draft, 1 process**: :func:`pamc.data.image_cache.open_or_build_cache` with one process
  (JPEG draft mode where the target is at most half the source, i.e. 640x480 -> 224 at 1/2);
- **draft, N processes**: the same with its default, one process per usable core.

Medians, the ratios against today's build, and the largest pixel difference (uint8 levels,
over every image) between the new cache and a full decode are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

from pamc.data import ArrayLoader, DeviceTransform, LabelStore, Split
from pamc.data.image_cache import ImageRows, decode_image, open_or_build_cache, usable_cores
from pamc.data.loader import IMAGENET_MEAN, IMAGENET_STD


def write_photos(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (500, 375)) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        low = rng.integers(0, 256, (24, 32, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(low).resize(size, Image.BICUBIC), dtype=np.int16)
        field = field + rng.integers(-24, 25, field.shape)
        name = f"photo_{i:04d}.jpg"
        Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).save(folder / name, quality=90)
        names.append(name)
    return names


def reference_sample(path: Path, size: int, flip: bool, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """One sample through the torchvision-style transform chain (see the module docstring)."""
    with Image.open(path) as im:
        pic = im.convert("RGB").resize((size, size), Image.BILINEAR)  # Resize((S, S))
    if flip:  # RandomHorizontalFlip, on the Pillow image
        pic = pic.transpose(Image.FLIP_LEFT_RIGHT)
    x = torch.from_numpy(np.array(pic, np.uint8, copy=True))  # ToTensor
    x = x.view(size, size, 3).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    return x.clone().sub_(mean).div_(std)  # Normalize(mean, std), not in place


def decode_path(folder: Path, names: list[str], size: int, rng: np.random.Generator) -> float:
    """Images/s of the per-sample path over all images in a random order."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    start = time.perf_counter()
    for i in rng.permutation(len(names)):
        x = reference_sample(folder / names[i], size, bool(rng.random() < 0.5), mean, std)
        assert x.shape == (3, size, size)
    return len(names) / (time.perf_counter() - start)


def max_input_difference(folder: Path, names: list[str], split: Split, size: int) -> float:
    """Largest |reference - cache path| over the first images, unflipped and flipped."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    count = min(8, len(names))
    transform = DeviceTransform(torch.device("cpu"), channels_last=True)
    cached = transform(split.images[torch.arange(count)])
    worst = 0.0
    for i in range(count):
        for flip in (False, True):
            want = reference_sample(folder / names[i], size, flip, mean, std)
            got = cached[i].flip(-1) if flip else cached[i]
            worst = max(worst, float((want - got).abs().max()))
    return worst


def cache_path(split: Split, batch: int, transform: DeviceTransform | None, seed: int) -> float:
    """Images/s of one shuffled pass; ``transform=None`` measures the gather alone."""
    loader = ArrayLoader(split, batch, shuffle=True, seed=seed)
    start = time.perf_counter()
    seen = 0
    for b in loader:
        x = transform(b.images, flip=True) if transform is not None else b.images
        if transform is not None and transform.device.type == "cuda":
            torch.cuda.synchronize()
        seen += x.shape[0]
    return seen / (time.perf_counter() - start)


def full_decode(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8 of a full decode (no draft) and a bilinear resize."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))


def todays_build(folder: Path, names: list[str], size: int, out: Path) -> None:
    """The cache build before this change: threads over full decodes into a memory map."""
    out.mkdir(parents=True)
    array = np.memmap(out / "images.u8", np.uint8, "w+", shape=(len(names), size, size, 3))

    def work(i: int) -> None:
        array[i] = full_decode(folder / names[i], size)

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(work, range(len(names))))
    array.flush()
    del array


def build_comparison(tmp: Path, n: int, repeats: int) -> dict:
    """Today's cache build against the new one (1 and N processes), see the module docstring."""
    out: dict = {}
    for (w, h), size in (((500, 375), 448), ((640, 480), 224)):
        folder = tmp / f"build-{w}x{h}"
        folder.mkdir()
        names = write_photos(folder, n, seed=7, size=(w, h))
        times: dict[str, list[float]] = {"today": [], "draft_1_process": [], "draft_n_processes": []}
        for r in range(repeats):
            for arm in times:
                target = tmp / f"cache-{w}-{arm}-{r}"
                start = time.perf_counter()
                if arm == "today":
                    todays_build(folder, names, size, target)
                else:
                    open_or_build_cache(folder, names, size, target, workers=1 if arm == "draft_1_process" else None)
                times[arm].append(time.perf_counter() - start)
        cached = open_or_build_cache(folder, names, size, tmp / f"cache-{w}-draft_n_processes-0")
        diff = max(int(np.abs(cached.array[i].transpose(1, 2, 0).astype(np.int16)
                              - full_decode(folder / names[i], size)).max()) for i in range(n))
        med = {arm: statistics.median(t) for arm, t in times.items()}
        out[f"{w}x{h}->{size}"] = {
            "seconds": times, "median_seconds": med,
            "ratio_draft_1_process": med["today"] / med["draft_1_process"],
            "ratio_draft_n_processes": med["today"] / med["draft_n_processes"],
            "max_pixel_difference_vs_full_decode": diff,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="where the cache path's transform runs")
    parser.add_argument("--build-n", type=int, default=1000, help="JPEGs per cache-build comparison")
    parser.add_argument("--build-repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        names = write_photos(folder, args.n)
        jpeg_kb = np.mean([(folder / n).stat().st_size for n in names]) / 1024

        start = time.perf_counter()
        cached = open_or_build_cache(folder, names, args.size, Path(tmp) / "cache", workers=1)
        build_rate = args.n / (time.perf_counter() - start)
        for i in range(args.n):  # the cache holds exactly the decode path's pixels
            if not np.array_equal(cached.array[i], decode_image(folder / names[i], args.size)[0]):
                print(f"FAIL: cached image {i} differs from the decode path")
                return 1
        split = Split(ImageRows(cached.array, np.arange(args.n)), None,
                      LabelStore(np.zeros((args.n, 1), dtype=np.int8)))
        input_diff = max_input_difference(folder, names, split, args.size)
        if input_diff > 1e-5 and 2 * args.size > 375:  # no draft decoding: the same pixels as a full decode
            print(f"FAIL: the cache path's inputs differ from the reference path's by {input_diff:.3g}")
            return 1
        device = torch.device(args.device)
        transform = DeviceTransform(device, generator=torch.Generator().manual_seed(0),
                                    channels_last=True, reuse_output=True)  # as in pamc.engine.trainer.fit
        fresh = DeviceTransform(device, generator=torch.Generator().manual_seed(0))
        cache_path(split, args.batch, transform, seed=99)  # warm-up (page cache, allocator)

        decode, cache, cache_fresh, gather = [], [], [], []
        for r in range(args.repeats):  # interleaved, so that all arms see the same machine load
            decode.append(decode_path(folder, names, args.size, rng))
            cache.append(cache_path(split, args.batch, transform, seed=r))
            cache_fresh.append(cache_path(split, args.batch, fresh, seed=r))
            gather.append(cache_path(split, args.batch, None, seed=r))
        builds = build_comparison(Path(tmp), args.build_n, args.build_repeats)

    med = {k: statistics.median(v) for k, v in (("decode", decode), ("cache", cache), ("cache_fresh", cache_fresh),
                                                ("cache_gather", gather))}
    result = {
        "n": args.n, "jpeg": "500x375", "mean_jpeg_kb": jpeg_kb, "size": args.size, "batch": args.batch,
        "repeats": args.repeats, "threads": 1, "device": args.device,
        "images_per_s": {"decode": decode, "cache": cache, "cache_fresh": cache_fresh, "cache_gather": gather},
        "median_images_per_s": med, "cache_build_images_per_s": build_rate,
        "max_abs_input_difference": input_diff,
        "ratio_cache_vs_decode": med["cache"] / med["decode"],
        "ratio_cache_fresh_vs_decode": med["cache_fresh"] / med["decode"],
        "ratio_gather_vs_decode": med["cache_gather"] / med["decode"],
        "cache_build": builds, "usable_cores": usable_cores(),
        "python": platform.python_version(), "torch": torch.__version__, "pillow": PIL.__version__,
    }
    print(f"{args.n} JPEGs 500x375 (mean {jpeg_kb:.0f} kB) -> {args.size}x{args.size}, 1 thread, "
          f"median of {args.repeats}, images/s per core")
    print(f"  decode path (decode+resize+flip+normalise, per sample):   {med['decode']:8.1f}")
    print(f"  cache path (loader + flip + normalise on {args.device}, as trained): {med['cache']:8.1f}   "
          f"ratio {result['ratio_cache_vs_decode']:.1f}x")
    print(f"  cache path, fresh NCHW output per batch:            {med['cache_fresh']:8.1f}   "
          f"ratio {result['ratio_cache_fresh_vs_decode']:.1f}x")
    print(f"  cache path, gather only (transform on the accelerator):  {med['cache_gather']:8.1f}   "
          f"ratio {result['ratio_gather_vs_decode']:.1f}x")
    print(f"  cache build (one-off decode into the memory map):        {build_rate:8.1f}")
    print(f"  max |reference input - cache input| (8 images, both flips): {input_diff:.2g}")
    print(f"cache build, {args.build_n} JPEGs, median of {args.build_repeats} (s); {usable_cores()} usable cores")
    print(f"  {'':16s} {'today':>8s} {'draft, 1 proc':>14s} {'draft, N procs':>15s}   max |diff| vs full decode")
    for key, b in builds.items():
        m = b["median_seconds"]
        print(f"  {key:16s} {m['today']:8.2f} {m['draft_1_process']:8.2f} ({b['ratio_draft_1_process']:.2f}x) "
              f"{m['draft_n_processes']:8.2f} ({b['ratio_draft_n_processes']:.2f}x)   "
              f"{b['max_pixel_difference_vs_full_decode']} levels")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
