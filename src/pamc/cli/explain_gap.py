"""``pamc explain-gap``: the paper's CAM analysis between a full-label and a partial-label model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pamc.errors import PamcError


class ExplainGap:
    """``pamc explain-gap``: spatial similarity and attribution of two models' CAMs, with BoostLU."""

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("explain-gap", help="compare the CAMs of a full-label and a partial-label model",
                           description=ExplainGap.__doc__)
        p.add_argument("full_checkpoint", help="model trained on full labels (file or run directory)")
        p.add_argument("partial_checkpoint", help="model trained on partial labels (file or run directory)")
        p.add_argument("--split", choices=["test", "val", "train"], default="test")
        p.add_argument("--limit", type=int, help="use the first N images of the split (default: all)")
        p.add_argument("--alpha", type=float, default=5.0, help="BoostLU alpha applied to the partial model (default 5)")
        p.add_argument("--top-fraction", type=float, default=0.2,
                       help="share of CAM cells forming the top region (default 0.2)")
        p.add_argument("--iou-threshold", type=float, default=0.5,
                       help="heat threshold of the CAM box for the IoU (default 0.5)")
        p.add_argument("--out", required=True, help="output folder for gap.png and gap.json")
        p.add_argument("--data-root", help="dataset root, if it moved since training")
        p.add_argument("--device", default="auto")
        p.set_defaults(run=ExplainGap.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pamc.engine import resolve_device
        from pamc.engine.checkpoint import atomic_write
        from pamc.explain.gap import plot_gap
        from pamc.explain.report import gap_report
        from pamc.models import BoostLU

        if args.limit is not None and args.limit < 1:
            raise PamcError("--limit must be >= 1")
        if not 0 < args.top_fraction <= 1:
            raise PamcError("--top-fraction must be in (0, 1]")
        if not 0 < args.iou_threshold <= 1:
            raise PamcError("--iou-threshold must be in (0, 1]")
        BoostLU(args.alpha)
        summary, result = gap_report(
            args.full_checkpoint, args.partial_checkpoint, split=args.split, limit=args.limit,
            alpha=args.alpha, top_fraction=args.top_fraction, iou_threshold=args.iou_threshold,
            data_root=args.data_root, device=resolve_device(args.device),
        )
        from pamc.engine.checkpoint import make_dirs

        out = make_dirs(Path(args.out))
        plot_gap(result, out / "gap.png", title=f"{summary['pairs']} (image, positive class) pairs, "
                 f"{summary['images']} {args.split} images")
        text = json.dumps(summary, indent=2)
        atomic_write(out / "gap.json", lambda tmp: Path(tmp).write_text(text))
        print(format_summary(summary))
        print(f"wrote {out / 'gap.png'} and {out / 'gap.json'}")
        return 0


def format_summary(s: dict[str, Any]) -> str:
    sp = s["spatial"]
    lines = [
        f"{s['pairs']} (image, positive class) pairs on {s['images']} {s['split']} images",
        f"spatial similarity: Pearson r mean {sp['pearson']['mean']:.3f} median {sp['pearson']['median']:.3f}; "
        f"top-region IoU mean {sp['top_region_iou']['mean']:.3f}",
        f"{'attribution (mean over pairs)':<30}{'full':>9}{'partial':>9}{'+BoostLU':>10}{'ratio':>8}{'ratio+B':>9}{'closed':>8}",
    ]
    for stat, row in s["attribution"].items():
        lines.append(
            f"{stat:<30}{row['full']['mean']:>9.3f}{row['partial']['mean']:>9.3f}{row['partial_boostlu']['mean']:>10.3f}"
            f"{row['ratio_partial']:>8.3f}{row['ratio_partial_boostlu']:>9.3f}{100 * row['gap_closed']:>7.0f}%"
        )
    m = s["map"]
    lines.append(f"mAP: full {m['full']:.2f}, partial {m['partial']:.2f}, partial + BoostLU {m['partial_boostlu']:.2f}")
    for name, loc in s.get("localization", {}).items():
        lines.append(f"localisation ({name}): pointing game {100 * loc['pointing_accuracy']:.1f}%, "
                     f"CAM-box IoU {loc['mean_iou']:.3f} over {loc['pairs']} boxes")
    return "\n".join(lines)
