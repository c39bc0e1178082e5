"""``pamc reproduce``: a dataset's rows of the paper's tables, resumably, beside the paper's numbers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pamc.cli.common import add_parallel_args


class Reproduce:
    """``pamc reproduce --dataset NAME --data-root PATH -o DIR``: train every config of the paper's
    tables for NAME (configs/paper/NAME) for each seed and print the table with the paper's
    numbers. Run it again to continue: finished runs are skipped, an interrupted run resumes."""

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("reproduce", help="run a dataset's paper configs and compare with the paper",
                           description=Reproduce.__doc__)
        p.add_argument("--dataset", required=True, help="voc2012, coco2014, nuswide, cub or openimages-v3")
        p.add_argument("--data-root", required=True, help="the dataset as downloaded")
        p.add_argument("--output-dir", "-o", required=True, help="folder of the runs (reused to continue)")
        p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
        p.add_argument("--rows", help="comma list of config names (default: every row of the paper's tables)")
        p.add_argument("--configs", help="folder of the paper configs (default: the repository's configs/paper)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key of every config, e.g. --set train.device=cuda:1 (YAML value)")
        add_parallel_args(p, default_jobs=1, threads_help="intra-op threads per run (default: the configs' "
                          "train.threads with --jobs 1, else 1 per run)")
        p.add_argument("--no-progress", action="store_true")
        p.set_defaults(run=Reproduce.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pamc.cli.progress import arm_progress
        from pamc.config import parse_overrides
        from pamc.reproduce import run_reproduce

        threads = {} if args.threads is None and args.jobs == 1 else {"train.threads": args.threads or 1}
        rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
        out = run_reproduce(
            args.dataset, args.data_root, Path(args.output_dir), args.seeds,
            configs_dir=Path(args.configs) if args.configs else None, rows=rows,
            overrides={**parse_overrides(args.set), **threads},
            jobs=args.jobs,
            callbacks_for=arm_progress(args.no_progress),
        )
        counts = {s: list(out["runs"].values()).count(s) for s in ("trained", "resumed", "evaluated", "skipped")}
        print(out["markdown"])
        print(", ".join(f"{n} {s}" for s, n in counts.items()) + f"; tables in {args.output_dir}/results.md and results.csv")
        return 0
