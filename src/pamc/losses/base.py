"""Shared interface of the partial-label losses and their registry."""

from __future__ import annotations

import inspect
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pamc.errors import ConfigError
from pamc.registry import Registry


class LossOutput(NamedTuple):
    """What a loss returns to the training step.

    ``corrections`` is a (B, C) bool mask of entries that the engine must permanently set to
    observed positive in the training set's label store (rows are ``index``); only methods
    that correct labels permanently return it.
    """

    loss: Tensor
    corrections: Tensor | None = None


class Collective(Protocol):
    """Cross-process operations for losses trained data-parallel (see ``pamc.engine.distributed``).

    Every rank must make the same calls in the same order.
    """

    world_size: int

    def all_gather_rows(self, x: Tensor) -> tuple[Tensor, int]:
        """All ranks' ``x`` concatenated along dim 0 in rank order (on the CPU), and the row at
        which this rank's ``x`` starts; the ranks' row counts may differ."""
        ...

    def all_reduce_sum_(self, x: Tensor) -> Tensor:
        """Sum ``x`` over the ranks, in place; returns ``x``."""
        ...


class PartialLabelLoss(nn.Module):
    """Base class of the losses trained on partially observed labels.

    ``forward`` receives logits (B, C), the observed labels (B, C) in {-1, 0, +1} and the
    dataset indices (B,) of the samples. Methods with ``uses_full_labels = True`` are fed the
    full label matrix instead of the observed one. State that must survive a resume lives in
    registered buffers so that ``state_dict()`` carries it.
    """

    uses_full_labels: bool = False
    #: epochs at the start of training in which only the head learns (backbone frozen); see role-li
    linear_init_epochs: int = 0
    #: set by :meth:`bind_collective` when the engine trains data-parallel; None in one process
    collective: Collective | None = None

    def __init__(self) -> None:  # hides nn.Module's *args/**kwargs from create_loss
        super().__init__()

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> LossOutput:
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (1-based)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch (1-based)."""

    def backbone_frozen(self, epoch: int) -> bool:
        """Whether only the head (and the loss's own parameters) learn in ``epoch`` (1-based):
        the first :attr:`linear_init_epochs` epochs."""
        return epoch <= self.linear_init_epochs

    def epoch_metrics(self) -> dict[str, float]:
        """Numbers of the loss's state that go into each epoch's metrics record (LL's clean rate)."""
        return {}

    def bind_collective(self, collective: Collective | None) -> None:
        """Called by the engine before training data-parallel, so that state that depends on the
        whole batch or on every image (LL's top-k, ROLE's estimates, APL's predictions) is the
        same on every rank and equal to one process training on the global batch."""
        self.collective = collective

    def sync_gradients(self) -> None:
        """Called by the engine between ``backward()`` and ``optimizer.step()``: a loss with
        parameters of its own averages their gradients over the ranks here (DDP does this only
        for the model's)."""

    def bind(self, labels: LabelSource, num_epochs: int) -> None:
        """Called once by the engine before the optimizer is built.

        ``labels`` is the training set's label store (dense or sparse, never densified by the
        engine): read rows on demand with ``labels.get(index)`` or :func:`pamc.data.labels.label_blocks`;
        corrections returned in :attr:`LossOutput.corrections` are written back into it by the
        engine. ``num_epochs`` is the length of the run; a loss whose schedule does not fit it
        raises :class:`~pamc.errors.ConfigError`. Methods whose state is sized by the training
        set (ROLE's label estimates, APL's pseudo-labels) create it here, as parameters or
        buffers so that it is optimised and checkpointed.
        """
        if self.linear_init_epochs > num_epochs:  # equal: the whole run trains the head alone (a linear phase)
            raise ConfigError(f"this method trains the head alone for {self.linear_init_epochs} epochs; "
                              f"train.epochs ({num_epochs}) must not be smaller (or set method.params.linear_init_epochs)")


class LabelSource(Protocol):
    """What a loss may read of the training labels: the shape and int8 rows by dataset index
    (:class:`~pamc.data.LabelStore` and :class:`~pamc.data.SparseLabelStore`)."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def get(self, index: Tensor) -> Tensor: ...


LOSSES = Registry[PartialLabelLoss]("method")


def create_loss(name: str, **params: object) -> PartialLabelLoss:
    """Build the loss registered as ``name``, rejecting parameters it does not take."""
    factory = LOSSES.get(name)
    signature = inspect.signature(factory)
    accepted = signature.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        for key in params:
            if key not in accepted:
                choices = ", ".join(accepted) or "none"
                raise ConfigError(
                    f"unknown parameter {key!r} for method {name!r}; accepted: {choices}"
                )
    return factory(**params)


def check_shapes(logits: Tensor, observed: Tensor, index: Tensor) -> None:
    """Raise ValueError unless logits and labels are matching (B, C) and index is (B,)."""
    if logits.dim() != 2 or observed.shape != logits.shape:
        raise ValueError(
            f"expected logits and labels of the same (B, C) shape, got "
            f"{tuple(logits.shape)} and {tuple(observed.shape)}"
        )
    if index.shape != logits.shape[:1]:
        raise ValueError(f"expected index of shape ({logits.shape[0]},), got {tuple(index.shape)}")


def assume_negative_loss_matrix(logits: Tensor, observed: Tensor) -> Tensor:
    """Per-entry BCE with target 1 for observed positives and 0 for everything else."""
    target = (observed == 1).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


def log_prob(logits: Tensor) -> Tensor:
    """``log p`` with ``p = sigmoid(logits)``, computed stably."""
    return F.logsigmoid(logits)


def log_one_minus_prob(logits: Tensor) -> Tensor:
    """``log(1 - p)`` with ``p = sigmoid(logits)``, computed stably."""
    return F.logsigmoid(-logits)


def expected_positive_regularizer(probs: Tensor, expected_num_pos: float) -> Tensor:
    """EPR (Cole et al., CVPR 2021): ``(mean_i sum_c p_ic - k)^2 / C^2``."""
    num_classes = probs.shape[1]
    return (probs.sum(1).mean(0) - expected_num_pos) ** 2 / num_classes**2


def check_positive_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Validate a numeric hyperparameter, raising :class:`ConfigError` with its name."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)
