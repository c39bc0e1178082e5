"""EPR and ROLE of Cole et al., "Multi-Label Learning from Single Positive Labels", CVPR 2021.

Formulas follow the authors' code (elijahcole/single-positive-multi-label: ``loss_epr``,
``loss_role``, ``LabelEstimator``); the per-dataset expected number of positives is in
the dataset catalog (:mod:`pamc.data.catalog`). The loss matrix is averaged over all B*C entries and the
regulariser added, as in the authors' ``compute_batch_loss``.

Observed negatives (absent in the single-positive setting, which the authors' code asserts)
are treated like observed positives with target 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pamc.data.labels import label_blocks
from pamc.errors import ConfigError
from pamc.losses.base import (
    LOSSES,
    LabelSource,
    LossOutput,
    PartialLabelLoss,
    check_positive_number,
    check_shapes,
    expected_positive_regularizer,
    log_one_minus_prob,
    log_prob,
)


def _observed_terms(logits: Tensor, observed: Tensor) -> Tensor:
    """``-log p`` at observed positives, ``-log(1-p)`` at observed negatives, 0 elsewhere."""
    zero = torch.zeros_like(logits)
    loss = (-log_prob(logits)).where(observed == 1, zero)
    return (-log_one_minus_prob(logits)).where(observed == -1, loss)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _expected_num_pos(method: str, value: float | None) -> float:
    """EPR's ``k``, required: the average number of positives per image."""
    if value is None:
        raise ConfigError(f"{method} needs method.params.expected_num_pos (the average number of "
                          "positives per image; catalog datasets get it from pamc.data.catalog)")
    return check_positive_number("expected_num_pos", value)


@LOSSES.register("epr")
class ExpectedPositiveRegularizer(PartialLabelLoss):
    """BCE on observed labels only, plus ``(mean_i sum_c p_ic - k)^2 / C^2``.

    ``k = expected_num_pos`` is the average number of positives per image (per-dataset table).
    """

    def __init__(self, expected_num_pos: float | None = None) -> None:
        super().__init__()
        self.expected_num_pos = _expected_num_pos("epr", expected_num_pos)

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> LossOutput:
        check_shapes(logits, observed, index)
        main = _observed_terms(logits, observed).mean()
        reg = expected_positive_regularizer(torch.sigmoid(logits), self.expected_num_pos)
        return LossOutput(main + reg)


@LOSSES.register("role")
class ROLE(PartialLabelLoss):
    """Regularized Online Label Estimation: the classifier and a table of label estimates
    ``e = sigmoid(theta)`` (one row per training image) teach each other.

    Per entry, with ``p`` the prediction and ``e`` the estimate (``sg`` = stop-gradient):
    ``0.5 (obs(p) + obs(e)) + 0.5 (BCE(p; sg(e)) + BCE(e; sg(p)))``, averaged over B*C, plus
    ``0.5 (R(p) + R(e))`` with the EPR regulariser ``R``. ``theta`` is initialised as in the
    authors' code: uniform in ``[-logit(0.6), logit(0.6)]`` for unobserved entries,
    ``logit(0.995)`` for observed positives and ``logit(0.005)`` for observed negatives.
    ``theta`` is an ``nn.Parameter`` created by :meth:`bind`, so the engine optimises
    it (at the head learning rate) and checkpoints carry it.
    """

    label_logits: nn.Parameter

    def __init__(self, expected_num_pos: float | None = None) -> None:
        super().__init__()
        self.expected_num_pos = _expected_num_pos("role", expected_num_pos)
        self.register_parameter("label_logits", None)
        self._last_index: Tensor | None = None

    def bind(self, labels: LabelSource, num_epochs: int) -> None:
        super().bind(labels, num_epochs)
        q = _logit(0.6)
        theta = q * (2 * torch.rand(*labels.shape) - 1)
        for start, rows in label_blocks(labels):
            block = theta[start:start + len(rows)]
            block[rows == 1] = _logit(0.995)
            block[rows == -1] = _logit(0.005)
        self.label_logits = nn.Parameter(theta)

    def estimates(self, index: Tensor) -> Tensor:
        """Current label estimates (probabilities) of the training images ``index``."""
        if self.label_logits is None:
            raise RuntimeError("role: bind() must be called before training")
        return torch.sigmoid(self.label_logits[index])

    def sync_gradients(self) -> None:
        """Data-parallel: each rank's gradient of ``theta`` is nonzero only in its batch's rows;
        the ranks exchange those rows and every rank sets the gradient to their sum divided by
        the number of ranks (the mean DDP takes of the model's gradients)."""
        grad = None if self.label_logits is None else self.label_logits.grad
        if self.collective is None or grad is None or self._last_index is None:
            return
        rows = torch.unique(self._last_index.to(grad.device))
        all_rows, _ = self.collective.all_gather_rows(rows.cpu())
        all_values, _ = self.collective.all_gather_rows(grad[rows].cpu())
        grad[rows] = 0
        grad.index_add_(0, all_rows.to(grad.device), all_values.to(grad) / self.collective.world_size)

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> LossOutput:
        check_shapes(logits, observed, index)
        if self.label_logits is None:
            raise RuntimeError("role: bind() must be called before training")
        self._last_index = index.detach() if self.training else None
        theta = self.label_logits[index.to(self.label_logits.device)]
        p, e = torch.sigmoid(logits), torch.sigmoid(theta)
        obs = 0.5 * (_observed_terms(logits, observed) + _observed_terms(theta, observed))
        e_sg, p_sg = e.detach(), p.detach()
        cross_p = -(e_sg * log_prob(logits) + (1 - e_sg) * log_one_minus_prob(logits))
        cross_e = -(p_sg * log_prob(theta) + (1 - p_sg) * log_one_minus_prob(theta))
        reg = 0.5 * (expected_positive_regularizer(p, self.expected_num_pos)
                     + expected_positive_regularizer(e, self.expected_num_pos))
        return LossOutput((obs + 0.5 * (cross_p + cross_e)).mean() + reg)


@LOSSES.register("role-li")
class ROLELinearInit(ROLE):
    """ROLE with linear initialisation: the first ``linear_init_epochs`` epochs train the head
    (and the label estimates) on a frozen backbone, the rest end to end.

    Cole et al. train the linear phase for 25 epochs (restoring its best epoch), then fine-tune
    for 10 with a fresh optimizer: the paper's row runs that as ``train.linear_init`` (two
    phases, :mod:`pamc.engine.phases`), whose second phase has ``linear_init_epochs = 0``. In
    one run, ``linear_init_epochs`` of ``train.epochs`` are frozen.
    """

    def __init__(self, expected_num_pos: float | None = None, linear_init_epochs: int = 25) -> None:
        super().__init__(expected_num_pos)
        if isinstance(linear_init_epochs, bool) or not isinstance(linear_init_epochs, int) or linear_init_epochs < 0:
            raise ConfigError(f"linear_init_epochs must be an int >= 0, got {linear_init_epochs!r}")
        self.linear_init_epochs = linear_init_epochs
