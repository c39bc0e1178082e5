"""Partial-label losses, looked up by method name through :data:`LOSSES`."""

from pamc.losses.asl import AsymmetricLoss
from pamc.losses.assume_negative import AssumeNegativeLoss, FullLabelLoss
from pamc.losses.base import LOSSES, LossOutput, PartialLabelLoss, create_loss
from pamc.losses.build import loss_from_config
from pamc.losses.defaults import DATASET_DEFAULTS, DatasetDefaults, resolve_method_params
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
    "DATASET_DEFAULTS",
    "ROLE",
    "AssumeNegativeLabelSmoothing",
    "AsymmetricLoss",
    "DatasetDefaults",
    "EntropyMaximization",
    "EntropyMaximizationAPL",
    "ExpectedPositiveRegularizer",
    "GeneralizedRobustLoss",
    "ROLELinearInit",
    "WeakAssumeNegative",
    "resolve_method_params",
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
