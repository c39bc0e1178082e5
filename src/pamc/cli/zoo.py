"""``pamc zoo``: every method of the zoo, alone and with BoostLU, on the synthetic scenes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pamc.cli.common import add_parallel_args
from pamc.errors import PamcError


class Zoo:
    """``pamc zoo``: train every method (and its BoostLU variants) on the synthetic scenes."""

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("zoo", help="run the method zoo on synthetic data", description=Zoo.__doc__)
        p.add_argument("--methods", default="all", help="'all' or a comma list of method names")
        p.add_argument("--output-dir", "-o", default="zoo-output")
        p.add_argument("--seeds", type=int, default=3, help="number of training seeds")
        p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+seeds-1")
        p.add_argument("--quick", action="store_true", help="the demo's smoke-run sizes")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key of the zoo's base config (YAML value)")
        add_parallel_args(p)
        p.add_argument("--no-progress", action="store_true")
        p.set_defaults(run=Zoo.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import time

        from pamc.cli.progress import arm_progress
        from pamc.config import parse_overrides, replace
        from pamc.zoo import parse_methods, run_zoo, zoo_config

        if args.seeds < 1:
            raise PamcError("--seeds must be >= 1")
        methods = parse_methods(args.methods)
        overrides = {key.replace(".", "__"): value for key, value in parse_overrides(args.set).items()}
        if args.threads is not None:
            overrides["train__threads"] = args.threads
        base = replace(zoo_config(args.quick), **overrides)
        start = time.perf_counter()
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        out = run_zoo(
            Path(args.output_dir), seeds=seeds, methods=methods, base=base, jobs=args.jobs,
            callbacks_for=arm_progress(args.no_progress),
        )
        print()
        print(out["markdown"])
        print(f"{len(out['seeds'])} seeds x {out['epochs']} epochs; LL delta_rel {out['ll_delta_rel']:.2f}%/epoch; "
              f"EPR/ROLE expected positives {out['expected_num_pos']:.2f}")
        print(f"finished in {time.perf_counter() - start:.0f} s; tables in {args.output_dir}/results.md and results.csv")
        return 0
