"""Argument types and helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def alpha_list(text: str) -> list[float]:
    """``5`` or ``1,2,5,10``: one or more BoostLU alphas."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one alpha")
    return values


def positive_int(text: str) -> int:
    """A positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def threads_arg(text: str) -> int | str:
    """``auto`` or a positive thread count."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}") from None


def add_parallel_args(p: argparse.ArgumentParser, *, default_jobs: int | None = None,
                      threads_help: str = "intra-op threads per arm (default 1; results depend on it, not on --jobs)") -> None:
    """``--jobs`` and ``--threads`` of the commands that train several arms; ``default_jobs``
    ``None`` means the usable cores."""
    from pamc.engine.threads import usable_cores

    cores = usable_cores()
    jobs = cores if default_jobs is None else default_jobs
    what = f"the usable cores, {cores}" if default_jobs is None else str(default_jobs)
    p.add_argument("--jobs", "-j", type=positive_int, default=jobs,
                   help=f"arms trained at once, each in its own process (default: {what})")
    p.add_argument("--threads", type=threads_arg, default=None, help=threads_help)


def alpha_rows(args: argparse.Namespace, alphas: Sequence[float] | None) -> tuple[Any, list[dict[str, Any]]]:
    """The trained run named by ``args.checkpoint`` and its ``args.split`` mAP at each alpha
    (default: the model's own inference alpha); ``args.data_root``/``args.device`` as given."""
    from pamc.engine import evaluate_at_alphas, load_trained, resolve_device

    trained = load_trained(args.checkpoint, resolve_device(args.device), with_dataset=True, data_root=args.data_root)
    bundle = trained.dataset()
    split = bundle.test if args.split == "test" else bundle.val
    rows = evaluate_at_alphas(trained, split, alphas or [trained.model.eval_alpha],
                              ignore_unobserved=bundle.partial_test_labels)
    return trained, rows


def report_alpha_rows(trained: Any, rows: list[dict[str, Any]], split: str, json_out: str | None) -> None:
    """Print the alpha / mAP table; with ``json_out``, also write it (atomically) as JSON."""
    from pamc.engine.checkpoint import atomic_write_text

    print(f"{'alpha':>8}  {split} mAP")
    for row in rows:
        print(f"{row['alpha']:>8g}  {row['map']:.2f}")
    if json_out:
        atomic_write_text(Path(json_out), json.dumps({"checkpoint": str(trained.path), "split": split,
                                                      "results": rows}, indent=2))
