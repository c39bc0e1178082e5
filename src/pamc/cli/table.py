"""``pamc table``: aggregate run directories into the paper's table layout."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


class Table:
    """``pamc table RUN_DIRS...``: mean ± std over seeds per dataset x method x alphas."""

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("table", help="aggregate runs into a results table", description=Table.__doc__)
        p.add_argument("runs", nargs="+", help="run directories, or folders searched for them")
        p.add_argument("--csv", dest="csv_out", help="also write the table as CSV to this file")
        p.add_argument("--markdown", dest="md_out", help="also write the Markdown table to this file")
        p.set_defaults(run=Table.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pamc.engine.checkpoint import atomic_write_text
        from pamc.table import build_table, format_csv, format_markdown

        groups = build_table(args.runs)
        md, csv_text = format_markdown(groups), format_csv(groups)
        print(md)
        print(csv_text, end="")
        if args.csv_out:
            atomic_write_text(Path(args.csv_out), csv_text)
        if args.md_out:
            atomic_write_text(Path(args.md_out), md)
        return 0
