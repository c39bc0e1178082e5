"""Entropy maximisation (EM) and EM with asymmetric pseudo-labelling (APL) of Zhou et al.,
"Acknowledging the Unknown for Multi-label Learning with Single Positive Labels", ECCV 2022
(authors' code: Correr-Zhou/SPML-AckTheUnknown, ``losses.py`` and ``main.py``).

EM: observed positives get ``-log p``; every unobserved entry gets ``-alpha * H(p)`` with the
binary entropy ``H(p) = -p log p - (1-p) log(1-p)``, so training pushes unknown labels towards
p = 0.5 instead of 0. The gradient of ``-alpha H`` with respect to the logit ``x`` is
``alpha * x * p (1 - p)``. The matrix is averaged over B*C. Per-dataset ``alpha`` (and the APL
settings) are in :mod:`pamc.losses.defaults`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pamc.data.labels import label_blocks
from pamc.errors import ConfigError
from pamc.losses.base import (
    LOSSES,
    LabelSource,
    LossOutput,
    PartialLabelLoss,
    check_positive_number,
    check_shapes,
    log_one_minus_prob,
    log_prob,
)


def binary_entropy(logits: Tensor) -> Tensor:
    """``H(sigmoid(x))`` in nats, computed from logits."""
    p = torch.sigmoid(logits)
    return -(p * log_prob(logits) + (1 - p) * log_one_minus_prob(logits))


def em_loss_matrix(logits: Tensor, observed: Tensor, alpha: float) -> Tensor:
    """Per-entry EM loss; observed negatives get ``-log(1-p)``."""
    loss = -alpha * binary_entropy(logits)
    loss = (-log_prob(logits)).where(observed == 1, loss)
    return (-log_one_minus_prob(logits)).where(observed == -1, loss)


@LOSSES.register("em")
class EntropyMaximization(PartialLabelLoss):
    """EM loss (``loss_EM``); ``alpha`` weighs the entropy of the unobserved entries."""

    def __init__(self, alpha: float = 0.1) -> None:
        super().__init__()
        self.alpha = check_positive_number("alpha", alpha, allow_zero=True)

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> LossOutput:
        check_shapes(logits, observed, index)
        return LossOutput(em_loss_matrix(logits, observed, self.alpha).mean())


@LOSSES.register("em-apl")
class EntropyMaximizationAPL(EntropyMaximization):
    """EM plus asymmetric pseudo-labelling (``loss_EM_APL`` and ``aysmmetric_pseudo_labeling``).

    After each epoch ``t >= warmup_epochs``, for every class ``c``, the
    ``int(neg_proportion * U_c / (T - warmup_epochs))`` still-unlabelled entries with the
    lowest predictions become soft pseudo-negatives, where ``U_c`` is the number of
    unobserved entries of class ``c`` at the start and ``T`` the number of epochs. A
    pseudo-negative keeps its prediction ``s`` from that moment as a soft target and gets
    ``beta * (-s log p - (1 - s) log(1 - p))`` instead of the entropy term.

    The authors predict the training set in a separate pass after the epoch; here the
    predictions are the ones made on each image during the epoch (training mode, with
    augmentation), recorded by :meth:`forward`, which saves a pass over the data.
    The pseudo-labels live in buffers (``pseudo_mask``, ``pseudo_target``), so checkpoints
    carry them.
    """

    pseudo_mask: Tensor
    pseudo_target: Tensor
    last_probs: Tensor
    seen: Tensor
    unobserved_count: Tensor

    def __init__(self, alpha: float = 0.1, beta: float = 0.02, warmup_epochs: int = 5,
                 neg_proportion: float = 0.9) -> None:
        super().__init__(alpha)
        self.beta = check_positive_number("beta", beta, allow_zero=True)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 1:
            raise ConfigError(f"warmup_epochs must be an int >= 1, got {warmup_epochs!r}")
        self.warmup_epochs = warmup_epochs
        self.neg_proportion = check_positive_number("neg_proportion", neg_proportion, allow_zero=True)
        if self.neg_proportion > 1:
            raise ConfigError(f"neg_proportion must be <= 1, got {neg_proportion}")
        self.num_epochs: int | None = None
        self._labels: LabelSource | None = None
        for name in ("pseudo_mask", "pseudo_target", "last_probs", "seen", "unobserved_count"):
            self.register_buffer(name, None)

    def bind(self, labels: LabelSource, num_epochs: int) -> None:
        super().bind(labels, num_epochs)
        if num_epochs <= self.warmup_epochs:
            raise ConfigError(f"em-apl: train.epochs ({num_epochs}) must exceed warmup_epochs "
                              f"({self.warmup_epochs})")
        self.num_epochs = num_epochs
        self._labels = labels
        num_samples, num_classes = labels.shape
        self.pseudo_mask = torch.zeros(num_samples, num_classes, dtype=torch.bool)
        self.pseudo_target = torch.zeros(num_samples, num_classes)
        self.last_probs = torch.zeros(num_samples, num_classes)
        self.seen = torch.zeros(num_samples, dtype=torch.bool)
        self.unobserved_count = sum(((rows == 0).sum(0).to(torch.int64) for _, rows in label_blocks(labels)),
                                    torch.zeros(num_classes, dtype=torch.int64))

    def per_epoch_quota(self) -> Tensor:
        """Pseudo-negatives added per class after each epoch from ``warmup_epochs`` on."""
        if self.num_epochs is None:
            raise RuntimeError("em-apl: bind() must be called before training")
        span = self.num_epochs - self.warmup_epochs
        return torch.tensor([math.floor(self.neg_proportion * int(u) / span) for u in self.unobserved_count])

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> LossOutput:
        check_shapes(logits, observed, index)
        if self.pseudo_mask is None:
            raise RuntimeError("em-apl: bind() must be called before training")
        idx = index.to(self.pseudo_mask.device)
        if self.training:
            self.last_probs[idx] = torch.sigmoid(logits.detach()).to(self.last_probs)
            self.seen[idx] = True
        loss = em_loss_matrix(logits, observed, self.alpha)
        mask = self.pseudo_mask[idx].to(logits.device) & (observed == 0)
        s = self.pseudo_target[idx].to(logits)
        soft = self.beta * -(s * log_prob(logits) + (1 - s) * log_one_minus_prob(logits))
        return LossOutput(loss.where(~mask, soft).mean())

    def on_epoch_start(self, epoch: int) -> None:
        if self.seen is not None:
            self.seen.zero_()

    def _merge_ranks(self) -> None:
        """Data-parallel: every rank takes the predictions of the images any rank saw this
        epoch (averaged where the sampler's padding showed an image to two ranks)."""
        if self.collective is None or self.seen is None:
            return
        seen = self.seen.to(torch.float32)
        total = self.collective.all_reduce_sum_(self.last_probs * seen[:, None])
        count = self.collective.all_reduce_sum_(seen.clone())
        merged = count > 0
        self.last_probs[merged] = total[merged] / count[merged, None]
        self.seen.copy_(merged)

    def on_epoch_end(self, epoch: int) -> None:
        if epoch < self.warmup_epochs or self.pseudo_mask is None:
            return
        self._merge_ranks()  # every rank gets here in the same epochs
        quota = self.per_epoch_quota()
        unobserved = torch.cat([rows == 0 for _, rows in label_blocks(self._labels)])
        candidates = unobserved & ~self.pseudo_mask & self.seen[:, None]
        for c in range(candidates.shape[1]):
            rows = torch.nonzero(candidates[:, c], as_tuple=True)[0]
            k = min(int(quota[c]), rows.numel())
            if k == 0:
                continue
            probs = self.last_probs[rows, c]
            chosen = rows[torch.argsort(probs, stable=True)[:k]]
            self.pseudo_mask[chosen, c] = True
            self.pseudo_target[chosen, c] = self.last_probs[chosen, c]
