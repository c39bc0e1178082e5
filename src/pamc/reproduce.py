"""Reproduce a dataset's rows of the paper's tables from ``configs/paper/<dataset>/``.

:func:`run_reproduce` trains every config of the paper's tables for that dataset (Table 1
and the BoostLU ablation, or Table 3 for OpenImages) for each seed, resumably: a run with
a finished run directory is skipped, a run interrupted after its first ``last`` checkpoint is
resumed exactly, and a row that only evaluates another row's model at a different BoostLU
alpha (``meta.evaluates``: the paper's inference-only AN + BoostLU) reuses that model. The
run directories are what ``pamc table`` reads; the table (ours beside the paper's numbers
and the difference) is returned and written to ``results.md`` / ``results.csv``.

Each row at each seed is an :class:`pamc.arms.ArmRun` run by :func:`pamc.arms.run_arms`, as the
zoo's and the demo's arms are (``jobs`` at a time): configs in, run directories out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pamc.arms import ArmRun, check_results_replaceable, run_arms, write_results_files
from pamc.config import RunConfig, load_config, replace
from pamc.engine import LoggingCallback, RunDir
from pamc.engine.phases import has_progress
from pamc.errors import PamcError
from pamc.table import build_table, format_csv, format_markdown

log = logging.getLogger(__name__)

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "paper"


@dataclass(frozen=True)
class PaperRow:
    """One config of a paper table: its file stem, the config, and the row it evaluates (or None)."""

    name: str
    config: RunConfig
    evaluates: str | None = None


def default_configs_dir() -> Path:
    """``configs/paper`` of this source checkout."""
    if not REPO_CONFIGS.is_dir():
        raise PamcError(f"no paper configs at {REPO_CONFIGS}; pass --configs DIR (the repository's configs/paper)")
    return REPO_CONFIGS


def paper_rows(dataset: str, configs_dir: Path | None = None, rows: Sequence[str] | None = None,
               overrides: Mapping[str, Any] | None = None) -> list[PaperRow]:
    """The configs of ``dataset`` that are rows of the paper's tables (``meta.tables``), trained
    rows first. ``rows`` picks some by file stem; ``overrides`` (dotted keys) apply to every one."""
    folder = (configs_dir or default_configs_dir()) / dataset
    if not folder.is_dir():
        known = sorted(p.name for p in folder.parent.iterdir() if p.is_dir()) if folder.parent.is_dir() else []
        raise PamcError(f"no paper configs for dataset {dataset!r} in {folder.parent}; known: {', '.join(known)}")
    found: dict[str, PaperRow] = {}
    for path in sorted(folder.glob("*.yaml")):
        cfg = load_config(path, overrides)
        if rows is None and not cfg.meta.get("tables"):
            continue
        evaluates = cfg.meta.get("evaluates")
        found[path.stem] = PaperRow(path.stem, cfg, None if evaluates is None else Path(str(evaluates)).name)
    if rows is not None:
        unknown = [r for r in rows if r not in found]
        if unknown:
            raise PamcError(f"no config {', '.join(unknown)} for {dataset}; choices: {', '.join(found)}")
        found = {r: found[r] for r in rows}
    for row in found.values():
        if row.evaluates is not None and row.evaluates not in found:
            raise PamcError(f"row {row.name} evaluates the model of row {row.evaluates}, which is not selected")
    return sorted(found.values(), key=lambda r: r.evaluates is not None)


def run_reproduce(
    dataset: str,
    data_root: str | Path,
    output_dir: str | Path,
    seeds: Sequence[int] = (0,),
    *,
    configs_dir: Path | None = None,
    rows: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    callbacks_for: Callable[[str, int], Sequence[Any]] | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Train (or skip, or resume) every paper row of ``dataset`` for every seed; see the module.

    ``jobs``: runs trained at once, each in its own worker process (:func:`pamc.arms.run_arms`).

    Returns ``{"markdown", "csv", "runs": {run name: "trained" | "resumed" | "skipped" |
    "evaluated"}}``.
    """
    output_dir = Path(output_dir)
    runs = output_dir / "runs"
    check_results_replaceable(output_dir, ("results.md", "results.csv"))
    overrides = {**(overrides or {}), "data.root": str(data_root)}
    table_rows = paper_rows(dataset, configs_dir, rows, overrides)
    specs: list[ArmRun] = []
    status: dict[str, str] = {}
    for seed in seeds:
        for row in table_rows:
            name = f"{row.name}-seed{seed}"
            run_dir = runs / name
            specs.append(ArmRun(row.name, seed, replace(row.config, train__seed=seed, output_dir=str(run_dir)),
                                run_dir, row.evaluates))
            status[name] = ("skipped" if RunDir(run_dir).is_finished else "evaluated" if row.evaluates is not None
                            else "resumed" if has_progress(run_dir) else "trained")
    for name, state in status.items():
        if state in ("trained", "resumed"):
            log.info("%s %s", "resuming" if state == "resumed" else "training", name)
    run_arms(specs, callbacks_for=callbacks_for or (lambda arm, seed: (LoggingCallback(),)), jobs=jobs, resume=True)
    groups = build_table([runs])
    md, csv_text = format_markdown(groups), format_csv(groups)
    write_results_files(output_dir, {"results.md": md, "results.csv": csv_text})
    return {"markdown": md, "csv": csv_text, "runs": status}
