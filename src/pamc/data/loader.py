"""Batches from uint8 image arrays, and the on-device input transform.

Images are stored decoded and resized (uint8, N x 3 x H x W); a batch is gathered by index,
moved to the device as uint8 and only there converted, flipped and normalised.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from pamc.data.datasets import Split
from pamc.models.backbones import IMAGENET_INPUT

IMAGENET_MEAN, IMAGENET_STD = IMAGENET_INPUT.mean, IMAGENET_INPUT.std


class Batch(NamedTuple):
    """A training or evaluation batch. Labels follow the +1/-1/0 convention."""

    images: torch.Tensor  # uint8 (B,3,H,W)
    observed: torch.Tensor  # int8 (B,C)
    full: torch.Tensor | None  # int8 (B,C)
    index: torch.Tensor  # int64 (B,), rows of the split


class ArrayLoader:
    """Iterates a :class:`Split` in batches; shuffles with its own seeded generator.

    ``drop_last`` leaves out the last, partial batch of each pass (Cole et al.'s training
    loader does; the BoostLU and LL code keep it).
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        indices: np.ndarray | None = None,
        drop_last: bool = False,
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.indices = torch.as_tensor(np.arange(len(split)) if indices is None else indices, dtype=torch.long)
        if isinstance(split.images, np.ndarray):
            self._images = torch.from_numpy(np.ascontiguousarray(split.images))
        else:  # an ImageRows view of the image cache: rows are read per batch
            self._images = split.images

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.indices) // self.batch_size
        return -(-len(self.indices) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[Batch]:
        order = self.indices
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=self.generator)]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield Batch(
                images=self._images[idx],
                observed=self.split.observed.get(idx),
                full=None if self.split.full is None else torch.from_numpy(self.split.full_rows(idx)),
                index=idx,
            )


class DeviceTransform:
    """uint8 -> normalised float on the device, with optional random horizontal flips.

    One pass converts the batch into the float output (a flipped image is flipped as uint8,
    before its 4x larger float copy exists), then ``x * scale - shift`` runs in place.

    ``channels_last`` writes the output in NHWC order directly, so the model's memory format
    costs no extra copy. ``reuse_output`` keeps the float output buffer and writes the next
    batch into it: the returned tensor is then only valid until the next call. The training
    loop and evaluation consume each batch before asking for the next one, so they reuse it;
    on the CPU this saves the page faults of a fresh 77 MB buffer per 32 images at 448 px,
    which cost more than the conversion itself (``benchmarks/bench_input.py``).
    """

    def __init__(
        self,
        device: torch.device,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        generator: torch.Generator | None = None,
        *,
        channels_last: bool = False,
        reuse_output: bool = False,
    ) -> None:
        self.device = device
        self.scale = (1.0 / (255.0 * torch.tensor(std))).view(1, 3, 1, 1).to(device)
        self.shift = (torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1).to(device)
        self.generator = generator
        self.channels_last = channels_last
        self.reuse_output = reuse_output
        self._buffer: torch.Tensor | None = None
        self._row_constants: tuple[torch.Tensor, torch.Tensor] | None = None

    def _output(self, shape: torch.Size) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last and len(shape) == 4 else torch.contiguous_format
        buf = self._buffer
        if (not self.reuse_output or buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]
                or not buf.is_contiguous(memory_format=fmt)):
            with torch.inference_mode(False):  # a normal tensor: evaluation and training share it
                buf = torch.empty(shape, dtype=torch.float32, device=self.device, memory_format=fmt)
            if self.reuse_output:
                self._buffer = buf
        return buf[:shape[0]]

    def __call__(self, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True)
        out = self._output(x.shape)  # never aliases the input, so the input is left alone
        flips = (torch.rand(x.shape[0], generator=self.generator) < 0.5).tolist() if flip else []
        if any(flips):
            for j, f in enumerate(flips):
                out[j].copy_(x[j].flip(-1) if f else x[j])
        else:
            out.copy_(x)
        if out.dim() == 4 and out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous():
            # NHWC: per-channel constants broadcast over a length-3 inner loop are slow, so the
            # rows (W * 3 values) are scaled by the constants tiled along a row instead
            rows = out.permute(0, 2, 3, 1).view(-1, out.shape[3] * 3)
            scale, shift = self._tiled(out.shape[3])
            rows.mul_(scale).sub_(shift)
            return out
        return out.mul_(self.scale).sub_(self.shift)

    def _tiled(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._row_constants is None or self._row_constants[0].numel() != width * 3:
            self._row_constants = (self.scale.view(3).repeat(width), self.shift.view(3).repeat(width))
        return self._row_constants
