"""GPU throughput: ResNet-50 CAM classifier training and evaluation at 448 px (images/s).

    PYTHONPATH=src python benchmarks/bench_gpu.py                      # needs CUDA
    PYTHONPATH=src python benchmarks/bench_gpu.py --batch-size 64 --compile
    PYTHONPATH=src python benchmarks/bench_gpu.py --device cpu --backbone smallcnn --image-size 64  # smoke run

Arms, interleaved repeat by repeat in one process: ``fp32`` (amp off, NCHW) and ``pamc``
(the defaults on CUDA: bf16 autocast, channels_last), plus ``pamc+compile`` with
``--compile``. Images are random uint8 held in host memory as pamc's cache holds them ((H, W, 3)
per image, read through ``ImageRows``); each
step copies the uint8 batch to the GPU and runs pamc's ``train_one_epoch`` / ``evaluate``.
Prints the median images/s of each arm and its ratio to fp32. On a machine without CUDA it
exits with a message (exit code 1) unless ``--device cpu`` is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pamc.config import TrainConfig
from pamc.data import ArrayLoader, DeviceTransform, LabelStore, Split
from pamc.data.image_cache import ImageRows
from pamc.engine import evaluate, train_one_epoch
from pamc.engine.precision import Precision, maybe_compile
from pamc.losses import create_loss
from pamc.models import build_model

NUM_CLASSES = 80


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(arm: str, cfg: TrainConfig, split: Split, initial: dict, args: argparse.Namespace,
            device: torch.device) -> tuple[float, float]:
    model = build_model(args.backbone, NUM_CLASSES)
    model.load_state_dict(initial)
    model.to(device)
    precision = Precision.from_config(cfg, device)
    precision.prepare_model(model)
    train_model = maybe_compile(model, cfg.compile)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    criterion = create_loss("an").to(device)
    transform = DeviceTransform(device, generator=torch.Generator().manual_seed(0),  # as pamc.engine.trainer.fit
                                channels_last=precision.channels_last, reuse_output=True)
    bs = args.batch_size
    warm = ArrayLoader(split, bs, shuffle=True, seed=1, indices=np.arange(args.warmup * bs))
    timed = ArrayLoader(split, bs, shuffle=True, seed=2, indices=np.arange(args.steps * bs))
    train_one_epoch(train_model, criterion, optimizer, warm, transform, 1, precision=precision)
    sync(device)
    start = time.perf_counter()
    train_one_epoch(train_model, criterion, optimizer, timed, transform, 1, precision=precision)
    sync(device)
    train_rate = args.steps * bs / (time.perf_counter() - start)

    eval_loader = ArrayLoader(split, args.eval_batch_size)
    evaluate(model, ArrayLoader(split, args.eval_batch_size, indices=np.arange(args.eval_batch_size)),
             transform, precision=precision)
    sync(device)
    start = time.perf_counter()
    result = evaluate(model, eval_loader, transform, precision=precision)
    sync(device)
    eval_rate = result["num_samples"] / (time.perf_counter() - start)
    return train_rate, eval_rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time pamc defaults + torch.compile")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu.py: no CUDA device is available (torch.cuda.is_available() is False); "
                 "run it on a machine with an NVIDIA GPU, or pass --device cpu for a smoke run")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "cpu"
    arms = {"fp32": TrainConfig(amp="off", channels_last=False), "pamc": TrainConfig()}
    if args.compile:
        arms["pamc+compile"] = TrainConfig(compile=True)
    n = max(args.batch_size * max(args.steps, args.warmup), args.eval_batch_size * 4)
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, (n, args.image_size, args.image_size, 3), dtype=np.uint8)  # the cache's (H, W, 3)
    images = ImageRows(stored.transpose(0, 3, 1, 2), np.arange(n))
    labels = np.where(rng.random((n, NUM_CLASSES)) < 0.05, 1, -1).astype(np.int8)
    split = Split(images, labels, LabelStore(np.where(labels == 1, 1, 0).astype(np.int8)))
    torch.manual_seed(0)
    initial = build_model(args.backbone, NUM_CLASSES).state_dict()
    print(f"{args.backbone} at {args.image_size} px on {name}, train batch {args.batch_size}, eval batch "
          f"{args.eval_batch_size}, {args.steps} timed steps, {args.repeats} repeats, torch {torch.__version__}")
    rates: dict[str, dict[str, list[float]]] = {arm: {"train": [], "eval": []} for arm in arms}
    for rep in range(args.repeats):
        for arm, cfg in arms.items():
            tr, ev = measure(arm, cfg, split, initial, args, device)
            rates[arm]["train"].append(tr)
            rates[arm]["eval"].append(ev)
            print(f"  repeat {rep + 1} {arm:13s} train {tr:8.1f} images/s  eval {ev:8.1f} images/s", flush=True)
    base = {k: statistics.median(v) for k, v in rates["fp32"].items()}
    print(f"{'arm':13s} {'train img/s':>12s} {'ratio':>6s} {'eval img/s':>12s} {'ratio':>6s}")
    for arm in arms:
        tr, ev = statistics.median(rates[arm]["train"]), statistics.median(rates[arm]["eval"])
        print(f"{arm:13s} {tr:12.1f} {tr / base['train']:5.2f}x {ev:12.1f} {ev / base['eval']:5.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps({"device": name, "args": vars(args) | {"json": str(args.json)},
                                         "rates": rates}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
