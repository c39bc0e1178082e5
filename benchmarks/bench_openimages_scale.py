"""``fit`` on an OpenImages-size label set: bind, train steps, checkpoint, resume; peak RSS.

    python benchmarks/bench_openimages_scale.py              # 1.7M images x 5000 classes, ~10 labels each
    python benchmarks/bench_openimages_scale.py --n 200000 --json out.json

The training split holds a simulated OpenImages partial label set (see ``simulated.py``) in a
:class:`~pamc.data.SparseLabelStore`; its images are tiny (3 x 16 x 16), drawn from a pool of
256 through an :class:`~pamc.data.image_cache.ImageRows` view, so the labels dominate memory.
:func:`pamc.engine.fit` binds the loss (LL-Cp) to the store, trains, writes step checkpoints
(the training state carries the store in its CSR form) and is stopped after ``--steps`` steps;
a second ``fit(resume=True)`` continues from the last step checkpoint and is stopped again.
The script checks that the resumed store equals the saved one and that the process never held a
dense copy of the labels: peak RSS must stay under ``--limit-mb`` (default 2000; the dense int8
matrix alone would take 8.5 GB). Exit code 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pamc.config import config_from_dict
from pamc.data import DatasetBundle, SparseLabelStore, Split, label_store_from_state
from pamc.data.image_cache import ImageRows
from pamc.engine import Callback, RunDir, fit
from simulated import openimages_like_annotations, peak_rss_mb


class StopAfter(Callback):
    """Interrupts training (as Ctrl-C would) after global step ``at``."""

    def __init__(self, at: int) -> None:
        self.at, self.done = at, 0

    def on_batch_end(self, epoch: int, step: int, loss: float, num_images: int) -> None:
        self.done += 1
        if self.done >= self.at:
            raise KeyboardInterrupt


def make_bundle(n: int, c: int, per_image: float, eval_n: int) -> DatasetBundle:
    rows, cols, values = openimages_like_annotations(n, c, per_image, seed=0)
    train = SparseLabelStore.from_coo(rows, cols, values, (n, c))
    del rows, cols, values
    pool = np.random.default_rng(1).integers(0, 256, (256, 3, 16, 16), dtype=np.uint8)

    def small(seed: int) -> Split:
        r, k, v = openimages_like_annotations(eval_n, c, per_image, seed=seed)
        store = SparseLabelStore.from_coo(r, k, v, (eval_n, c))
        return Split(ImageRows(pool, np.arange(eval_n) % 256), store, store)

    return DatasetBundle("openimages-simulated", tuple(f"c{i}" for i in range(c)),
                         Split(ImageRows(pool, np.arange(n) % 256), None, train), small(2), small(3),
                         partial_test_labels=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_700_000)
    parser.add_argument("--c", type=int, default=5000)
    parser.add_argument("--per-image", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=25, help="steps of each of the two fit calls")
    parser.add_argument("--every", type=int, default=10, help="train.checkpoint_every_steps")
    parser.add_argument("--limit-mb", type=float, default=2000.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    bundle = make_bundle(args.n, args.c, args.per_image, eval_n=2000)
    store = bundle.train.observed
    built_s, rss_built = time.perf_counter() - t0, peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_from_dict({
            "data": {"dataset": "synthetic"}, "model": {"backbone": "smallcnn"},
            "method": {"name": "ll-cp", "params": {"delta_rel": 0.1}},
            "train": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "device": "cpu", "flip": False,
                      "checkpoint_every_steps": args.every},
            "output_dir": str(Path(tmp) / "run"),
        })
        t1 = time.perf_counter()
        try:
            fit(cfg, dataset=bundle, callbacks=[StopAfter(args.steps)])
        except KeyboardInterrupt:
            pass
        first_s, rss_first = time.perf_counter() - t1, peak_rss_mb()
        run = RunDir(cfg.output_dir)
        _, state = run.load_last()
        saved = label_store_from_state(state.hooks["labels"])
        step_first = state.global_step
        same = isinstance(saved, SparseLabelStore) and saved.nnz == store.nnz
        t2 = time.perf_counter()
        try:
            fit(RunDir.for_resume(run.path).read_config(), dataset=bundle, callbacks=[StopAfter(args.steps)],
                resume=True)
        except KeyboardInterrupt:
            pass
        resume_s, rss_resume = time.perf_counter() - t2, peak_rss_mb()
        _, state = run.load_last()
        state_mb = sum(p.stat().st_size for p in run.state_files()) / 2**20
        step_second = state.global_step

    dense_mb = args.n * args.c / 2**20
    result = {
        "images": args.n, "classes": args.c, "stored_labels": store.nnz, "store_mb": store.nbytes / 2**20,
        "dense_int8_mb_never_allocated": dense_mb, "build_s": built_s, "fit_first_s": first_s, "fit_resume_s": resume_s,
        "global_step_after_first": step_first, "global_step_after_resume": step_second,
        "state_file_mb": state_mb, "saved_store_is_sparse_and_equal_size": same,
        "peak_rss_mb_after_build": rss_built, "peak_rss_mb_after_first_fit": rss_first,
        "peak_rss_mb_after_resume": rss_resume, "python": platform.python_version(), "torch": torch.__version__,
    }
    for key, value in result.items():
        print(f"{key:34s} {value:.1f}" if isinstance(value, float) else f"{key:34s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    ok = same and rss_resume < args.limit_mb and step_second > step_first
    print("OK" if ok else f"FAILED (peak RSS limit {args.limit_mb:.0f} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
