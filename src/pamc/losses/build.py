"""The loss a run config names."""

from __future__ import annotations

import inspect

from pamc.config import RunConfig
from pamc.losses.base import LOSSES, PartialLabelLoss, create_loss


def loss_from_config(cfg: RunConfig) -> PartialLabelLoss:
    """``cfg.method`` with its ``method.params`` (the dataset catalog's defaults are already
    recorded there by :func:`pamc.data.catalog.resolve_data_facts`).

    A loss whose constructor takes ``protocol`` (the LL family: its clean-rate arithmetic)
    gets ``cfg.data.protocol`` unless ``method.params`` names one.
    """
    params = dict(cfg.method.params)
    if "protocol" in inspect.signature(LOSSES.get(cfg.method.name)).parameters:
        params.setdefault("protocol", cfg.data.protocol)
    return create_loss(cfg.method.name, **params)
