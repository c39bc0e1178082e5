"""How many intra-op threads a training uses: ``train.threads`` (an integer, or ``auto``).

``auto`` follows ``benchmarks/bench_threads.py`` (README, "Threads"): a second thread pays on
a quiet core, and costs more than it gives when another process holds that core, because each
step waits for its slowest thread. So ``auto`` takes the usable cores (CPU affinity) that no
other runnable process holds when the run starts, at least one. With ``train.deterministic``
it takes every usable core, so that a seed's result depends on the machine only (the thread
count changes the order of floating-point sums). Under ``torchrun`` (``OMP_NUM_THREADS`` set)
it keeps PyTorch's count.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def other_runnable(samples: int = 5, interval_s: float = 0.02) -> int:
    """Runnable processes besides this one, the median of a few reads of ``/proc/loadavg``
    (its ``running/total`` field counts this process too); the 1-minute load average where
    ``/proc`` is missing."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
        if i + 1 < samples:
            time.sleep(interval_s)
    return max(0, round(statistics.median(counts)))


def resolve_threads(setting: int | str, *, deterministic: bool = False) -> int:
    """The intra-op thread count for ``train.threads = setting`` (see the module docstring)."""
    if setting != "auto":
        return int(setting)
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    cores = usable_cores()
    if deterministic:
        return cores
    busy = other_runnable()
    threads = max(1, cores - busy)
    log.info("train.threads auto: %d usable cores, %d other runnable processes -> %d thread(s)", cores, busy, threads)
    return threads


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)``; restore the previous count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
