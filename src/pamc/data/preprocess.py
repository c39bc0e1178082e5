"""The one preprocessing path from an image file to a network input.

Training decodes every image into the image cache with :func:`~pamc.data.image_cache.decode_image`
and normalises batches on the device with :class:`~pamc.data.DeviceTransform`; evaluation
reads the same cache through the same transform. :class:`Preprocess` puts the two together for
a trained run (``predict``, ``cam``), with the image size and normalisation the run recorded,
so an image file gives the network the same input as the image cache gave it in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pamc.config import RunConfig
from pamc.data.catalog import Triple, default_image_size, normalisation
from pamc.data.image_cache import DECODE_ERRORS, decode_image
from pamc.data.loader import DeviceTransform
from pamc.errors import DataError


def decode_file(path: str | Path, size: int) -> np.ndarray:
    """One image file as the (3, size, size) uint8 pixels the image cache would hold for it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        pixels, _ = decode_image(path, size)
    except DECODE_ERRORS as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    return np.ascontiguousarray(pixels)


def decode_files(paths: Sequence[str | Path], size: int) -> np.ndarray:
    """(N, 3, size, size) uint8 pixels of ``paths`` (see :func:`decode_file`)."""
    if not paths:
        return np.zeros((0, 3, size, size), dtype=np.uint8)
    return np.stack([decode_file(p, size) for p in paths])


@dataclass(frozen=True)
class Preprocess:
    """Decode, resize and normalise as a trained run did: ``size`` px square, ``mean``/``std``."""

    image_size: int
    mean: Triple
    std: Triple

    def decode_files(self, paths: Sequence[str | Path]) -> np.ndarray:
        """(N, 3, S, S) uint8 pixels of ``paths``, as the image cache holds them."""
        return decode_files(paths, self.image_size)

    def transform(self, device: torch.device | str = "cpu", **kwargs: object) -> DeviceTransform:
        """The on-device uint8 -> normalised float transform (keyword arguments as DeviceTransform's)."""
        return DeviceTransform(torch.device(device), self.mean, self.std, **kwargs)  # type: ignore[arg-type]

    def __call__(self, paths: Sequence[str | Path], device: torch.device | str = "cpu") -> torch.Tensor:
        """The float network input (N, 3, S, S) of image files."""
        return self.transform(device)(torch.from_numpy(self.decode_files(paths)))


def preprocess_for(config: RunConfig) -> Preprocess:
    """What a trained run needs to turn a file into a network input.

    A run records its image size and normalisation when training starts; a config that does
    not (a run trained before pamc recorded them) gets what training resolved it to then: the
    dataset's default size and the backbone's normalisation.
    """
    mean, std = normalisation(config)
    return Preprocess(default_image_size(config.data), mean, std)
