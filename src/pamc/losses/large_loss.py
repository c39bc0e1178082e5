"""Large-Loss rejection and correction (Kim et al., CVPR 2022).

"Large Loss Matters in Weakly Supervised Multi-Label Classification": with assume-negative
training, the unobserved entries with the largest losses are likely false negatives. After
the first epoch a growing share of them is rejected (LL-R) or treated as positive for the
batch (LL-Ct), or a fixed share per batch is relabelled positive for good (LL-Cp).
"""

from __future__ import annotations

import math
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor

from pamc.errors import ConfigError
from pamc.losses.base import (
    LOSSES,
    LossOutput,
    PartialLabelLoss,
    assume_negative_loss_matrix,
    check_shapes,
)


class LargeLossMode(str, Enum):
    """What happens to the selected large-loss entries."""

    REJECT = "reject"
    CORRECT_TEMPORARY = "correct-temporary"
    CORRECT_PERMANENT = "correct-permanent"


def selection_size(num_entries: int, fraction: float) -> int:
    """``ceil(num_entries * fraction)``, ignoring float error below 1e-9 (1 - 0.7 != 0.3)."""
    return math.ceil(round(num_entries * fraction, 9))


class LargeLoss(PartialLabelLoss):
    """Assume-negative BCE whose largest unobserved losses are rejected or corrected.

    Epoch 1 is plain assume-negative. In each later batch the ``k`` largest losses among the
    unobserved entries are selected (observed entries never are), with
    ``k = ceil(B*C*(1 - clean_rate))`` for LL-R/LL-Ct and ``k = ceil(B*C*delta_rel/100)`` for
    LL-Cp, clipped to the number of unobserved entries. The loss is the mean over all B*C
    entries of the modified loss matrix.

    ``protocol`` fixes the arithmetic of ``clean_rate`` (a float64 buffer) and ``k``:

    * ``"pamc"``: ``clean_rate = max(0, 1 - (epoch - 1) * delta_rel / 100)`` and ``k`` ignores
      float error below 1e-9 (:func:`selection_size`);
    * ``"authors"``: as the authors' code, ``clean_rate`` starts at 1 and ``delta_rel / 100`` is
      subtracted once per finished epoch in float64, and ``k`` is the plain ``math.ceil``, so
      float error can add one: ``ceil(320 * (1 - 0.975)) = ceil(8.000000000000007) = 9`` in
      epoch 6 at ``delta_rel = 0.5``, B*C = 320.

    Trained data-parallel (:meth:`bind_collective`), ``B`` is the global batch and the top-k
    is taken over all ranks' entries.

    One public implementation compares the scheme string with ``is``, which is always False,
    so its LL-Cp correction never runs. Here LL-Cp returns the corrected entries explicitly
    in :attr:`LossOutput.corrections`, and the engine writes them into the label store.
    """

    clean_rate: Tensor

    def __init__(self, mode: LargeLossMode, delta_rel: float, protocol: str = "pamc") -> None:
        super().__init__()
        if protocol not in ("authors", "pamc"):
            raise ConfigError(f"protocol must be authors or pamc, got {protocol!r}")
        self.protocol = protocol
        if isinstance(delta_rel, bool) or not isinstance(delta_rel, (int, float)):
            raise ConfigError(f"delta_rel must be a number, got {delta_rel!r}")
        if not 0 < delta_rel < 100:
            raise ConfigError(f"delta_rel must be in (0, 100) percent per epoch, got {delta_rel}")
        self.mode = LargeLossMode(mode)
        self.delta_rel = float(delta_rel)
        self.register_buffer("clean_rate", torch.tensor(1.0, dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"mode={self.mode.value}, delta_rel={self.delta_rel}, protocol={self.protocol}"

    def on_epoch_start(self, epoch: int) -> None:
        if epoch < 1:
            raise ValueError(f"epochs are 1-based, got {epoch}")
        if self.protocol == "authors":
            rate = 1.0
            for _ in range(epoch - 1):
                rate -= self.delta_rel / 100
        else:
            rate = max(0.0, 1.0 - (epoch - 1) * self.delta_rel / 100)
        self.clean_rate.fill_(rate)

    def epoch_metrics(self) -> dict[str, float]:
        return {"clean_rate": float(self.clean_rate)}

    def num_selected(self, num_entries: int) -> int:
        """``k`` for a batch of ``num_entries`` = B*C entries in the current epoch (0 in epoch 1)."""
        clean_rate = float(self.clean_rate)
        if clean_rate >= 1.0:
            return 0
        fraction = self.delta_rel / 100 if self.mode is LargeLossMode.CORRECT_PERMANENT else 1.0 - clean_rate
        if self.protocol == "authors":
            return math.ceil(num_entries * fraction)
        return selection_size(num_entries, fraction)

    def _select(self, candidates: Tensor) -> Tensor:
        """Mask of the ``k`` largest finite ``candidates`` (observed entries are -inf).

        Data-parallel, the top-k runs over the global batch: every rank gathers all ranks'
        candidates, selects from them identically and keeps its own part, so ``k`` and the
        selection equal one process training on the global batch.
        """
        pool, offset = candidates, 0
        if self.collective is not None:
            pool, offset = self.collective.all_gather_rows(candidates.float())
        k = min(self.num_selected(pool.numel()), int((pool != -math.inf).sum()))
        selected = torch.zeros(candidates.shape, dtype=torch.bool, device=candidates.device)
        if k > 0:
            top = torch.topk(pool, k).indices
            mine = top[(top >= offset) & (top < offset + candidates.numel())] - offset
            selected[mine.to(selected.device)] = True
        return selected

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> LossOutput:
        check_shapes(logits, observed, index)
        loss_matrix = assume_negative_loss_matrix(logits, observed)
        if float(self.clean_rate) >= 1.0:
            return LossOutput(loss_matrix.mean())

        with torch.no_grad():
            unobserved = observed == 0
            candidates = loss_matrix.detach().masked_fill(~unobserved, -math.inf).flatten()
            selected = self._select(candidates).view_as(unobserved)

        if self.mode is LargeLossMode.REJECT:
            loss_matrix = loss_matrix.masked_fill(selected, 0.0)
        else:
            positive = F.binary_cross_entropy_with_logits(
                logits, torch.ones_like(logits), reduction="none"
            )
            loss_matrix = torch.where(selected, positive, loss_matrix)

        corrections = selected if self.mode is LargeLossMode.CORRECT_PERMANENT else None
        return LossOutput(loss_matrix.mean(), corrections)


@LOSSES.register("ll-r")
class LargeLossReject(LargeLoss):
    """LL-R: the selected large unobserved losses are set to zero."""

    def __init__(self, delta_rel: float = 0.5, protocol: str = "pamc") -> None:
        super().__init__(LargeLossMode.REJECT, delta_rel, protocol)


@LOSSES.register("ll-ct")
class LargeLossCorrectionTemporary(LargeLoss):
    """LL-Ct: the selected entries are trained as positives for the current batch only."""

    def __init__(self, delta_rel: float = 0.2, protocol: str = "pamc") -> None:
        super().__init__(LargeLossMode.CORRECT_TEMPORARY, delta_rel, protocol)


@LOSSES.register("ll-cp")
class LargeLossCorrectionPermanent(LargeLoss):
    """LL-Cp: the selected entries are trained as positives and returned as corrections.

    From epoch 2 on, ``ceil(B*C*delta_rel/100)`` entries per batch are selected; the engine
    must set them to +1 in the training labels so later epochs see them as observed positives.
    """

    def __init__(self, delta_rel: float = 0.1, protocol: str = "pamc") -> None:
        super().__init__(LargeLossMode.CORRECT_PERMANENT, delta_rel, protocol)
