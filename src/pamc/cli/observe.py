"""``pamc observe``: draw the observed training labels once, next to the prepared dataset."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from pamc.config import DataConfig

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DataConfig)}


class Observe:
    """``pamc observe DATASET --data-root R --out D``: write (or reuse) the observed labels in D.

    Every method trained with ``--cache-dir D`` and the same ``data.num_pos``, ``data.num_neg``
    and ``data.obs_seed`` then trains on exactly these labels.
    """

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("observe", help="draw the observed training labels once (cached)",
                           description=Observe.__doc__)
        p.add_argument("dataset", help="voc2007, voc2012, coco2014, coco2017, nuswide or cub (datasets with full labels)")
        p.add_argument("--data-root", required=True, help="the dataset as downloaded")
        p.add_argument("--out", help="prepared folder (default: <data-root>/.pamc-cache); train with --cache-dir OUT")
        p.add_argument("--num-pos", type=int, default=_DEFAULTS["num_pos"],
                       help=f"observed positives per image (default {_DEFAULTS['num_pos']})")
        p.add_argument("--num-neg", type=int, default=_DEFAULTS["num_neg"],
                       help=f"observed negatives per image (default {_DEFAULTS['num_neg']})")
        p.add_argument("--seed", type=int, default=_DEFAULTS["obs_seed"],
                       help=f"seed of the draw, data.obs_seed (default {_DEFAULTS['obs_seed']})")
        p.add_argument("--voc-difficult", choices=["positive", "negative", "ignore"],
                       default=_DEFAULTS["voc_difficult"], help="as in pamc prepare; must match training")
        p.add_argument("--protocol", choices=["authors", "pamc"], default=_DEFAULTS["protocol"],
                       help="data.protocol: how labels are drawn (docs/datasets.md); must match training")
        p.set_defaults(run=Observe.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pamc.data.prepare import observe_dataset

        cfg = DataConfig(dataset=args.dataset, root=args.data_root, num_pos=args.num_pos, num_neg=args.num_neg,
                         obs_seed=args.seed, cache_dir=args.out, voc_difficult=args.voc_difficult,
                         protocol=args.protocol)
        s = observe_dataset(cfg)
        state = "reused" if s["reused"] else "written"
        print(f"{s['file']} ({state})")
        print(f"{s['dataset']}: {s['images']} images, {s['classes']} classes; observed per image: "
              f"{s['positives_per_image']:.2f} positive, {s['negatives_per_image']:.2f} negative "
              f"(num_pos {cfg.num_pos}, num_neg {cfg.num_neg}, seed {cfg.obs_seed})")
        return 0
