"""The training loss of a run configuration."""

from __future__ import annotations

import inspect

from pamc.config import RunConfig
from pamc.losses.base import LOSSES, PartialLabelLoss, create_loss
from pamc.losses.defaults import resolve_method_params


def loss_from_config(cfg: RunConfig) -> PartialLabelLoss:
    """``cfg.method`` with its per-dataset defaults and explicit ``method.params``.

    A loss whose constructor takes ``protocol`` (the LL family: its clean-rate arithmetic)
    gets ``cfg.data.protocol`` unless ``method.params`` names one.
    """
    params = resolve_method_params(cfg.method.name, cfg.data.dataset, cfg.method.params)
    if "protocol" in inspect.signature(LOSSES.get(cfg.method.name)).parameters:
        params.setdefault("protocol", cfg.data.protocol)
    return create_loss(cfg.method.name, **params)
