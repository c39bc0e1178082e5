"""Data-parallel training with PyTorch's own engine (``torchrun`` + DistributedDataParallel).

``torchrun --nproc_per_node=N -m pamc train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment;
:func:`init_distributed` reads them and joins the process group (NCCL on CUDA, gloo on
CPU). Several machines join through torchrun's rendezvous, e.g. on every node::

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29400 --rdzv_id=job1 -m pamc train --config c.yaml

What is synchronised, and how:

* training batches: each rank reads a disjoint shard of the training set per epoch, drawn by
  :class:`torch.utils.data.DistributedSampler` (one permutation seeded by ``seed + epoch``,
  padded so every rank runs the same number of steps); ``train.batch_size`` is the *global*
  batch size and is split evenly over the ranks;
* gradients: :class:`~torch.nn.parallel.DistributedDataParallel` (mean over ranks);
* label state: every label-store update (LL-Cp's permanent corrections) is all-gathered and
  applied on every rank in rank order, so all ranks hold the same corrected labels;
* evaluation: each rank scores a disjoint shard; the float32/int8 chunks (with
  ``ignore_unobserved``, only the annotated entries) are gathered on rank 0, which computes
  the metrics and broadcasts them, so every rank sees the same mAP;
* files: only rank 0 writes the run directory; other ranks get rank 0's best weights by
  broadcast, so no shared file system is needed.

CPU-side collectives (labels, metrics) always go through a gloo group, also under NCCL.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from pamc.data.datasets import Split
from pamc.data.labels import LabelStore, label_blocks
from pamc.data.loader import ArrayLoader
from pamc.errors import ConfigError, PamcError
from pamc.evaluation import MultiLabelEvaluator

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    cpu_group: Any = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = DistContext()


def world_size_from_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise PamcError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun job (usable before initialisation)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group described by torchrun's environment (no-op for one process).

    Returns the context and this rank's device: on CUDA, ``cuda:LOCAL_RANK``.
    """
    world = world_size_from_env()
    if world <= 1:
        return SINGLE_PROCESS, device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        owns = True
    cpu_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    log.info("rank %d of %d on %s (%s)", rank, world, device, dist.get_backend())
    return DistContext(rank, world, local_rank, owns, cpu_group), device


def cleanup_distributed(ctx: DistContext) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.barrier(group=ctx.cpu_group)  # no rank tears down while another still talks
        dist.destroy_process_group()


def local_batch_size(global_batch: int, ctx: DistContext) -> int:
    """``train.batch_size`` is global; each rank takes an equal share."""
    if global_batch % ctx.world_size:
        raise ConfigError(
            f"train.batch_size {global_batch} is the global batch size and must be divisible "
            f"by the number of processes ({ctx.world_size})"
        )
    return global_batch // ctx.world_size


class ShardedLoader(ArrayLoader):
    """An :class:`ArrayLoader` over this rank's shard, redrawn each epoch by DistributedSampler.

    Call :meth:`set_epoch` before each epoch, as with the sampler itself: all ranks draw the
    same permutation of the whole split (seeded by ``seed + epoch``) and keep every
    ``world_size``-th entry from ``rank`` on, so the shards are disjoint and cover the split
    (padded with repeats to equal length).
    """

    def __init__(self, split: Split, batch_size: int, ctx: DistContext, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        super().__init__(split, batch_size, shuffle=False, seed=seed, drop_last=drop_last)
        self.sampler: torch.utils.data.DistributedSampler = torch.utils.data.DistributedSampler(
            range(len(split)), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed,
        )
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.indices = torch.as_tensor(list(self.sampler), dtype=torch.long)


def eval_shard(num_samples: int, ctx: DistContext) -> np.ndarray:
    """This rank's disjoint, unpadded share of ``range(num_samples)`` for evaluation."""
    return np.arange(ctx.rank, num_samples, ctx.world_size)


def wrap_ddp(model: nn.Module, device: torch.device, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel around ``model`` (``model`` itself when single process)."""
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_gather_rows(x: Tensor, ctx: DistContext) -> tuple[Tensor, int]:
    """All ranks' ``x`` concatenated along dim 0 in rank order, on the CPU, and the row at which
    this rank's part starts. Row counts may differ between ranks (the tensors are padded for
    the exchange); the trailing shape and dtype must agree."""
    local = x.detach().to("cpu").contiguous()
    if not ctx.enabled:
        return local, 0
    count = torch.tensor([local.shape[0]], dtype=torch.int64)
    counts = [torch.zeros_like(count) for _ in range(ctx.world_size)]
    dist.all_gather(counts, count, group=ctx.cpu_group)
    sizes = [int(c) for c in counts]
    padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype)
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, padded, group=ctx.cpu_group)
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)]), sum(sizes[: ctx.rank])


@dataclass(frozen=True)
class ProcessGroupCollective:
    """The :class:`pamc.losses.base.Collective` of a torchrun job, over its gloo CPU group."""

    ctx: DistContext

    @property
    def world_size(self) -> int:
        return self.ctx.world_size

    def all_gather_rows(self, x: Tensor) -> tuple[Tensor, int]:
        return all_gather_rows(x, self.ctx)

    def all_reduce_sum_(self, x: Tensor) -> Tensor:
        on_cpu = x if x.device.type == "cpu" else x.detach().cpu()
        dist.all_reduce(on_cpu, group=self.ctx.cpu_group)
        if on_cpu is not x:
            x.copy_(on_cpu)
        return x


def sync_label_updates(rows: Tensor, cols: Tensor, ctx: DistContext) -> tuple[Tensor, Tensor]:
    """All ranks' label-store updates ``(rows, cols)``, concatenated in rank order.

    Every rank calls this after each step that may update labels and applies the result, so
    the label stores stay identical. Single process: returns the input.
    """
    if not ctx.enabled:
        return rows, cols
    local = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).to(dtype=torch.int64)
    merged, _ = all_gather_rows(local, ctx)
    return merged[:, 0], merged[:, 1]


def label_store_digest(store: LabelStore) -> str:
    """SHA-1 of the label matrix (read by row blocks, never densified), to compare label stores across ranks."""
    digest = hashlib.sha1()
    for _, rows in label_blocks(store):
        digest.update(rows.contiguous().numpy().tobytes())
    return digest.hexdigest()


def all_gather_objects(obj: T, ctx: DistContext) -> list[T]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj, group=ctx.cpu_group)
    return out


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Elementwise sum of ``values`` over ranks (float64)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, group=ctx.cpu_group)
    return t.tolist()


def evaluate_gathered(evaluator: MultiLabelEvaluator, ctx: DistContext) -> dict[str, Any]:
    """``evaluator.evaluate()`` over the batches of all ranks; every rank gets rank 0's result."""
    if not ctx.enabled:
        return evaluator.evaluate()
    parts: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(evaluator, parts, dst=0, group=ctx.cpu_group)
    box: list[Any] = [None]
    if ctx.is_main:
        merged = MultiLabelEvaluator(
            evaluator.num_classes, ignore_unobserved=evaluator.ignore_unobserved,
            class_frequency=evaluator.class_frequency, num_groups=evaluator.num_groups,
            unannotated=evaluator.unannotated,
        )
        for part in parts or []:
            merged.extend(part)
        box[0] = merged.evaluate()
    dist.broadcast_object_list(box, src=0, group=ctx.cpu_group)
    return box[0]


def run_on_main(fn: Callable[[], T], ctx: DistContext) -> T | None:
    """Run ``fn`` on rank 0 only; a :class:`PamcError` there is raised on every rank."""
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except PamcError as exc:
            if not ctx.enabled:
                raise
            error = exc
    if ctx.enabled:
        box = [None if error is None else str(error)]
        dist.broadcast_object_list(box, src=0, group=ctx.cpu_group)
        if error is not None:
            raise error
        if box[0] is not None:
            raise PamcError(box[0])
    return result


def broadcast_module_state(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers into ``module`` on every rank."""
    if not ctx.enabled:
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)
