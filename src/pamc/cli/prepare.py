"""``pamc prepare``: check a dataset's layout and build its index, observed labels and image cache."""

from __future__ import annotations

import argparse
from typing import Any


class Prepare:
    """``pamc prepare DATASET --data-root R --out D``: validate, index, observe, cache."""

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("prepare", help="index a dataset and build its image cache", description=Prepare.__doc__)
        p.add_argument("dataset", help="voc2007, voc2012, coco2014, coco2017 (coco: either layout), nuswide, cub, openimages-v3 or csv")
        p.add_argument("--data-root", required=True, help="the dataset as downloaded (csv: the CSV file or its folder)")
        p.add_argument("--out", help="prepared folder (default: <data-root>/.pamc-cache); train with --set data.cache_dir=OUT")
        p.add_argument("--image-size", type=int, help="cache resolution (square; default: the dataset's, 448)")
        p.add_argument("--no-cache", action="store_true", help="only validate and write the index and observed labels")
        p.add_argument("--num-pos", type=int, default=1, help="observed positives per image")
        p.add_argument("--num-neg", type=int, default=0, help="observed negatives per image")
        p.add_argument("--obs-seed", type=int, default=1200, help="seed of the observed labels")
        p.add_argument("--test-csv", help="csv: a separate test set")
        p.add_argument("--val-csv", help="csv: a separate, completely labelled validation set")
        p.add_argument("--test-labels", choices=["complete", "partial"], default="complete",
                       help="csv list form: a class not listed in the test/val CSV is negative or unobserved")
        p.add_argument("--strict", action="store_true", help="fail on a missing or corrupt image instead of skipping it")
        p.add_argument("--voc-difficult", choices=["positive", "negative", "ignore"], default=None,
                       help="a difficult VOC flag counts as (default: positive; absent under --protocol authors)")
        p.add_argument("--protocol", choices=["authors", "pamc"], default="pamc",
                       help="data.protocol: how labels are drawn (docs/datasets.md); must match training")
        p.add_argument("--no-progress", action="store_true")
        p.set_defaults(run=Prepare.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from tqdm import tqdm

        from pamc.config import DataConfig
        from pamc.data.prepare import prepare_dataset

        cfg = DataConfig(dataset=args.dataset, root=args.data_root, image_size=args.image_size,
                         num_pos=args.num_pos, num_neg=args.num_neg, obs_seed=args.obs_seed,
                         cache_dir=args.out, test_csv=args.test_csv, strict=args.strict,
                         val_csv=args.val_csv, test_labels=args.test_labels,
                         voc_difficult=args.voc_difficult, protocol=args.protocol)
        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None or bar.total != total or done < bar.n:
                if bar is not None:
                    bar.close()
                bar = tqdm(total=total, desc="decoding", unit="img", leave=False,
                           disable=True if args.no_progress else None)
            bar.update(done - bar.n)

        summary = prepare_dataset(cfg, cache=not args.no_cache, progress=progress)
        if bar is not None:
            bar.close()
        print(", ".join(f"{k} {v}" for k, v in summary.items()))
        return 0
