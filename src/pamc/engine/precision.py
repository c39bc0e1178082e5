"""Mixed precision, channels_last and ``torch.compile``: the speed switches of a run.

``train.amp`` chooses the autocast dtype:

* ``auto``: bf16 autocast on CUDA (no grad scaling needed; fp16 with a GradScaler on GPUs
  without bf16 support), off on CPU;
* ``off``: fp32 everywhere;
* ``bf16``: bf16 autocast on any device (on CPUs with AVX512-BF16/AMX this is fast);
* ``fp16``: fp16 autocast with dynamic loss scaling (:class:`torch.amp.GradScaler`).

Losses and metrics stay in fp32: autocast runs ``binary_cross_entropy_with_logits`` in fp32,
and scores are cast to float32 before evaluation. ``train.channels_last`` stores the model's
4-d weights and the input batches in NHWC order (the layout cuDNN and oneDNN convolutions
prefer). ``train.compile`` wraps the training module in :func:`torch.compile`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pamc.config import TrainConfig
from pamc.errors import ConfigError

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    """How a step runs: autocast dtype (None = fp32), memory format and the fp16 grad scaler."""

    device: torch.device
    dtype: torch.dtype | None = None
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def from_config(cls, cfg: TrainConfig, device: torch.device) -> "Precision":
        dtype = resolve_amp_dtype(cfg.amp, device)
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return cls(device, dtype, cfg.channels_last, scaler)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for forward and loss; a no-op in fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Convert ``model`` in place to the memory format (call after moving it to the device)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def prepare_input(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def backward_step(self, loss: Tensor, optimizer: torch.optim.Optimizer,
                      before_step: Callable[[], None] | None = None) -> None:
        """``loss.backward()`` and ``optimizer.step()``, through the grad scaler in fp16.

        ``before_step`` runs between the two (on the scaled gradients in fp16; it must be
        linear in them, like an average over ranks).
        """
        if self.scaler is None:
            loss.backward()
            if before_step is not None:
                before_step()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if before_step is not None:
            before_step()
        self.scaler.step(optimizer)
        self.scaler.update()


def resolve_amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device``; None means fp32."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        dtype = _DTYPES[mode]
    except KeyError:
        raise ConfigError(f"train.amp must be one of auto, off, bf16, fp16, got {mode!r}") from None
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.amp=bf16 requested but this GPU does not support bf16; use fp16")
    return dtype


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(module)`` when ``enabled``; the original module's weights are shared."""
    if not enabled:
        return module
    log.info("compiling the training module with torch.compile")
    return torch.compile(module)  # type: ignore[return-value]


@contextlib.contextmanager
def eval_autocast(precision: Precision | None) -> Iterator[None]:
    """Autocast for inference (no-op when ``precision`` is None or fp32)."""
    with (precision.autocast() if precision is not None else contextlib.nullcontext()):
        yield
