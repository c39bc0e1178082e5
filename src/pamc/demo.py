"""The demo: the paper's central comparison, on the built-in synthetic scenes or any dataset.

Every arm fine-tunes from one pretrained backbone, as in the paper: by default a backbone
pretrained once on full labels of disjoint synthetic scenes and cached (:mod:`pamc.pretrain`),
or whatever ``model.pretrained`` accepts (a weights file, ``imagenet`` where the backbone has
ImageNet weights); ``pretrained=None`` trains from scratch. Five arms share the data, the
observed labels and the training seeds:

* ``full``: trained on full labels (upper bound);
* ``an``: assume negative on single positive labels;
* ``an + BoostLU (inference)``: the AN model with BoostLU applied at test time only;
* ``ll-r``: Large-Loss rejection;
* ``ll-r + BoostLU``: LL-R with BoostLU in training and inference.

The table reports test mAP (mean ± std over seeds), the AN-to-full gap and the share of it
that each arm closes.
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any, Sequence

from pamc.arms import Arm, check_results_replaceable, plan, run_arms, write_results_files
from pamc.config import RunConfig, config_from_dict, replace
from pamc.data import build_dataset
from pamc.data.labels import false_negative_rate
from pamc.pretrain import disjoint_task, pretrained_backbone

log = logging.getLogger(__name__)

BOOST_ALPHA = 5.0
SYNTHETIC_PRETRAINING = "synthetic"  # the default start: pretrained on disjoint synthetic scenes
FINE_TUNE_LR = 1e-3


def default_arms(ll_delta_rel: float) -> list[Arm]:
    return [
        Arm("full", "full", 1.0, 1.0),
        Arm("an", "an", 1.0, 1.0),
        Arm("an + BoostLU (inference)", "an", 1.0, BOOST_ALPHA, reuse="an"),
        Arm("ll-r", "ll-r", 1.0, 1.0),
        Arm("ll-r + BoostLU", "ll-r", BOOST_ALPHA, BOOST_ALPHA),
    ]


def demo_config(quick: bool = False, backbone: str = "smallcnn") -> RunConfig:
    """The demo's config from scratch: small CNN, synthetic scenes, a schedule that fits a CPU, one
    intra-op thread per training (so results do not depend on ``--jobs``).

    It is also the pretraining recipe (on scenes of another seed, see :func:`pamc.pretrain.disjoint_task`).
    """
    synthetic = {"num_train": 1600, "num_test": 1000, "image_size": 48} if not quick else \
        {"num_train": 500, "num_test": 300, "image_size": 48}
    return config_from_dict({
        "data": {"dataset": "synthetic", "synthetic": synthetic},
        "model": {"backbone": backbone},
        "train": {"epochs": 20 if not quick else 4, "batch_size": 32, "lr": 4e-3, "head_lr_mult": 10.0,
                  "threads": 1},
    })


def fine_tune_config(base: RunConfig, pretrained: str | None, quick: bool = False) -> RunConfig:
    """The arms' config: from ``pretrained`` weights, half the epochs at a quarter of the rate."""
    if pretrained is None:
        return base
    epochs = base.train.epochs if quick else max(base.train.epochs // 2, 1)
    return replace(base, model__pretrained=pretrained, train__lr=FINE_TUNE_LR, train__epochs=epochs)


def resolve_pretrained(pretrained: str | None, backbone: str, quick: bool, cache_dir: Path) -> str | None:
    """``"synthetic"`` becomes the cached backbone file (pretrained here if absent); others pass."""
    if pretrained != SYNTHETIC_PRETRAINING:
        return pretrained
    return str(pretrained_backbone(disjoint_task(demo_config(quick, backbone)), cache_dir))


def ll_delta_rel_for(epochs: int, false_negative_rate: float) -> float:
    """delta_rel (% per epoch) so that the rejected share reaches ``false_negative_rate``.

    The clean rate falls by delta_rel/100 per epoch from epoch 2 on, so after ``epochs``
    epochs it has fallen ``(epochs - 1) * delta_rel / 100``.
    """
    return 100.0 * false_negative_rate / max(epochs - 1, 1)


def run_demo(
    output_dir: Path,
    seeds: Sequence[int] = (0, 1),
    *,
    quick: bool = False,
    pretrained: str | None = SYNTHETIC_PRETRAINING,
    backbone: str = "smallcnn",
    dataset: str | None = None,
    data_root: str | None = None,
    overrides: dict[str, Any] | None = None,
    pretrain_cache: Path | None = None,
    callbacks_for: Any = None,
    jobs: int = 1,
    threads: int | str | None = None,
) -> dict[str, Any]:
    """Train every arm for every seed, ``jobs`` at a time on ``threads`` intra-op threads each
    (default: the demo config's one); return and write the table (Markdown and JSON).

    ``dataset``/``data_root`` replace the synthetic scenes by any dataset pamc reads;
    ``overrides`` are dotted config keys applied last (e.g. ``{"train.epochs": 2}``). The
    synthetic pretraining is cached in ``pretrain_cache`` (default ``output_dir/pretrained``).
    """
    output_dir = Path(output_dir)
    runs = output_dir / "runs"
    check_results_replaceable(output_dir, ("results.json", "results.md"))
    start = resolve_pretrained(pretrained, backbone, quick, Path(pretrain_cache or output_dir / "pretrained"))
    base = fine_tune_config(demo_config(quick, backbone), start, quick)
    if threads is not None:
        base = replace(base, train__threads=threads)
    if dataset is not None:
        base = replace(base, data={"dataset": dataset, "root": data_root})
    if overrides:
        base = replace(base, **{k.replace(".", "__"): v for k, v in overrides.items()})
    bundle = build_dataset(base.data)
    fn_rate = false_negative_rate(bundle.train.full, bundle.train.observed.to_numpy())
    delta_rel = ll_delta_rel_for(base.train.epochs, fn_rate)
    log.info("false-negative rate among unobserved labels %.3f -> LL delta_rel %.3f", fn_rate, delta_rel)
    arms = default_arms(delta_rel)
    specs = plan(arms, seeds, base, runs, lambda method: {"delta_rel": delta_rel} if method.startswith("ll-") else {},
                 record_reused=False)
    scores: dict[str, list[float]] = {arm.name: [] for arm in arms}
    for spec, result in zip(specs, run_arms(specs, dataset=bundle, callbacks_for=callbacks_for, jobs=jobs)):
        scores[spec.arm].append(result.test_map)
    table = summarize(scores, "an", "full")
    table["false_negative_rate"] = fn_rate
    table["ll_delta_rel"] = delta_rel
    table["seeds"] = list(seeds)
    table["epochs"] = base.train.epochs
    table["dataset"] = bundle.name
    table["backbone"] = base.model.backbone
    table["pretrained"] = pretrained
    write_results_files(output_dir, {"results.json": json.dumps(table, indent=2), "results.md": format_markdown(table)})
    return table


def summarize(scores: dict[str, list[float]], low: str, high: str) -> dict[str, Any]:
    """Mean, std and the share of the ``low``-to-``high`` gap closed, per arm."""
    lo = statistics.fmean(scores[low])
    hi = statistics.fmean(scores[high])
    rows = []
    for name, values in scores.items():
        mean = statistics.fmean(values)
        rows.append({
            "arm": name,
            "map_mean": mean,
            "map_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "gap_closed": (mean - lo) / (hi - lo) if hi != lo else float("nan"),
            "runs": values,
        })
    return {"rows": rows}


def gap_line(table: dict[str, Any]) -> str:
    """The AN-to-full gap in mAP points and the share of it that the two BoostLU arms close."""
    rows = {row["arm"]: row for row in table["rows"]}
    gap = rows["full"]["map_mean"] - rows["an"]["map_mean"]
    inference, llr = rows["an + BoostLU (inference)"], rows["ll-r + BoostLU"]
    return (f"AN-to-full gap: {gap:.2f} mAP points; AN + BoostLU (inference) closes "
            f"{100 * inference['gap_closed']:+.0f}% of it, LL-R + BoostLU {100 * llr['gap_closed']:+.0f}%")


def format_markdown(table: dict[str, Any]) -> str:
    lines = [
        "| arm | test mAP (mean ± std) | AN→full gap closed |",
        "|---|---|---|",
    ]
    for row in table["rows"]:
        lines.append(f"| {row['arm']} | {row['map_mean']:.2f} ± {row['map_std']:.2f} | {100 * row['gap_closed']:+.0f}% |")
    return "\n".join(lines) + "\n\n" + gap_line(table) + "\n"
