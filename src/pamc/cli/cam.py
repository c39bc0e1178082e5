"""``pamc cam``: CAM heatmap overlays, one PNG per image, and an index.html grid."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pamc.errors import PamcError


def class_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma list of class names")
    return names


class Cam:
    """``pamc cam``: overlay class activation maps on images or on a dataset split."""

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("cam", help="draw CAM heatmaps for images", description=Cam.__doc__)
        p.add_argument("checkpoint", help="a best.safetensors file or a run directory")
        p.add_argument("images", nargs="*", help="image files (resized to the model's training resolution)")
        p.add_argument("--dataset-split", choices=["test", "val", "train"],
                       help="use images of this split of the checkpoint's dataset instead of files")
        p.add_argument("--limit", type=int, default=16, help="number of dataset images (default 16)")
        p.add_argument("--out", required=True, help="output folder for the PNGs and index.html")
        which = p.add_mutually_exclusive_group()
        which.add_argument("--top-k", type=int, default=3, help="show the k best-scored classes (default 3)")
        which.add_argument("--classes", type=class_list, help="show these classes, e.g. disc,ring")
        p.add_argument("--side-by-side", action="store_true", help="show the raw and the BoostLU CAM")
        p.add_argument("--alpha", type=float,
                       help="BoostLU alpha of the boosted CAM (default: the model's; 5 if that is 1)")
        p.add_argument("--data-root", help="dataset root, if it moved since training")
        p.add_argument("--device", default="auto")
        p.set_defaults(run=Cam.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import numpy as np

        from pamc.engine import load_trained, resolve_device
        from pamc.explain import (
            Panel, boost, compute_cams, load_image_files, model_image_size, pooled_scores,
            save_overlay_figure, score_title, select_classes, write_index,
        )
        from pamc.explain.cam import read_image
        from pamc.models import BoostLU

        if bool(args.images) == bool(args.dataset_split):
            raise PamcError("give image files or --dataset-split, not both and not neither")
        if args.top_k < 1 or args.limit < 1:
            raise PamcError("--top-k and --limit must be >= 1")
        trained = load_trained(args.checkpoint, resolve_device(args.device))
        model, names = trained.model, trained.class_names
        alpha = args.alpha if args.alpha is not None else (model.eval_alpha if model.eval_alpha > 1 else 5.0)
        BoostLU(alpha)  # validates alpha with the model's own rule
        if args.classes:
            select_classes(np.zeros(len(names)), names, names=args.classes)  # unknown names fail early

        if args.dataset_split:
            split = trained.split(args.dataset_split, args.data_root)
            n = min(args.limit, len(split))
            inputs = split.images[:n]
            displays = [img.transpose(1, 2, 0) for img in inputs]
            labels = [f"{args.dataset_split} #{i}" for i in range(n)]
            files = [f"{args.dataset_split}_{i:05d}.png" for i in range(n)]
            boxes = split.boxes[split.boxes[:, 0] < n]
            full = split.full_rows(np.arange(n))
            truth = [[names[c] for c in np.flatnonzero(row == 1)] for row in full] \
                if full is not None else [[] for _ in range(n)]
        else:
            inputs, _ = load_image_files(args.images, model_image_size(trained.config), keep_originals=False)
            displays = (read_image(p) for p in args.images)  # streamed: one original at a time
            labels = [str(p) for p in args.images]
            files = [f"{i:03d}_{Path(p).stem}.png" for i, p in enumerate(args.images)]
            boxes = np.zeros((0, 6), dtype=np.int64)
            truth = [[] for _ in args.images]

        cams = compute_cams(model, inputs)
        model_cams = cams.boosted()  # the CAM the model pools at its inference alpha
        from pamc.engine.checkpoint import make_dirs

        out = make_dirs(Path(args.out))
        items = []
        for i, image in enumerate(displays):
            classes = select_classes(cams.scores[i], names, top_k=args.top_k, names=args.classes)
            sy, sx = image.shape[0] / inputs.shape[2], image.shape[1] / inputs.shape[3]

            def boxes_of(c: int) -> list[tuple[int, int, int, int]]:
                rows = boxes[(boxes[:, 0] == i) & (boxes[:, 1] == c)]
                return [(round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)) for _, _, x0, y0, x1, y1 in rows]

            raw = cams.raw[i]
            if args.side_by_side:
                boosted = boost(raw, alpha)
                raw_scores, boosted_scores = pooled_scores(raw), pooled_scores(boosted)
                scale = {c: float(boosted[c].max()) for c in classes}
                rows = [
                    [Panel(raw[c], score_title(names[c], raw_scores[c]), scale[c], boxes_of(c)) for c in classes],
                    [Panel(boosted[c], score_title(names[c], boosted_scores[c]), scale[c], boxes_of(c)) for c in classes],
                ]
                row_labels = ["raw CAM (alpha 1)", f"BoostLU CAM (alpha {alpha:g})"]
            else:
                shown = model_cams[i]
                rows = [[Panel(shown[c], score_title(names[c], cams.scores[i, c]), None, boxes_of(c)) for c in classes]]
                row_labels = None
            suptitle = labels[i] + (f"  (truth: {', '.join(truth[i])})" if truth[i] else "")
            save_overlay_figure(out / files[i], image, rows, row_labels=row_labels, suptitle=suptitle)
            shown_text = ", ".join(score_title(names[c], cams.scores[i, c]) for c in classes)
            items.append((files[i], f"{labels[i]}: {shown_text}"))
        index = write_index(out, items, title=f"CAMs of {args.checkpoint}")
        print(f"wrote {len(items)} figures and {index}")
        return 0
