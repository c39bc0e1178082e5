"""Training throughput (images/s) against intra-op threads, quiet and beside one busy process.

    PYTHONPATH=src python benchmarks/bench_threads.py                  # both scales, 1 and 2 threads
    PYTHONPATH=src python benchmarks/bench_threads.py --repeats 5 --json threads.json

Two scales: the demo's (``smallcnn``, 48 px, batch 32, the demo's config) and ResNet-18 at
224 px (batch 8). Each measurement is a fresh Python process that builds the CAM classifier
from a pamc config, sets ``torch.set_num_threads(t)`` and times Adam steps (forward, AN loss,
backward, step) on fixed random batches for ``--seconds`` (at least two steps) after warm-up
steps. For the ``busy`` condition the benchmark starts one CPU-bound process of its own (a
Python busy loop, ``competitor.py``) before the measurement and kills it after. All (scale,
threads, condition) cells run interleaved, repeat by repeat, in one run; the script prints
each cell's median images/s, the ratio of 2 threads to 1, and the load average (1 min) before
and after every cell, so a machine that was not quiet shows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from competitor import load_while

SCALES = {  # name: (backbone, image size, batch size, warm-up steps)
    "demo": ("smallcnn", 48, 32, 3),
    "resnet18-224": ("resnet18", 224, 8, 1),
}
MIN_STEPS = 2


def measure(scale: str, threads: int, seconds: float) -> float:
    """Images/s of training steps at ``scale`` on ``threads`` intra-op threads (this process):
    steps until ``seconds`` have passed (at least ``MIN_STEPS``), after the warm-up."""
    import torch

    from pamc.config import replace
    from pamc.demo import demo_config
    from pamc.engine import make_model
    from pamc.losses import create_loss

    torch.set_num_threads(threads)
    backbone, size, batch, warmup = SCALES[scale]
    cfg = replace(demo_config(), model__backbone=backbone)
    num_classes = cfg.data.synthetic.num_classes
    torch.manual_seed(0)
    model = make_model(cfg, num_classes).train()
    criterion = create_loss("an")
    optimizer = torch.optim.Adam(model.param_groups(cfg.train.lr, cfg.train.head_lr_mult), lr=cfg.train.lr)
    images = torch.randn(batch, 3, size, size)
    targets = (torch.rand(batch, num_classes) < 0.2).float()
    index = torch.arange(batch)

    def step() -> None:
        loss = criterion(model(images), targets, index).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start, steps = time.perf_counter(), 0
    while steps < MIN_STEPS or time.perf_counter() - start < seconds:
        step()
        steps += 1
    return batch * steps / (time.perf_counter() - start)


def run_cell(scale: str, threads: int, busy: bool, seconds: float) -> tuple[float, float, float]:
    """(images/s, load before, load after) of one measurement in a fresh process."""
    with load_while(busy) as loads:
        out = subprocess.run([sys.executable, __file__, "--worker", scale, str(threads), str(seconds)],
                             check=True, capture_output=True, text=True, env=os.environ)
    return float(out.stdout.strip().splitlines()[-1]), *loads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default=",".join(SCALES))
    parser.add_argument("--threads", default="1,2", help="comma list of intra-op thread counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    parser.add_argument("--worker", nargs=3, metavar=("SCALE", "THREADS", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(measure(args.worker[0], int(args.worker[1]), float(args.worker[2])))
        return 0
    scales = args.scales.split(",")
    thread_counts = [int(t) for t in args.threads.split(",")]
    cells = [(s, t, busy) for s in scales for busy in (False, True) for t in thread_counts]
    rates: dict[tuple, list[float]] = {c: [] for c in cells}
    loads: dict[tuple, list[tuple[float, float]]] = {c: [] for c in cells}
    print(f"usable cores {len(os.sched_getaffinity(0))}; {args.repeats} repeats; load average (1 min) "
          f"at start {os.getloadavg()[0]:.1f}")
    for rep in range(args.repeats):
        for cell in cells:
            rate, before, after = run_cell(*cell, args.seconds)
            rates[cell].append(rate)
            loads[cell].append((before, after))
            print(f"  repeat {rep}: {cell[0]:>13} {cell[1]} thread(s) {'busy ' if cell[2] else 'quiet'}: "
                  f"{rate:8.3g} img/s (load {before:.1f} -> {after:.1f})", flush=True)
    print()
    print("| scale | condition | " + " | ".join(f"{t} thread{'s' if t > 1 else ''} img/s" for t in thread_counts)
          + (f" | {thread_counts[-1]}/{thread_counts[0]} |" if len(thread_counts) > 1 else " |") + " load avg (min-max) |")
    print("|---|---|" + "---|" * len(thread_counts) + ("---|" if len(thread_counts) > 1 else "") + "---|")
    table = []
    for s in scales:
        for busy in (False, True):
            med = [statistics.median(rates[(s, t, busy)]) for t in thread_counts]
            seen = [x for t in thread_counts for pair in loads[(s, t, busy)] for x in pair]
            ratio = f" | {med[-1] / med[0]:.2f}x" if len(med) > 1 else ""
            print(f"| {s} | {'1 busy process' if busy else 'quiet'} | " + " | ".join(f"{m:.3g}" for m in med)
                  + f"{ratio} | {min(seen):.1f}-{max(seen):.1f} |")
            table.append({"scale": s, "busy": busy, "median_images_per_s": dict(zip(thread_counts, med)),
                          "runs": {t: rates[(s, t, busy)] for t in thread_counts},
                          "load_min": min(seen), "load_max": max(seen)})
    if args.json:
        args.json.write_text(json.dumps({"repeats": args.repeats, "cells": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
