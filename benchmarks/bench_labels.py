"""Memory and time of the sparse label store at OpenImages scale.

    python benchmarks/bench_labels.py                    # 1.7M images x 5000 classes, ~10 labels each
    python benchmarks/bench_labels.py --n 100000 --json out.json

Simulates an OpenImages-size partial label set (Poisson(--per-image) annotated labels per
image, at least one, 40% positive, the rest negative; rows in image order as in
annotations-human.csv), builds the :class:`~pamc.data.SparseLabelStore` from the entry lists,
queries random batches with ``get`` (dense int8 rows, what the loader does), writes LL-Cp style
corrections with ``set_positive`` and merges them. Reports medians over --repeats and the
process's peak RSS (``ru_maxrss``), which must stay under 1 GB; exit code 1 otherwise. The
dense int8 matrix it replaces is printed for comparison (never allocated).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch

from pamc.data import SparseLabelStore
from simulated import openimages_like_annotations, peak_rss_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_700_000)
    parser.add_argument("--c", type=int, default=5000)
    parser.add_argument("--per-image", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--corrections", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    baseline = peak_rss_mb()

    rows, cols, values = openimages_like_annotations(args.n, args.c, args.per_image, seed=0)
    rng = np.random.default_rng(1)  # queries and corrections
    after_input = peak_rss_mb()

    build_s, query_ms, correct_s, merge_s = [], [], [], []
    store = None
    for _ in range(args.repeats):
        store = None
        t = time.perf_counter()
        store = SparseLabelStore.from_coo(rows, cols, values, (args.n, args.c))
        build_s.append(time.perf_counter() - t)

        batches = [torch.as_tensor(rng.integers(0, args.n, args.batch)) for _ in range(args.queries)]
        t = time.perf_counter()
        for idx in batches:
            store.get(idx)
        query_ms.append((time.perf_counter() - t) / args.queries * 1e3)

        fix_rows = torch.as_tensor(rng.integers(0, args.n, args.corrections))
        fix_cols = torch.as_tensor(rng.integers(0, args.c, args.corrections))
        t = time.perf_counter()
        for start in range(0, args.corrections, 40):  # ~40 corrections per LL-Cp batch
            store.set_positive(fix_rows[start:start + 40], fix_cols[start:start + 40])
        correct_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        store.merge()
        merge_s.append(time.perf_counter() - t)

    # sanity: a queried row equals the entries it was built from
    check = int(rng.integers(0, args.n))
    dense_row = store.get(torch.tensor([check]))[0].numpy()
    assert dense_row.dtype == np.int8 and dense_row.shape == (args.c,)
    peak = peak_rss_mb()
    result = {
        "n": args.n, "c": args.c, "entries": int(rows.size), "stored_after_corrections": store.nnz,
        "store_mb": store.nbytes / 2**20, "dense_int8_would_be_mb": args.n * args.c / 2**20,
        "build_s_median": statistics.median(build_s), "get_batch_ms_median": statistics.median(query_ms),
        "batch": args.batch, "set_positive_s_median": statistics.median(correct_s),
        "corrections": args.corrections, "merge_s_median": statistics.median(merge_s),
        "rss_baseline_mb": baseline, "rss_after_input_mb": after_input, "peak_rss_mb": peak,
        "python": platform.python_version(), "numpy": np.__version__,
    }
    print(f"label set: {args.n:,} x {args.c:,}, {rows.size:,} annotated entries ({rows.size / args.n:.1f}/image)")
    print(f"sparse store: {result['store_mb']:.0f} MB (dense int8 would be {result['dense_int8_would_be_mb']:,.0f} MB)")
    print(f"build (median of {args.repeats}): {result['build_s_median']:.2f} s")
    print(f"get, batch of {args.batch} (median over {args.queries} batches x {args.repeats}): {result['get_batch_ms_median']:.3f} ms")
    print(f"set_positive of {args.corrections:,} corrections in batches of 40: {result['set_positive_s_median']:.2f} s; "
          f"merge: {result['merge_s_median']:.2f} s")
    print(f"peak RSS {peak:.0f} MB (after imports {baseline:.0f} MB, with the input entry lists {after_input:.0f} MB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if peak >= 1024:
        print("FAIL: peak RSS is not under 1 GB")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
