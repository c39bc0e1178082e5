"""``pamc predict``: labels with scores for image files, as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

from pamc.errors import PamcError


class Predict:
    """``pamc predict``: predict labels for image files, selected by a threshold or by top-k."""

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("predict", help="predict labels for image files", description=Predict.__doc__)
        p.add_argument("checkpoint", help="a best.safetensors file or a run directory")
        p.add_argument("images", nargs="+", help="image files (resized to the model's training resolution)")
        which = p.add_mutually_exclusive_group()
        which.add_argument("--threshold", type=float, help="keep classes with score >= T (default 0.5)")
        which.add_argument("--top-k", type=int, help="keep the k best-scored classes of each image")
        p.add_argument("--alpha", type=float, help="inference BoostLU alpha (default: the model's)")
        p.add_argument("--csv", dest="csv_out", help="write image,class,score rows to this CSV file")
        p.add_argument("--json", dest="json_out", help="write predictions and all scores to this JSON file")
        p.add_argument("--device", default="auto")
        p.set_defaults(run=Predict.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pamc.engine import resolve_device
        from pamc.engine.checkpoint import atomic_write_text
        from pamc.explain.predict import predict_files

        if args.top_k is not None and args.top_k < 1:
            raise PamcError("--top-k must be >= 1")
        threshold = 0.5 if args.threshold is None and args.top_k is None else args.threshold
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise PamcError(f"--threshold must be in [0, 1], got {threshold}")
        result = predict_files(args.checkpoint, args.images, threshold=threshold, top_k=args.top_k,
                               alpha=args.alpha, device=resolve_device(args.device))
        print(format_table(result), end="")
        if args.csv_out:
            atomic_write_text(Path(args.csv_out), to_csv(result))
        if args.json_out:
            atomic_write_text(Path(args.json_out), json.dumps(result, indent=2))
        return 0


def format_table(result: dict[str, Any]) -> str:
    """One row per selected (image, class), best first; ``-`` for an image with none."""
    rows = []
    for p in result["images"]:
        rows += [(p["image"], pred["class"], f"{pred['score']:.4f}") for pred in p["predictions"]]
        if not p["predictions"]:
            rows.append((p["image"], "-", ""))
    header = ("image", "class", "score")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}".rstrip() for a, b, c in [header, *rows]]
    return "\n".join(lines) + "\n"


def to_csv(result: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "class", "score"])
    for p in result["images"]:
        for pred in p["predictions"]:
            writer.writerow([p["image"], pred["class"], f"{pred['score']:.6f}"])
    return buf.getvalue()
