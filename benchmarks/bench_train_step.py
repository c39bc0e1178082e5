"""Training-step throughput (images/s): a reference-style fp32 loop against pamc's engine.

    PYTHONPATH=src python benchmarks/bench_train_step.py                 # resnet18, 224 px, batch 16
    PYTHONPATH=src python benchmarks/bench_train_step.py --backbone resnet50 --image-size 448 --batch-size 8

Both arms train the same CAM classifier (same backbone, initial weights, resolution, batch
size, Adam, assume-negative BCE) on the same JPEG files, in one process, interleaved repeat by
repeat; the script prints each arm's median images/s and its ratio to the reference.

* ``reference``: what the public implementations do: a ``torch.utils.data.DataLoader`` over a
  Dataset that opens each JPEG with PIL, resizes it, flips it and normalises it per sample;
  default collation into a contiguous fp32 batch; fp32 forward/backward; no compile.
* ``pamc``: pamc's defaults (``TrainConfig()``: the uint8 image cache decoded once
  (``open_or_build_cache``), ArrayLoader batches gathered by index, DeviceTransform converting,
  flipping and normalising the whole batch into one reused channels_last buffer as ``fit``
  sets it up, channels_last model, ``amp=auto`` which is fp32 on CPU) through
  ``train_one_epoch``.
* ``pamc-bf16``: the same with ``train.amp=bf16`` (fast on CPUs with AVX512-BF16/AMX).
* ``pamc-nchw``: pamc's data path with ``channels_last=false``, to separate the two effects.

The one-off cost of building pamc's uint8 cache is timed and printed separately. Besides
wall-clock images/s the script reports images per CPU-second of the process
(``time.process_time``), which is far less disturbed by other load on a shared machine; with
``--threads 1`` the two measure the same work.
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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pamc.config import TrainConfig
from pamc.data import ArrayLoader, DeviceTransform, LabelStore, Split, make_scenes
from pamc.data.image_cache import ImageRows, open_or_build_cache
from pamc.data.loader import IMAGENET_MEAN, IMAGENET_STD
from pamc.engine import train_one_epoch
from pamc.engine.precision import Precision
from pamc.losses import create_loss
from pamc.models import build_model

NUM_CLASSES = 20


class JpegDataset(torch.utils.data.Dataset):
    """Reference-style dataset: PIL decode, resize, flip and normalise, one sample at a time."""

    def __init__(self, files: list[Path], labels: np.ndarray, size: int, seed: int) -> None:
        self.files, self.labels, self.size = files, labels, size
        self.rng = np.random.default_rng(seed)
        self.mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.files[i]) as im:
            im = im.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        if self.rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        x = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
        x = (x - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy((self.labels[i] == 1).astype(np.float32))


def write_jpegs(folder: Path, count: int, width: int, height: int, seed: int) -> tuple[list[Path], np.ndarray]:
    scenes = make_scenes(count, num_classes=10, image_size=64, seed=seed)
    files = []
    for i, img in enumerate(scenes.images):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(img.transpose(1, 2, 0)).resize((width, height), Image.BILINEAR).save(path, quality=90)
        files.append(path)
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((count, NUM_CLASSES)) < 0.1, 1, 0).astype(np.int8)
    labels[np.arange(count), rng.integers(0, NUM_CLASSES, count)] = 1
    return files, labels


def run_reference(model: torch.nn.Module, dataset: JpegDataset, batch_size: int, steps: int, warmup: int
                  ) -> tuple[float, float]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    model.train()
    seen, start, cpu = 0, 0.0, 0.0
    for step, (x, y) in enumerate(loader):
        if step == warmup:
            start, cpu = time.perf_counter(), time.process_time()
        logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            seen += x.shape[0]
        if step + 1 == warmup + steps:
            break
    return seen / (time.perf_counter() - start), seen / (time.process_time() - cpu)


def run_pamc(model: torch.nn.Module, split: Split, cfg: TrainConfig, batch_size: int, steps: int, warmup: int
             ) -> tuple[float, float]:
    device = torch.device("cpu")
    precision = Precision.from_config(cfg, device)
    precision.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    criterion = create_loss("an")
    transform = DeviceTransform(device, generator=torch.Generator().manual_seed(0),  # as pamc.engine.trainer.fit
                                channels_last=precision.channels_last, reuse_output=True)
    n = batch_size
    warm = ArrayLoader(split, n, shuffle=True, seed=1, indices=np.arange(warmup * n))
    timed = ArrayLoader(split, n, shuffle=True, seed=2, indices=np.arange(steps * n))
    train_one_epoch(model, criterion, optimizer, warm, transform, 1, precision=precision)
    start, cpu = time.perf_counter(), time.process_time()
    stats = train_one_epoch(model, criterion, optimizer, timed, transform, 1, precision=precision)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert np.isfinite(stats["train_loss"])
    return steps * n / elapsed, steps * n / cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--source-size", default="640x480", help="JPEG size on disk, WxH")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arms", default="reference,pamc,pamc-bf16,pamc-nchw")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    width, height = (int(v) for v in args.source_size.split("x"))
    arms = args.arms.split(",")
    count = args.batch_size * (args.steps + args.warmup)
    configs = {
        "pamc": TrainConfig(),
        "pamc-bf16": TrainConfig(amp="bf16"),
        "pamc-nchw": TrainConfig(channels_last=False),
    }
    print(f"{args.backbone} at {args.image_size} px, batch {args.batch_size}, {args.steps} timed steps x "
          f"{args.repeats} repeats, JPEGs {width}x{height}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        files, labels = write_jpegs(Path(tmp), count, width, height, seed=0)
        start = time.perf_counter()
        cache = open_or_build_cache(tmp, [f.name for f in files], args.image_size, Path(tmp) / "cache", workers=1)
        cache_s = time.perf_counter() - start
        print(f"pamc uint8 cache: {count} images decoded once in {cache_s:.2f} s "
              f"({count / cache_s:.0f} images/s, not counted below)")
        split = Split(ImageRows(cache.array, np.arange(count)), None, LabelStore(labels))
        dataset = JpegDataset(files, labels, args.image_size, seed=0)
        torch.manual_seed(0)
        initial = build_model(args.backbone, NUM_CLASSES).state_dict()
        rates: dict[str, list[float]] = {arm: [] for arm in arms}
        cpu_rates: dict[str, list[float]] = {arm: [] for arm in arms}
        for rep in range(args.repeats):
            for arm in arms:
                model = build_model(args.backbone, NUM_CLASSES)
                model.load_state_dict(initial)
                if arm == "reference":
                    rate, cpu_rate = run_reference(model, dataset, args.batch_size, args.steps, args.warmup)
                else:
                    rate, cpu_rate = run_pamc(model, split, configs[arm], args.batch_size, args.steps, args.warmup)
                rates[arm].append(rate)
                cpu_rates[arm].append(cpu_rate)
                print(f"  repeat {rep + 1} {arm:10s} {rate:7.2f} images/s  {cpu_rate:7.2f} images/CPU-s", flush=True)
    ref = statistics.median(rates["reference"]) if "reference" in rates else None
    cpu_ref = statistics.median(cpu_rates["reference"]) if "reference" in rates else None
    print(f"{'arm':10s} {'median img/s':>12s} {'ratio':>6s} {'median img/CPU-s':>16s} {'ratio':>6s}")
    summary = {}
    for arm in arms:
        med, cpu_med = statistics.median(rates[arm]), statistics.median(cpu_rates[arm])
        ratio = med / ref if ref else float("nan")
        cpu_ratio = cpu_med / cpu_ref if cpu_ref else float("nan")
        summary[arm] = {"images_per_s": rates[arm], "median": med, "ratio": ratio,
                        "images_per_cpu_s": cpu_rates[arm], "cpu_median": cpu_med, "cpu_ratio": cpu_ratio}
        print(f"{arm:10s} {med:12.2f} {ratio:5.2f}x {cpu_med:16.2f} {cpu_ratio:5.2f}x")
    if args.json is not None:
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "cache_seconds": cache_s,
                  "arms": summary, "torch": torch.__version__, "cpu_count": os.cpu_count()}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
