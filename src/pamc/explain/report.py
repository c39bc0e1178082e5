"""The attribution-gap report between a full-label and a partial-label checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pamc.errors import PamcError
from pamc.evaluation import mean_average_precision
from pamc.engine import load_trained
from pamc.explain.cam import boost, compute_cams, model_image_size, pooled_scores
from pamc.explain.gap import GapResult, attribution_gap
from pamc.explain.localization import localization

log = logging.getLogger(__name__)


def gap_report(
    full_checkpoint: str | Path,
    partial_checkpoint: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
    alpha: float = 5.0,
    top_fraction: float = 0.2,
    iou_threshold: float = 0.5,
    data_root: str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, Any], GapResult]:
    """Run both models on the same images of the full model's dataset and compare their CAMs.

    Returns the JSON-ready summary and the per-pair measurements. Localisation metrics are
    included when the split has boxes.
    """
    full = load_trained(full_checkpoint, device)
    partial = load_trained(partial_checkpoint, device)
    if full.class_names != partial.class_names:
        raise PamcError("the two checkpoints have different classes")
    if full.config.data.dataset != partial.config.data.dataset or model_image_size(full.config) != model_image_size(partial.config):
        raise PamcError("the two checkpoints were trained on different datasets or image sizes")
    data = full.split(split, data_root)
    if data.full is None:
        raise PamcError(f"the {split} split has no ground-truth labels")
    n = len(data) if limit is None else min(limit, len(data))
    images, labels = data.images[:n], data.full_rows(np.arange(n))
    rows, classes = np.nonzero(labels == 1)
    if len(rows) == 0:
        raise PamcError("no positive labels among the chosen images")
    cams_full = compute_cams(full.model, images, alpha=1.0).raw
    cams_part = compute_cams(partial.model, images, alpha=1.0).raw
    result = attribution_gap(cams_full[rows, classes], cams_part[rows, classes], alpha=alpha, top_fraction=top_fraction)
    summary: dict[str, Any] = {
        "full_checkpoint": str(full.path),
        "partial_checkpoint": str(partial.path),
        "split": split,
        "images": int(n),
        **result.summary(),
        "map": {
            "full": 100 * mean_average_precision(pooled_scores(cams_full), labels),
            "partial": 100 * mean_average_precision(pooled_scores(cams_part), labels),
            "partial_boostlu": 100 * mean_average_precision(pooled_scores(boost(cams_part, alpha)), labels),
        },
    }
    boxes = data.boxes[data.boxes[:, 0] < n]
    if len(boxes):
        size = tuple(images.shape[2:])
        summary["localization"] = {
            "full": localization(cams_full, boxes, size, full.class_names, threshold=iou_threshold),
            "partial": localization(cams_part, boxes, size, full.class_names, threshold=iou_threshold),
        }
    log.info("attribution gap on %d pairs of %d images", len(rows), n)
    return summary, result
