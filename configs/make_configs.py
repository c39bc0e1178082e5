"""Write one YAML config per row of the paper's result tables.

    PYTHONPATH=src python configs/make_configs.py        # rewrites configs/paper/**.yaml

Rows: Kim et al., "Bridging the Gap between Model Explanations in Partially Annotated
Multi-label Classification", CVPR 2023 - Table 1 (single positive label; VOC 2012, COCO 2014,
NUS-WIDE, CUB) and the OpenImages V3 table - plus the zoo's methods that the paper does not
report (their ``meta.paper_map`` is null and ``meta.source`` says where the method comes from).

The paper's numbers live in one place, :data:`PAPER_NUMBERS`, keyed by (dataset, method,
BoostLU). An entry is only made for a number read verbatim in a named source, which goes into
``meta.paper_map_source``; ``meta.paper_map_status`` is "verified" when the source is the
BoostLU paper itself and "from-method-paper" when it is the method's own paper reporting the
same setting. OpenImages entries also carry the mAP of the 5 frequency groups
(``meta.paper_group_map``, G1 rarest .. G5). Rows without an entry keep ``paper_map: null``
and status "unverified". ``pamc table`` shows the numbers beside ours.

:data:`PAPER_NUMBERS` is empty: no stored source with the numbers as text was found. The
tables of the paper and of its README (youngwk/BridgeGapExplanationPAMC), of the LL paper's
README (snucml/LargeLossMatters) and of the author page (eml-unitue.de) are images, and the
stored copies of the papers' text (arXiv 2304.01804, 2206.03740, 2106.09708, 2203.16219) end
before their result tables. Numbers remembered or quoted by later papers are not entered.

Method hyperparameters that the papers tune per dataset come from
:data:`pamc.data.catalog.METADATA` (the dataset catalog); a test checks that the files agree with it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pamc.data.catalog import dataset_params

PAPER = "Kim et al., Bridging the Gap between Model Explanations in Partially Annotated Multi-label Classification, CVPR 2023"
SINGLE_POSITIVE_DATASETS = ("voc2012", "coco2014", "nuswide", "cub")
BOOST_ALPHA = 5.0

# (method, BoostLU in training and inference, in the paper's table, source of the method)
SINGLE_POSITIVE_ROWS: tuple[tuple[str, bool, bool, str], ...] = (
    ("full", False, True, "fully labelled upper bound"),
    ("an", False, True, "assume negative"),
    ("an-ls", False, True, "Cole et al., CVPR 2021"),
    ("wan", False, True, "Cole et al., CVPR 2021"),
    ("epr", False, True, "Cole et al., CVPR 2021"),
    ("role", False, True, "Cole et al., CVPR 2021"),
    ("role-li", False, True, "Cole et al., CVPR 2021 (LinearInit)"),
    ("em", False, True, "Zhou et al., ECCV 2022"),
    ("em-apl", False, True, "Zhou et al., ECCV 2022"),
    ("ll-r", False, True, "Kim et al., CVPR 2022"),
    ("ll-ct", False, True, "Kim et al., CVPR 2022"),
    ("ll-cp", False, True, "Kim et al., CVPR 2022"),
    ("an", True, True, "BoostLU (this paper)"),
    ("ll-r", True, True, "BoostLU (this paper)"),
    ("ll-ct", True, True, "BoostLU (this paper)"),
    ("ll-cp", True, True, "BoostLU (this paper)"),
    ("asl", False, False, "Ridnik et al., ICCV 2021 (not a row of the paper's table)"),
    ("gr-loss", False, False, "Chen et al., IJCAI 2024 (published after the paper)"),
)

OPENIMAGES_ROWS: tuple[tuple[str, bool], ...] = (
    ("an", False), ("ll-r", False), ("ll-ct", False), ("ll-cp", False),
    ("an", True), ("ll-r", True), ("ll-ct", True), ("ll-cp", True),
)
OPENIMAGES = "openimages-v3"
OPENIMAGES_GROUPS = 5
SOURCE_STATUSES = ("verified", "from-method-paper")


@dataclass(frozen=True)
class PaperNumber:
    """A test mAP (percent) the literature reports for one table row, and where it was read.

    ``status`` is "verified" (read in the BoostLU paper) or "from-method-paper" (read in the
    method's own paper, same dataset and single-positive ResNet-50 setting). ``group_map`` is
    the OpenImages G1..G5 mAP, rarest group first, or None.
    """

    value: float
    source: str
    status: str
    group_map: tuple[float, ...] | None = None


# (dataset, method, BoostLU) -> PaperNumber. Only numbers read verbatim in ``source``.
PAPER_NUMBERS: dict[tuple[str, str, bool], PaperNumber] = {}


def check_paper_numbers(numbers: dict[tuple[str, str, bool], PaperNumber]) -> None:
    """Every entry names a row of the tables, a known status, a source and sane values."""
    rows = {(d, m, b) for d in SINGLE_POSITIVE_DATASETS for m, b, in_paper, _ in SINGLE_POSITIVE_ROWS if in_paper}
    rows |= {(OPENIMAGES, m, b) for m, b in OPENIMAGES_ROWS}
    for key, num in numbers.items():
        if key not in rows:
            raise ValueError(f"PAPER_NUMBERS{key}: not a row of the paper's tables")
        if num.status not in SOURCE_STATUSES:
            raise ValueError(f"PAPER_NUMBERS{key}: status {num.status!r}, expected one of {SOURCE_STATUSES}")
        if not num.source.strip():
            raise ValueError(f"PAPER_NUMBERS{key}: a number needs its source")
        values = [num.value, *(num.group_map or ())]
        if not all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in values):
            raise ValueError(f"PAPER_NUMBERS{key}: mAP values must be percentages, got {values}")
        if key[0] == OPENIMAGES and num.group_map is not None and len(num.group_map) != OPENIMAGES_GROUPS:
            raise ValueError(f"PAPER_NUMBERS{key}: {OPENIMAGES_GROUPS} group mAPs expected, got {num.group_map}")
        if key[0] != OPENIMAGES and num.group_map is not None:
            raise ValueError(f"PAPER_NUMBERS{key}: group mAPs are reported for {OPENIMAGES} only")


def paper_meta(dataset: str, method: str, boost: bool, in_paper: bool = True) -> dict[str, Any]:
    """The ``meta`` fields about the paper's number for one row."""
    num = PAPER_NUMBERS.get((dataset, method, boost))
    if num is not None:
        status = num.status
    else:
        status = "unverified" if in_paper else "not in the paper"
    meta: dict[str, Any] = {
        "paper_map": None if num is None else num.value,
        "paper_map_status": status,
        "paper_map_source": None if num is None else num.source,
    }
    if dataset == OPENIMAGES:
        meta["paper_group_map"] = None if num is None or num.group_map is None else list(num.group_map)
    return meta


def row_name(method: str, boost: bool) -> str:
    return f"{method}-boostlu" if boost else method


def single_positive_config(dataset: str, method: str, boost: bool, in_paper: bool, source: str) -> dict[str, Any]:
    alpha = BOOST_ALPHA if boost else 1.0
    params = dataset_params(method, dataset)
    epochs = 10
    if method == "role-li":
        epochs = 35  # 25 epochs on frozen features, then 10 end to end (Cole et al.)
    return {
        "data": {"dataset": dataset, "image_size": 448, "num_pos": 1, "num_neg": 0, "obs_seed": 1200},
        "model": {"backbone": "resnet50", "pretrained": "torchvision", "train_alpha": alpha, "eval_alpha": alpha},
        "method": {"name": method, "params": params},
        "train": {"epochs": epochs, "batch_size": 8, "lr": 1.0e-5, "head_lr_mult": 10.0},
        "output_dir": f"runs/{dataset}/{row_name(method, boost)}",
        "meta": {
            "paper": PAPER,
            "table": "Table 1: single positive label, end-to-end, ResNet-50" if in_paper else None,
            "row": (method.upper() + (" + BoostLU" if boost else "")),
            "source": source,
            **paper_meta(dataset, method, boost, in_paper),
        },
    }


def openimages_config(method: str, boost: bool) -> dict[str, Any]:
    alpha = BOOST_ALPHA if boost else 1.0
    params = {"delta_rel": 0.01} if method.startswith("ll-") else {}
    return {
        "data": {"dataset": OPENIMAGES, "image_size": 224},
        "model": {"backbone": "resnet101", "pretrained": "torchvision", "train_alpha": alpha, "eval_alpha": alpha},
        "method": {"name": method, "params": params},
        "train": {"epochs": 20, "batch_size": 96, "lr": 2.0e-5, "head_lr_mult": 10.0},
        "output_dir": f"runs/openimages-v3/{row_name(method, boost)}",
        "meta": {
            "paper": PAPER,
            "table": "OpenImages V3 (large-scale partial labels)",
            "row": (method.upper() + (" + BoostLU" if boost else "")),
            "source": "Kim et al., CVPR 2022 protocol: 20 epochs, lr 2e-5, delta_rel searched in {0.005, 0.01}",
            **paper_meta(OPENIMAGES, method, boost),
        },
    }


def all_configs() -> dict[str, dict[str, Any]]:
    """Relative path -> config mapping."""
    check_paper_numbers(PAPER_NUMBERS)
    out: dict[str, dict[str, Any]] = {}
    for dataset in SINGLE_POSITIVE_DATASETS:
        for method, boost, in_paper, source in SINGLE_POSITIVE_ROWS:
            out[f"paper/{dataset}/{row_name(method, boost)}.yaml"] = single_positive_config(
                dataset, method, boost, in_paper, source)
    for method, boost in OPENIMAGES_ROWS:
        out[f"paper/{OPENIMAGES}/{row_name(method, boost)}.yaml"] = openimages_config(method, boost)
    return out


def render(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)


def main(root: Path) -> int:
    for rel, cfg in all_configs().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(cfg))
    print(f"wrote {len(all_configs())} configs under {root / 'paper'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(__file__).resolve().parent))
