"""``pamc alpha-sweep``: a plot of mAP against the inference BoostLU alpha of one checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pamc.cli.common import alpha_list, alpha_rows, report_alpha_rows


class AlphaSweep:
    """``pamc alpha-sweep``: mAP of one checkpoint for several inference alphas, as a plot."""

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("alpha-sweep", help="plot mAP against inference alpha", description=AlphaSweep.__doc__)
        p.add_argument("checkpoint", help="a best.safetensors file or a run directory")
        p.add_argument("--alpha", type=alpha_list, default=[1.0, 2.0, 3.0, 5.0, 8.0, 10.0],
                       help="comma list of inference alphas (default 1,2,3,5,8,10)")
        p.add_argument("--split", choices=["test", "val"], default="test")
        p.add_argument("--out", required=True, help="PNG file to write")
        p.add_argument("--json", dest="json_out", help="also write the numbers to this JSON file")
        p.add_argument("--data-root", help="dataset root, if it moved since training")
        p.add_argument("--device", default="auto")
        p.set_defaults(run=AlphaSweep.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pamc.explain import plot_alpha_sweep
        from pamc.models import BoostLU

        for alpha in args.alpha:
            BoostLU(alpha)
        trained, rows = alpha_rows(args, args.alpha)
        plot_alpha_sweep(rows, args.out, train_alpha=trained.model.train_alpha,
                         title=f"{trained.config.method.name} model: {args.split} mAP vs inference alpha")
        report_alpha_rows(trained, rows, args.split, args.json_out)
        print(f"wrote {args.out}")
        return 0
