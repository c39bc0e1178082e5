"""Dataset adapters: each registers its reader in the dataset catalog (:mod:`pamc.data.catalog`).

Each reads one dataset in the layout its users download (see docs/datasets.md).
"""

from pamc.data.adapters import coco, csv, cub, nuswide, openimages, voc  # noqa: F401  (registers)
from pamc.data.adapters.common import ParsedDataset, SplitIndex, assemble

__all__ = ["ParsedDataset", "SplitIndex", "assemble"]
