"""Speed of pamc's mAP against a scikit-learn per-class loop, on the same random data.

    python benchmarks/bench_map.py                       # 20,000 x 5,000, 3 repeats each
    python benchmarks/bench_map.py --n 2000 --c 500 --repeats 5 --json bench.json

Scores are float32 uniform noise and labels are +1 with probability --positive-rate, else -1
(seeded). The arms run interleaved in the same process:

- ``pamc``: ``average_precision`` with its default threads (PyTorch's intra-op thread count);
- ``pamc-1t``: the same on one thread, a like-for-like comparison with the one-threaded
  reference;
- ``sklearn``: ``average_precision_score`` on each class column.

The script fails (exit code 1) if any pamc arm's per-class APs differ from scikit-learn's by
more than 1e-6.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

try:
    import sklearn
    from sklearn.metrics import average_precision_score
except ImportError:  # pragma: no cover - the reference is an optional test dependency
    sys.exit("bench_map.py needs scikit-learn: pip install 'pamc[test]'")

from pamc.evaluation import average_precision


def sklearn_per_class(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The usual reference: average_precision_score on each class column."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes without positives
        return np.array(
            [average_precision_score(labels[:, c] == 1, scores[:, c]) for c in range(scores.shape[1])]
        )


def timed_interleaved(
    fns: dict[str, Callable[[], np.ndarray]], repeats: int
) -> tuple[dict[str, np.ndarray], dict[str, list[float]], dict[str, list[float]]]:
    """Run each function ``repeats`` times, alternating, so both see the same machine load.

    Returns the results, the wall-clock seconds and the CPU seconds of this process (the
    latter is less sensitive to other processes competing for the cores).
    """
    results: dict[str, np.ndarray] = {}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            results[name] = fn()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return results, wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="samples")
    parser.add_argument("--c", type=int, default=5_000, help="classes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--positive-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    scores = rng.random((args.n, args.c), dtype=np.float32)
    labels = np.where(rng.random((args.n, args.c), dtype=np.float32) < args.positive_rate, 1, -1)
    labels = labels.astype(np.int8)
    positives = 100 * np.count_nonzero(labels == 1) / labels.size
    print(f"scores {scores.shape} float32, {positives:.2f}% positives, seed {args.seed}")

    threads = torch.get_num_threads()
    print(f"pamc threads: {threads} (torch.get_num_threads()), cpus: {os.cpu_count()}")
    results, seconds, cpu_seconds = timed_interleaved(
        {
            "pamc": lambda: average_precision(scores, labels),
            "pamc-1t": lambda: average_precision(scores, labels, threads=1),
            "sklearn": lambda: sklearn_per_class(scores, labels),
        },
        args.repeats,
    )
    ours, ours_s = results["pamc"], seconds["pamc"]
    reference, ref_s = results["sklearn"], seconds["sklearn"]
    for name, runs in seconds.items():
        runs_text = [round(s, 3) for s in runs]
        cpu_median = statistics.median(cpu_seconds[name])
        print(f"{name:8s} median {statistics.median(runs):8.3f} s (cpu {cpu_median:.3f} s)  runs {runs_text}")

    max_abs_diff = max(float(np.max(np.abs(results[arm] - reference))) if ours.size else 0.0
                       for arm in ("pamc", "pamc-1t"))
    ratio = statistics.median(ref_s) / statistics.median(ours_s)
    ratio_1t = statistics.median(ref_s) / statistics.median(seconds["pamc-1t"])
    cpu_ratio = statistics.median(cpu_seconds["sklearn"]) / statistics.median(cpu_seconds["pamc"])
    agree = max_abs_diff <= 1e-6
    print(f"speed-up {ratio:.1f}x with {threads} thread(s), {ratio_1t:.1f}x on 1 thread "
          f"(cpu time {cpu_ratio:.1f}x)   max |AP diff| {max_abs_diff:.3g}   agree: {agree}")
    print(f"mAP pamc {ours.mean():.6f}  sklearn {reference.mean():.6f}")

    if args.json is not None:
        record = {
            "n": args.n,
            "c": args.c,
            "repeats": args.repeats,
            "positive_rate": args.positive_rate,
            "seed": args.seed,
            "pamc_seconds": ours_s,
            "sklearn_seconds": ref_s,
            "pamc_median_s": statistics.median(ours_s),
            "sklearn_median_s": statistics.median(ref_s),
            "speedup": ratio,
            "threads": threads,
            "pamc_1thread_seconds": seconds["pamc-1t"],
            "speedup_1thread": ratio_1t,
            "pamc_cpu_seconds": cpu_seconds["pamc"],
            "sklearn_cpu_seconds": cpu_seconds["sklearn"],
            "speedup_cpu_time": cpu_ratio,
            "load_average": list(os.getloadavg()),
            "max_abs_diff": max_abs_diff,
            "agree_1e-6": agree,
            "numpy": np.__version__,
            "sklearn": sklearn.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
