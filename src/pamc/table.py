"""Aggregate finished runs into the paper's table layout.

Each run directory (:class:`pamc.engine.RunDir`) holds its config and results record (written
by :func:`pamc.engine.fit` and the zoo). Runs are grouped by data set, method and BoostLU alphas; a group's
cell is the mean ± std of test mAP over its runs (seeds). A data set is ``data.name`` when the
run's config gives one, else the dataset with its data root and test CSV: runs of one dataset
name on different roots (two CSV data sets) get one column each, headed by the dataset and the
shortest tail of the root that tells them apart. When a run's config carries
``meta.paper_map`` (the number the paper reports for that row), it is shown beside ours with
the difference (ours − paper). Runs whose config carries ``meta.paper_ablation_map`` (the
paper's Table 2: where BoostLU is applied) also get that table. The configs in
``configs/paper/`` carry these (``configs/make_configs.py``).
Runs that report the mAP of classes grouped by training frequency (``test_group_map``,
OpenImages G1..G5) get a second table of those groups, beside ``meta.paper_group_map``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from pamc.config import DataConfig
from pamc.engine.phases import LINEAR_INIT_DIR
from pamc.engine.rundir import RESULTS_FILE, RunDir
from pamc.errors import PamcError


@dataclass(frozen=True)
class RunRecord:
    """What the table needs from one finished run."""

    path: Path
    dataset: str
    method: str
    train_alpha: float
    eval_alpha: float
    seed: int
    test_map: float
    paper_map: float | None
    group_map: tuple[float, ...] | None = None
    paper_group_map: tuple[float, ...] | None = None
    source: str = ""  # what the data set is: data.name, or the data root and test CSV
    paper_ablation_map: float | None = None


@dataclass
class Group:
    """All runs of one (dataset, method, train alpha, eval alpha) cell."""

    dataset: str
    method: str
    train_alpha: float
    eval_alpha: float
    maps: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    paper_map: float | None = None
    group_maps: list[tuple[float, ...]] = field(default_factory=list)
    paper_group_map: tuple[float, ...] | None = None
    paper_ablation_map: float | None = None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.maps)

    @property
    def std(self) -> float:
        return _std(self.maps)

    @property
    def num_groups(self) -> int:
        """Number of frequency groups every run of this cell reports (0 when some run has none)."""
        sizes = {len(g) for g in self.group_maps}
        return sizes.pop() if len(self.group_maps) == len(self.maps) and len(sizes) == 1 else 0

    def group_stats(self) -> list[tuple[float, float]]:
        """(mean, std) over runs of each frequency group's mAP, rarest group first."""
        return [(statistics.fmean(col), _std(col)) for col in zip(*self.group_maps)] if self.num_groups else []

    @property
    def row_label(self) -> str:
        return method_label(self.method, self.train_alpha, self.eval_alpha)


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _numbers(value: Any, what: str) -> tuple[float, ...] | None:
    """A list of numbers (``meta.paper_group_map``, ``test_group_map``) or None."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise PamcError(f"{what} must be a non-empty list of numbers or null, got {value!r}")
    return tuple(float(v) for v in value)


def method_label(method: str, train_alpha: float, eval_alpha: float) -> str:
    """``ll-r``, ``ll-r + BoostLU`` (train and test) or ``ll-r + BoostLU (inference, a=5)``."""
    if train_alpha == 1.0 and eval_alpha == 1.0:
        return method
    if train_alpha == eval_alpha:
        return f"{method} + BoostLU (a={train_alpha:g})"
    if train_alpha == 1.0:
        return f"{method} + BoostLU (inference, a={eval_alpha:g})"
    return f"{method} + BoostLU (train a={train_alpha:g}, test a={eval_alpha:g})"


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories given directly or found below the given folders."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise PamcError(f"no such run directory: {p}")
        if (p / RESULTS_FILE).is_file():
            found.append(p)
        else:  # the first phase of a two-phase run is part of that run, not a row
            found.extend(sorted(r.parent for r in p.rglob(RESULTS_FILE) if r.parent.name != LINEAR_INIT_DIR))
    if not found:
        raise PamcError("no finished runs (test_results.json) under the given paths")
    return sorted(set(found))


def read_run(path: Path) -> RunRecord:
    """Read one run directory."""
    run = RunDir(path)
    if not run.config_path.is_file():
        raise PamcError(f"{path} has {RESULTS_FILE} but no {run.config_path.name}")
    cfg = run.read_config()
    results = run.read_results()
    group_map = _numbers(results.test_group_map, f"{run.results_path}: test_group_map")
    paper, ablation = (_number(cfg.meta.get(key), f"{run.config_path}: meta.{key}")
                       for key in ("paper_map", "paper_ablation_map"))
    paper_groups = _numbers(cfg.meta.get("paper_group_map"), f"{run.config_path}: meta.paper_group_map")
    return RunRecord(path, cfg.data.name or cfg.data.dataset, cfg.method.name, cfg.model.train_alpha,
                     cfg.model.resolved_eval_alpha, cfg.train.seed, results.test_map, paper, group_map, paper_groups,
                     source=_source(cfg.data), paper_ablation_map=ablation)


def _source(data: DataConfig) -> str:
    if data.name:
        return data.name
    paths = [os.path.normpath(os.path.expanduser(p)) for p in (data.root, data.test_csv) if p]
    return " + ".join(paths)


def name_data_sets(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Records whose ``dataset`` names one data set: a dataset name shared by runs of several
    sources becomes ``name (root tail)``."""
    sources: dict[str, set[str]] = {}
    for r in records:
        sources.setdefault(r.dataset, set()).add(r.source)
    labels: dict[tuple[str, str], str] = {}
    for name, found in sources.items():
        if len(found) == 1:
            labels[(name, found.pop())] = name
            continue
        parts = {src: Path(src).parts for src in found}
        for k in range(1, max(map(len, parts.values())) + 1):
            tails = {src: "/".join(p[-k:]) for src, p in parts.items()}
            if len(set(tails.values())) == len(found):
                break
        else:
            tails = {src: src for src in found}
        labels.update({(name, src): f"{name} ({tail})" for src, tail in tails.items()})
    return [dataclasses.replace(r, dataset=labels[(r.dataset, r.source)]) for r in records]


def _number(value: Any, what: str) -> float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise PamcError(f"{what} must be a number or null, got {value!r}")
    return None if value is None else float(value)


def group_runs(records: Sequence[RunRecord]) -> list[Group]:
    """Group records by dataset, method and alphas; sorted by those (plain method first)."""
    groups: dict[tuple[str, str, float, float], Group] = {}
    for r in name_data_sets(records):
        key = (r.dataset, r.method, r.train_alpha, r.eval_alpha)
        g = groups.setdefault(key, Group(*key))
        g.maps.append(r.test_map)
        g.seeds.append(r.seed)
        if r.group_map is not None:
            g.group_maps.append(r.group_map)
        for key in ("paper_map", "paper_ablation_map"):
            mine, theirs = getattr(g, key), getattr(r, key)
            if theirs is not None:
                if mine is not None and not math.isclose(mine, theirs):
                    raise PamcError(f"runs of {g.row_label} on {g.dataset} disagree on meta.{key} "
                                    f"({mine} vs {theirs})")
                setattr(g, key, theirs)
        if r.paper_group_map is not None:
            if g.paper_group_map is not None and not (
                    len(g.paper_group_map) == len(r.paper_group_map)
                    and all(map(math.isclose, g.paper_group_map, r.paper_group_map))):
                raise PamcError(f"runs of {g.row_label} on {g.dataset} disagree on meta.paper_group_map "
                                f"({list(g.paper_group_map)} vs {list(r.paper_group_map)})")
            g.paper_group_map = r.paper_group_map
    return sorted(groups.values(), key=lambda g: (g.dataset, g.method, (g.train_alpha, g.eval_alpha) != (1.0, 1.0),
                                                  g.train_alpha, g.eval_alpha))


def _cell(mean: float, std: float, paper: float | None, show_paper: bool) -> str:
    """``ours ± std``, with ``(paper P, Δ ours-P)`` when the table shows paper numbers."""
    text = f"{mean:.2f} ± {std:.2f}"
    if show_paper:
        text += f" (paper {paper:.2f}, Δ {mean - paper:+.2f})" if paper is not None else " (—)"
    return text


PAPER_NOTE = "; in parentheses the paper's number and the difference Δ = ours − paper"


def format_ablation_markdown(groups: Sequence[Group]) -> str:
    """The paper's Table 2 (where BoostLU is applied) for the cells whose config carries
    ``meta.paper_ablation_map``: rows AN, AN + BoostLU at inference, LL-R + BoostLU; columns
    datasets. Empty if no cell does."""
    cells = [g for g in groups if g.paper_ablation_map is not None]
    if not cells:
        return ""
    datasets = list(dict.fromkeys(g.dataset for g in cells))
    order = sorted({(g.method != "an", g.train_alpha, g.eval_alpha, g.method, g.row_label) for g in cells})
    by_key = {(g.row_label, g.dataset): g for g in cells}
    lines = ["| BoostLU ablation | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for *_, label in order:
        row = [by_key[(label, d)] if (label, d) in by_key else None for d in datasets]
        lines.append(f"| {label} | " + " | ".join(
            "—" if g is None else _cell(g.mean, g.std, g.paper_ablation_map, True) for g in row) + " |")
    return "\n".join(lines) + "\n\nthe paper's Table 2: BoostLU in neither, at inference only, or in training and " \
        "inference" + PAPER_NOTE + "\n"


def _dataset_cell(g: Group | None, show_paper: bool) -> str:
    return "—" if g is None else _cell(g.mean, g.std, g.paper_map, show_paper)


def format_group_markdown(groups: Sequence[Group]) -> str:
    """For cells whose runs all report frequency-group mAPs (OpenImages): one table per dataset,
    rows method, columns all classes then G1 (rarest) .. Gk; cells ours (paper). Empty if none."""
    tables = []
    for dataset in dict.fromkeys(g.dataset for g in groups):
        cells = [g for g in groups if g.dataset == dataset and g.num_groups]
        if not cells:
            continue
        k = max(g.num_groups for g in cells)
        show_paper = any(g.paper_map is not None or g.paper_group_map is not None for g in cells)
        lines = [f"| {dataset} | all | " + " | ".join(f"G{i + 1}" for i in range(k)) + " |",
                 "|---|---|" + "---|" * k]
        for g in cells:
            paper: Sequence[float | None] = g.paper_group_map or ()
            if len(paper) != g.num_groups:
                paper = (None,) * g.num_groups
            row = [_cell(g.mean, g.std, g.paper_map, show_paper)]
            row += [_cell(m, s, p, show_paper) for (m, s), p in zip(g.group_stats(), paper)]
            row += ["—"] * (k - g.num_groups)
            lines.append(f"| {g.row_label} | " + " | ".join(row) + " |")
        note = "test mAP of all classes and of the classes in groups of rising training frequency"
        if show_paper:
            note += PAPER_NOTE
        tables.append("\n".join(lines) + "\n\n" + note + "\n")
    return "\n".join(tables)


def format_markdown(groups: Sequence[Group]) -> str:
    """Rows: method (and alphas); columns: datasets; cells: ours (paper)."""
    datasets = list(dict.fromkeys(g.dataset for g in groups))
    rows = list(dict.fromkeys(g.row_label for g in groups))
    by_key = {(g.row_label, g.dataset): g for g in groups}
    show_paper = any(g.paper_map is not None for g in groups)
    seeds = sorted({len(g.maps) for g in groups})
    lines = [
        "| method | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(_dataset_cell(by_key.get((row, d)), show_paper) for d in datasets)
                     + " |")
    note = f"test mAP, mean ± std over {'/'.join(map(str, seeds))} run(s) per cell"
    if show_paper:
        note += PAPER_NOTE
    text = "\n".join(lines) + "\n\n" + note + "\n"
    for extra in (format_ablation_markdown(groups), format_group_markdown(groups)):
        if extra:
            text += "\n" + extra
    return text


def format_csv(groups: Sequence[Group]) -> str:
    """One line per group, long format."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "method", "train_alpha", "eval_alpha", "runs", "seeds", "map_mean", "map_std", "paper_map",
                "group_map_mean", "paper_group_map", "paper_ablation_map"])
    for g in groups:
        w.writerow([g.dataset, g.method, f"{g.train_alpha:g}", f"{g.eval_alpha:g}", len(g.maps),
                    " ".join(map(str, g.seeds)), f"{g.mean:.4f}", f"{g.std:.4f}",
                    "" if g.paper_map is None else f"{g.paper_map:g}",
                    " ".join(f"{m:.4f}" for m, _ in g.group_stats()),
                    "" if g.paper_group_map is None else " ".join(f"{v:g}" for v in g.paper_group_map),
                    "" if g.paper_ablation_map is None else f"{g.paper_ablation_map:g}"])
    return buf.getvalue()


def build_table(paths: Iterable[str | Path]) -> list[Group]:
    """Find, read and group the runs below ``paths``."""
    return group_runs([read_run(p) for p in find_run_dirs(paths)])
