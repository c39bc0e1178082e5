"""Which epoch's weights a run keeps as ``best.safetensors`` (``train.select``).

- ``best_val``: the epoch of highest validation mAP (the paper's protocol, on fully labelled
  validation data);
- ``last``: the last epoch;
- ``auto`` (default): ``best_val`` when the validation labels can rank models, that is when at
  least one class has both a positive and a negative as evaluation sees them; else ``last``,
  with one warning. Validation drawn from a single-positive training CSV has no negative at
  all: every class scores AP 100 for every model, so ``best_val`` would keep epoch 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pamc.data.scoring import Labels, class_label_counts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """The resolved policy: ``mode`` is ``best_val`` or ``last``."""

    mode: str

    def keeps(self, val_map: float, best_map: float) -> bool:
        """Whether the epoch that scored ``val_map`` replaces the kept weights (best so far ``best_map``)."""
        return True if self.mode == "last" else val_map > best_map


def resolve_selection(choice: str, val_labels: Labels, ignore_unobserved: bool) -> Selection:
    """The selection policy for ``train.select = choice`` on these validation labels."""
    if choice not in ("auto", "best_val", "last"):
        raise ValueError(f"unknown selection {choice!r}")
    if choice == "last":
        return Selection("last")
    pos, neg = class_label_counts(val_labels, ignore_unobserved)
    if ((pos > 0) & (neg > 0)).any():
        return Selection("best_val")
    if choice == "best_val":
        log.warning("no validation class has both a positive and a negative label, so validation mAP is the "
                    "same for every model; train.select=best_val keeps the first epoch")
        return Selection("best_val")
    log.warning("no validation class has both a positive and a negative label (validation drawn from a "
                "training set without negatives?), so validation cannot rank models: selecting the last "
                "epoch. Give a completely labelled validation set with --val-csv (data.val_csv) to select on it")
    return Selection("last")
