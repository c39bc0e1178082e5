"""``pamc prepare``: validate a dataset's layout, write its index, observed labels and cache.

The prepared folder holds (see docs/datasets.md):

- ``index.json``, ``index-train.npz``, ``index-test.npz``: the parsed dataset;
- ``observed-<P>pos-<N>neg-seed<S>-<key>.npz``: the observed training labels drawn once with
  :func:`pamc.data.labels.observe` (not for datasets with real partial labels); also written
  on its own by :func:`observe_dataset` (``pamc observe``);
- ``images-<size>-<key>.u8`` / ``.npz``: the image cache (with ``cache=True``).

Training with ``data.cache_dir`` set to this folder reuses all of it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pamc.config import DataConfig
from pamc.data.adapters.common import (
    apply_protocol, assemble, default_cache_dir, index_key, load_index, observed_labels_file, observed_pool_labels,
    require_root, save_index,
)
from pamc.data.catalog import parser
from pamc.data.scoring import warn_unscorable
from pamc.errors import DataError

log = logging.getLogger(__name__)


def prepare_dataset(cfg: DataConfig, *, cache: bool = True,
                    progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Parse ``cfg.dataset`` from ``cfg.root`` into ``cfg.cache_dir``; returns a summary."""
    root = require_root(cfg)
    if cfg.cache_dir is None:
        cfg = dataclasses.replace(cfg, cache_dir=str(root / ".pamc-cache"))
    out = Path(cfg.cache_dir)
    parsed = parser(cfg.dataset)(cfg)
    save_index(parsed, out, index_key(cfg, root))
    summary: dict[str, Any] = {
        "dataset": parsed.name, "out": str(out), "classes": len(parsed.class_names),
        "train_listed": len(parsed.pool), "test_listed": len(parsed.test), "boxes": len(parsed.pool.boxes) + len(parsed.test.boxes),
    }
    if cache:
        bundle = assemble(parsed, cfg, progress=progress)
        warn_unscorable(bundle)
        summary.update(train=len(bundle.train), val=len(bundle.val), test=len(bundle.test))
    elif not parsed.partial:
        observed_pool_labels(apply_protocol(parsed, cfg).pool.dense(len(parsed.class_names)), cfg, out)
    return summary


def observe_dataset(cfg: DataConfig) -> dict[str, Any]:
    """Draw (or reuse) the observed training labels of ``cfg.dataset`` in its prepared folder.

    The folder is ``cfg.cache_dir`` (default ``<root>/.pamc-cache``). Its index is reused when
    it matches, else the dataset is parsed and the index written, as ``pamc prepare`` does.
    The labels are drawn over the whole training pool with ``cfg.num_pos``, ``cfg.num_neg`` and
    ``cfg.obs_seed``, exactly as training draws them, so a later ``pamc train`` with the same
    folder and parameters reuses the file. Images are not decoded. Returns a summary.
    """
    root = require_root(cfg)
    out = default_cache_dir(cfg, root)
    key = index_key(cfg, root)
    parsed = load_index(out, key)
    index_reused = parsed is not None
    if parsed is None:
        parsed = parser(cfg.dataset)(cfg)
    if parsed.partial:
        raise DataError(f"{parsed.name} has real partial labels, which training uses as they are: "
                        "there are no observed labels to draw")
    if not index_reused:
        save_index(parsed, out, key)
    full = apply_protocol(parsed, cfg).pool.dense(len(parsed.class_names))
    path = observed_labels_file(full, cfg, out)
    reused = path.is_file()
    observed = observed_pool_labels(full, cfg, out)
    images = len(observed)
    return {
        "dataset": parsed.name, "file": str(path), "images": images, "classes": observed.shape[1],
        "positives_per_image": float((observed == 1).sum() / max(images, 1)),
        "negatives_per_image": float((observed == -1).sum() / max(images, 1)),
        "index_reused": index_reused, "reused": reused,
    }
