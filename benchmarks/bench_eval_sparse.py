"""Memory and time of evaluating an OpenImages-size test split through the streamed sparse path.

    python benchmarks/bench_eval_sparse.py                  # 125k images x 5000 classes, ~10 labels each
    python benchmarks/bench_eval_sparse.py --n 20000 --json out.json
    python benchmarks/bench_eval_sparse.py --dense          # the old path, for comparison (~7 GB)

Simulates the OpenImages V3 test split: Poisson(--per-image) annotated labels per image (at
least one, 40% positive), held in a :class:`~pamc.data.SparseLabelStore` as the adapter holds
it. Batches are read as ``evaluate`` reads them (dense int8 rows from the store), scored with
random float32 scores on a 1e-4 grid (so there are ties) and fed to a
``MultiLabelEvaluator(ignore_unobserved=True)``, which keeps only the annotated entries; then
``evaluate()`` computes per-class AP and the 5 frequency-group mAPs. Reports the time spent in
``process`` and in ``evaluate`` and the process's peak RSS (``ru_maxrss``), which must stay
under 1 GB (exit code 1 otherwise). The dense arrays the old path collected (int8 labels and
float32 scores, N x C each) are printed for comparison, never allocated. Afterwards the AP is
checked against the dense ``average_precision(..., ignore_unobserved=True)`` on the first
--check rows (after the peak RSS was read). ``--dense`` runs the old path instead (dense
batches collected, concatenated, ``average_precision`` over the whole matrix), in its own
process since the peak RSS is per process; it has no memory limit.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import torch

from pamc.data import SparseLabelStore
from pamc.evaluation import MultiLabelEvaluator, average_precision
from simulated import openimages_like_annotations, peak_rss_mb


def batch_scores(batch: int, rows: int, num_classes: int) -> np.ndarray:
    """The scores of batch number ``batch``: seeded by it, so they can be drawn again."""
    scores = np.random.default_rng(batch).random((rows, num_classes), dtype=np.float32)
    return np.round(scores, 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=125_000)
    parser.add_argument("--c", type=int, default=5000)
    parser.add_argument("--per-image", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--check", type=int, default=10_000, help="rows cross-checked against the dense AP (0: none)")
    parser.add_argument("--dense", action="store_true", help="measure the old dense path instead")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    baseline = peak_rss_mb()

    rows, cols, values = openimages_like_annotations(args.n, args.c, args.per_image, seed=0)
    store = SparseLabelStore.from_coo(rows, cols, values, (args.n, args.c))
    frequency = np.random.default_rng(1).integers(0, 1000, args.c)  # training positives per class, for the group mAP
    del rows, cols, values
    after_store = peak_rss_mb()

    if args.dense:
        return dense_path(args, store, baseline, after_store)
    evaluator = MultiLabelEvaluator(args.c, ignore_unobserved=True, class_frequency=frequency)
    process_s, start = 0.0, time.perf_counter()
    for b, first in enumerate(range(0, args.n, args.batch)):
        idx = torch.arange(first, min(first + args.batch, args.n))
        labels = store.get(idx)  # what the loader yields
        scores = torch.from_numpy(batch_scores(b, len(idx), args.c))  # what the model yields
        t = time.perf_counter()
        evaluator.process(scores, labels)
        process_s += time.perf_counter() - t
    loop_s = time.perf_counter() - start
    t = time.perf_counter()
    result = evaluator.evaluate()
    evaluate_s = time.perf_counter() - t
    peak = peak_rss_mb()
    entries = store.nnz
    out = {
        "n": args.n, "c": args.c, "annotated_entries": entries, "batch": args.batch,
        "process_s_total": process_s, "loop_s_incl_label_reads_and_score_generation": loop_s,
        "evaluate_s": evaluate_s, "map": result["map"], "group_map": result["group_map"],
        "dense_labels_would_be_mb": args.n * args.c / 2**20, "dense_scores_would_be_mb": args.n * args.c * 4 / 2**20,
        "kept_entries_mb": entries * 7 / 2**20, "store_mb": store.nbytes / 2**20,
        "rss_baseline_mb": baseline, "rss_after_store_mb": after_store, "peak_rss_mb": peak,
        "python": platform.python_version(), "numpy": np.__version__,
    }
    print(f"test split: {args.n:,} x {args.c:,}, {entries:,} annotated entries ({entries / args.n:.1f}/image), "
          f"batches of {args.batch}")
    print(f"kept by the evaluator: {out['kept_entries_mb']:.0f} MB (the dense path held {out['dense_labels_would_be_mb']:,.0f} MB "
          f"of int8 labels + {out['dense_scores_would_be_mb']:,.0f} MB of float32 scores)")
    print(f"process, all batches: {process_s:.2f} s; evaluate (AP of {args.c} classes + 5 group mAPs): {evaluate_s:.2f} s, "
          f"mAP {result['map']:.4f}")
    print(f"whole pass incl. label reads and score generation: {loop_s:.1f} s")
    print(f"peak RSS {peak:.0f} MB (after imports {baseline:.0f} MB, with the label store {after_store:.0f} MB)")

    if args.check:
        k = min(args.check, args.n)
        check = MultiLabelEvaluator(args.c, ignore_unobserved=True)
        scores = np.concatenate([batch_scores(b, len(range(f, min(f + args.batch, k))), args.c)
                                 for b, f in enumerate(range(0, k, args.batch))])
        labels = store.get(torch.arange(k)).numpy()
        check.process(scores, labels)
        diff = np.abs(np.array(check.evaluate()["ap"]) / 100 - average_precision(scores, labels, ignore_unobserved=True))
        out["dense_check_rows"], out["dense_check_max_abs_diff"] = k, float(diff.max())
        print(f"check against the dense AP on the first {k:,} rows: max |difference| {diff.max():.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    if peak >= 1024:
        print("FAIL: peak RSS is not under 1 GB")
        return 1
    return 0


def dense_path(args: argparse.Namespace, store: SparseLabelStore, baseline: float, after_store: float) -> int:
    """What the evaluator did before: keep every batch densely, then one dense AP."""
    scores, labels = [], []
    start = time.perf_counter()
    for b, first in enumerate(range(0, args.n, args.batch)):
        idx = torch.arange(first, min(first + args.batch, args.n))
        labels.append(store.get(idx).numpy())
        scores.append(batch_scores(b, len(idx), args.c))
    loop_s = time.perf_counter() - start
    t = time.perf_counter()
    ap = average_precision(np.concatenate(scores), np.concatenate(labels), ignore_unobserved=True)
    evaluate_s = time.perf_counter() - t
    peak = peak_rss_mb()
    print(f"dense path, {args.n:,} x {args.c:,}: collect {loop_s:.1f} s, concatenate + average_precision "
          f"{evaluate_s:.1f} s, mAP {ap.mean() * 100:.4f}")
    print(f"peak RSS {peak:.0f} MB (after imports {baseline:.0f} MB, with the label store {after_store:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
