"""Partial-label losses, looked up by method name through :data:`LOSSES`."""

from pamc.losses.asl import AsymmetricLoss
from pamc.losses.assume_negative import AssumeNegativeLoss, FullLabelLoss
from pamc.losses.base import LOSSES, LossOutput, PartialLabelLoss, create_loss
from pamc.losses.build import loss_from_config
from pamc.losses.entropy import EntropyMaximization, EntropyMaximizationAPL
from pamc.losses.epr_role import ROLE, ExpectedPositiveRegularizer, ROLELinearInit
from pamc.losses.gr import GeneralizedRobustLoss
from pamc.losses.large_loss import (
    LargeLoss,
    LargeLossCorrectionPermanent,
    LargeLossCorrectionTemporary,
    LargeLossMode,
    LargeLossReject,
)
from pamc.losses.smoothing import AssumeNegativeLabelSmoothing, WeakAssumeNegative

__all__ = [
    "LOSSES",
    "ROLE",
    "AssumeNegativeLabelSmoothing",
    "AsymmetricLoss",
    "EntropyMaximization",
    "EntropyMaximizationAPL",
    "ExpectedPositiveRegularizer",
    "GeneralizedRobustLoss",
    "ROLELinearInit",
    "WeakAssumeNegative",
    "AssumeNegativeLoss",
    "FullLabelLoss",
    "LargeLoss",
    "LargeLossCorrectionPermanent",
    "LargeLossCorrectionTemporary",
    "LargeLossMode",
    "LargeLossReject",
    "LossOutput",
    "PartialLabelLoss",
    "create_loss",
    "loss_from_config",
]
