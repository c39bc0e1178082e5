"""Published per-dataset hyperparameters of the method zoo, keyed by dataset name.

Sources:

* ``expected_num_pos`` (EPR, ROLE): the ``lookup['expected_num_pos']`` table of the authors'
  code of Cole et al., "Multi-Label Learning from Single Positive Labels", CVPR 2021
  (elijahcole/single-positive-multi-label, ``train.py``): pascal 1.5, coco 2.9, nuswide 1.9,
  cub 31.4 (the average number of positives per training image).
* ``em_alpha``, ``apl_beta``, ``apl_warmup_epochs``, ``apl_neg_proportion`` (EM, EM+APL): the
  per-dataset settings in ``main.py`` of Zhou et al., "Acknowledging the Unknown for
  Multi-label Learning with Single Positive Labels", ECCV 2022
  (Correr-Zhou/SPML-AckTheUnknown).

``synthetic`` is pamc's own scene generator: its expected number of positives is the mean
object count of the default config (1-4 objects, uniform), and EM/APL use the VOC settings.
Explicit ``method.params`` always win over this table (see :func:`resolve_method_params`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class DatasetDefaults:
    """Method hyperparameters that the papers tune per dataset."""

    expected_num_pos: float
    em_alpha: float
    apl_beta: float
    apl_warmup_epochs: int
    apl_neg_proportion: float = 0.9


DATASET_DEFAULTS: dict[str, DatasetDefaults] = {
    "voc2012": DatasetDefaults(expected_num_pos=1.5, em_alpha=0.2, apl_beta=0.02, apl_warmup_epochs=5),
    "coco2014": DatasetDefaults(expected_num_pos=2.9, em_alpha=0.1, apl_beta=0.9, apl_warmup_epochs=5),
    "coco2017": DatasetDefaults(expected_num_pos=2.9, em_alpha=0.1, apl_beta=0.9, apl_warmup_epochs=5),
    "coco": DatasetDefaults(expected_num_pos=2.9, em_alpha=0.1, apl_beta=0.9, apl_warmup_epochs=5),
    "nuswide": DatasetDefaults(expected_num_pos=1.9, em_alpha=0.1, apl_beta=0.2, apl_warmup_epochs=4),
    "cub": DatasetDefaults(expected_num_pos=31.4, em_alpha=0.01, apl_beta=0.4, apl_warmup_epochs=3),
    "synthetic": DatasetDefaults(expected_num_pos=2.5, em_alpha=0.2, apl_beta=0.02, apl_warmup_epochs=5),
}


def dataset_params(method: str, dataset: str) -> dict[str, Any]:
    """The published per-dataset parameters of ``method`` on ``dataset`` ({} if none apply)."""
    d = DATASET_DEFAULTS.get(dataset)
    if d is None:
        return {}
    if method in ("epr", "role", "role-li"):
        return {"expected_num_pos": d.expected_num_pos}
    if method == "em":
        return {"alpha": d.em_alpha}
    if method == "em-apl":
        return {"alpha": d.em_alpha, "beta": d.apl_beta, "warmup_epochs": d.apl_warmup_epochs,
                "neg_proportion": d.apl_neg_proportion}
    return {}


def resolve_method_params(method: str, dataset: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Per-dataset defaults of ``method`` overlaid with the explicit ``params``."""
    return {**dataset_params(method, dataset), **dict(params)}
