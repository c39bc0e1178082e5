"""One competing CPU-bound process for the benchmarks that measure a busy machine."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator


@contextlib.contextmanager
def load_while(busy: bool) -> Iterator[list[float]]:
    """With ``busy``, a Python busy loop runs beside the block (started a second before, killed
    after). Yields a list that holds the 1-minute load average before the block and, once the
    block is done, after it."""
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if competitor is not None:
            time.sleep(1.0)  # let the busy loop take its core
        loads = [os.getloadavg()[0]]
        yield loads
        loads.append(os.getloadavg()[0])
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
