"""Predictions for image files: scores of every class and the labels a rule selects."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pamc.data import ArrayLoader, DeviceTransform, LabelStore, Split
from pamc.engine import load_trained, predict
from pamc.explain.cam import load_image_files, model_image_size

BATCH = 64


def select_labels(scores: np.ndarray, *, threshold: float | None = None, top_k: int | None = None) -> list[int]:
    """Class indices, best first: those with score >= ``threshold``, or the ``top_k`` best."""
    if (threshold is None) == (top_k is None):
        raise ValueError("give exactly one of threshold and top_k")
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        return [int(c) for c in order[:top_k]]
    return [int(c) for c in order if scores[c] >= threshold]


def predict_files(
    checkpoint: str | Path,
    paths: Sequence[str | Path],
    *,
    threshold: float | None = None,
    top_k: int | None = None,
    alpha: float | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """``{"checkpoint", "alpha", "rule", "images": [{"image", "predictions", "scores"}]}``."""
    trained = load_trained(checkpoint, device)
    if alpha is not None:
        trained.model.set_eval_alpha(alpha)
    num_classes = len(trained.class_names)
    transform = DeviceTransform(torch.device(device))
    chunks = [np.zeros((0, num_classes), dtype=np.float32)]
    for start in range(0, len(paths), BATCH):  # streamed: one batch of decoded images at a time
        inputs, _ = load_image_files(paths[start:start + BATCH], model_image_size(trained.config), keep_originals=False)
        split = Split(inputs, None, LabelStore(np.zeros((len(inputs), num_classes), dtype=np.int8)))
        chunks.append(predict(trained.model, ArrayLoader(split, BATCH), transform))
    scores = np.concatenate(chunks)
    names = trained.class_names
    images = []
    for path, row in zip(paths, scores):
        chosen = select_labels(row, threshold=threshold, top_k=top_k)
        images.append({
            "image": str(path),
            "predictions": [{"class": names[c], "score": float(row[c])} for c in chosen],
            "scores": {n: float(s) for n, s in zip(names, row)},
        })
    rule = {"top_k": top_k} if top_k is not None else {"threshold": threshold}
    return {"checkpoint": str(trained.path), "alpha": trained.model.eval_alpha, "rule": rule, "images": images}
