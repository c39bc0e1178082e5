"""Generalized robust loss (GR-Loss) of Chen et al., "Boosting Single Positive Multi-label
Classification with Generalized Robust Loss", IJCAI 2024 (authors' code: yan4xi1/GRLoss,
``losses.py: GR_loss``, ``models.py: KFunction/VFunction``, ``train.py`` schedules,
``config.py`` defaults).

Observed positives get ``-log p``. An unobserved entry with prediction ``p`` gets::

    v(p) * ( k(p) * L1(p; q2) + (1 - k(p)) * L2(p; q3) )
    L1(p; q) = (1 - p^q) / q           (robust loss towards positive)
    L2(p; q) = (1 - (1 - p)^q) / q     (robust loss towards negative)
    k(p) = sigmoid(w p + b)            (soft pseudo-label: how likely the entry is positive)
    v(p) = exp(-(p - mu)^2 / (2 sigma^2))   (reweighting)

``k`` and ``v`` are computed from the detached prediction. Their parameters move linearly
over the run (``T`` epochs, ``n`` linear-init epochs), as in the authors' ``train.py``::

    w = w0 + (wT - w0) * max(t - n - 1, 0) / (T - n)    (b likewise)
    mu = mu0 + (muT - mu0) * max(t - n, 0) / (T - n)    (sigma likewise)

Defaults are the authors' ``config.py``: ``beta = [w0, wT, b0, bT] = [0, 2, -2, -2]``,
``alpha = [mu0, sigma0, muT, sigmaT] = [0.5, 2, 0.8, 0.5]``, ``q2 = 0.01``, ``q3 = 1``,
``linear_init = 0``. The matrix is averaged over B*C. Observed negatives get ``-log(1-p)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

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


def _four(name: str, values: Sequence[float]) -> tuple[float, float, float, float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 4:
        raise ConfigError(f"{name} must be a list of 4 numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{name} must be a list of 4 finite numbers, got {values!r}")
        out.append(float(v))
    return tuple(out)  # type: ignore[return-value]


@LOSSES.register("gr-loss")
class GeneralizedRobustLoss(PartialLabelLoss):
    """GR-Loss with its epoch schedules for the soft pseudo-label ``k`` and the weight ``v``."""

    schedule: Tensor  # float64 (w, b, mu, sigma) of the current epoch

    def __init__(
        self,
        beta: Sequence[float] = (0.0, 2.0, -2.0, -2.0),
        alpha: Sequence[float] = (0.5, 2.0, 0.8, 0.5),
        q2: float = 0.01,
        q3: float = 1.0,
        linear_init_epochs: int = 0,
    ) -> None:
        super().__init__()
        self.beta = _four("beta", beta)
        self.alpha = _four("alpha", alpha)
        if self.alpha[1] <= 0 or self.alpha[3] <= 0:
            raise ConfigError(f"alpha's sigma entries must be > 0, got {list(alpha)}")
        self.q2 = check_positive_number("q2", q2)
        self.q3 = check_positive_number("q3", q3)
        if isinstance(linear_init_epochs, bool) or not isinstance(linear_init_epochs, int) or linear_init_epochs < 0:
            raise ConfigError(f"linear_init_epochs must be an int >= 0, got {linear_init_epochs!r}")
        self.linear_init_epochs = linear_init_epochs
        self.num_epochs: int | None = None
        w0, _, b0, _ = self.beta
        mu0, s0, _, _ = self.alpha
        self.register_buffer("schedule", torch.tensor([w0, b0, mu0, s0], dtype=torch.float64))

    def bind(self, labels: LabelSource, num_epochs: int) -> None:
        super().bind(labels, num_epochs)  # checks that num_epochs is not below linear_init_epochs
        if self.linear_init_epochs >= num_epochs:  # the k/v schedules need epochs after the frozen ones
            raise ConfigError(f"this method trains the head alone for {self.linear_init_epochs} epochs; "
                              f"train.epochs ({num_epochs}) must be larger (or set method.params.linear_init_epochs)")
        self.num_epochs = num_epochs

    def schedule_at(self, epoch: int, num_epochs: int) -> tuple[float, float, float, float]:
        """``(w, b, mu, sigma)`` in epoch ``epoch`` (1-based) of ``num_epochs``."""
        n = self.linear_init_epochs
        span = num_epochs - n
        w0, wT, b0, bT = self.beta
        mu0, s0, muT, sT = self.alpha
        f_kb = max(epoch - n - 1, 0) / span
        f_v = max(epoch - n, 0) / span
        return (w0 + (wT - w0) * f_kb, b0 + (bT - b0) * f_kb, mu0 + (muT - mu0) * f_v, s0 + (sT - s0) * f_v)

    def on_epoch_start(self, epoch: int) -> None:
        if self.num_epochs is None:
            raise RuntimeError("gr-loss: bind() must be called before training")
        self.schedule.copy_(torch.tensor(self.schedule_at(epoch, self.num_epochs), dtype=torch.float64))

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> LossOutput:
        check_shapes(logits, observed, index)
        w, b, mu, sigma = (float(v) for v in self.schedule)
        p = torch.sigmoid(logits)
        p_sg = p.detach()
        k = torch.sigmoid(w * p_sg + b)
        v = torch.exp(-0.5 * ((p_sg - mu) / sigma) ** 2)
        l1 = (1 - p.clamp(min=1e-7).pow(self.q2)) / self.q2
        l2 = (1 - (1 - p).pow(self.q3)) / self.q3
        loss = v * (k * l1 + (1 - k) * l2)
        loss = (-log_prob(logits)).where(observed == 1, loss)
        loss = (-log_one_minus_prob(logits)).where(observed == -1, loss)
        return LossOutput(loss.mean())
