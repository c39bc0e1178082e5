"""``pamc import-model``: a torchvision or timm classifier trained elsewhere as a pamc run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pamc.errors import PamcError


class ImportModel:
    """``pamc import-model``: convert a GAP + linear classifier into a CAM classifier with BoostLU.

    Writes a run directory (config.yaml, best.safetensors) that ``pamc eval``, ``alpha-sweep``,
    ``cam`` and ``predict`` read like a trained one. At alpha 1 its logits are the original
    model's; the run's inference alpha is ``--alpha`` (default 5, the paper's).
    """

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("import-model", help="bring a torchvision/timm classifier in as a pamc run",
                           description=ImportModel.__doc__)
        p.add_argument("--arch", required=True, help="torchvision:<name> or timm:<name>, e.g. torchvision:resnet50")
        p.add_argument("--weights", required=True, help="the model's state_dict (.pth/.pt or .safetensors)")
        p.add_argument("--classes", required=True, help="text file of class names, one per line, in output order")
        p.add_argument("--output-dir", "-o", required=True, help="run directory to create")
        p.add_argument("--alpha", type=float, default=5.0, help="inference BoostLU alpha of the run (default 5)")
        p.add_argument("--image-size", type=int,
                       help="input resolution (default: timm's for the model, else 224)")
        p.add_argument("--config", "-c", help="YAML config whose data section names the evaluation dataset")
        p.add_argument("--dataset", help="dataset for pamc eval / alpha-sweep (its classes must match)")
        p.add_argument("--data-root", help="dataset root folder")
        p.add_argument("--cache-dir", help="prepared dataset folder")
        p.add_argument("--test-csv", help="csv dataset: a separate test set")
        p.set_defaults(run=ImportModel.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pamc.config import load_config, replace
        from pamc.data.adapters.common import read_lines
        from pamc.engine.rundir import RunDir
        from pamc.explain.cam import model_image_size
        from pamc.models import BoostLU
        from pamc.models.foreign import backbone_name, default_input_size, import_classifier

        BoostLU(args.alpha)
        names = read_lines(Path(args.classes))
        if not names or len(set(names)) != len(names):
            raise PamcError(f"{args.classes} must list each class name once (found {len(names)} names, "
                            f"{len(set(names))} distinct)")
        flags = {"data.dataset": args.dataset, "data.root": args.data_root, "data.cache_dir": args.cache_dir,
                 "data.test_csv": args.test_csv, "data.image_size": args.image_size}
        overrides = {k: v for k, v in flags.items() if v is not None}
        overrides.update({
            "model.backbone": backbone_name(args.arch), "model.pretrained": None,
            "model.train_alpha": 1.0, "model.eval_alpha": args.alpha, "output_dir": args.output_dir,
            "meta.imported_from": {"arch": args.arch, "weights": str(args.weights)},
        })
        cfg = load_config(args.config, overrides)
        if cfg.data.image_size is None and cfg.data.dataset != "synthetic":
            cfg = replace(cfg, data__image_size=default_input_size(args.arch))
        model = import_classifier(args.arch, args.weights, len(names), image_size=model_image_size(cfg),
                                  eval_alpha=args.alpha)
        run = RunDir.create(Path(args.output_dir))
        with run.discard_on_failure():
            run.write_config(cfg)
            run.save_best(model, cfg, tuple(names), {"imported_from": args.arch, "weights": str(args.weights)})
        print(f"imported {args.arch} ({len(names)} classes, BoostLU alpha {args.alpha:g} at inference) -> {run.path}")
        return 0
