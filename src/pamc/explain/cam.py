"""Class activation maps from a trained :class:`~pamc.models.CAMClassifier`.

A CAM is the head's output before pooling, ``(C, h, w)`` per image. The *raw* CAM is taken
before BoostLU; the *boosted* CAM is ``BoostLU(alpha)(raw)``. Upsampling maps a CAM onto the
pixels of the image: cell ``(i, j)`` of an ``h x w`` map covers the block of pixels
``[i*H/h, (i+1)*H/h) x [j*W/w, (j+1)*W/w)`` of an ``H x W`` image (bilinear interpolation with
``align_corners=False``, the usual convention for stride-``H/h`` feature maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pamc.config import RunConfig
from pamc.data import DeviceTransform
from pamc.errors import DataError, PamcError
from pamc.models import BoostLU, CAMClassifier


def model_image_size(cfg: RunConfig) -> int:
    """The square input resolution the model was trained at."""
    if cfg.data.image_size is not None:
        return cfg.data.image_size
    if cfg.data.dataset == "synthetic":
        return cfg.data.synthetic.image_size
    raise PamcError(f"the checkpoint's config does not record an image size for dataset {cfg.data.dataset!r}")


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB."""
    from PIL import Image, UnidentifiedImageError

    from pamc.data.image_cache import ImageTooLarge, open_image, to_rgb8

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with open_image(path) as img:
            return np.asarray(to_rgb8(img), dtype=np.uint8).copy()
    except ImageTooLarge as exc:
        raise DataError(str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def resize_for_model(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, size, size) uint8, stretched like the training images."""
    from PIL import Image

    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).copy()


def load_image_files(paths: Sequence[str | Path], size: int,
                     keep_originals: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    """Model inputs (N, 3, size, size) uint8 and the original (H, W, 3) images, for display.

    Images are read one at a time; with ``keep_originals=False`` each original is dropped once
    resized (the list is empty), so memory holds the small model inputs only.
    """
    inputs = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    originals = []
    for i, path in enumerate(paths):
        image = read_image(path)
        inputs[i] = resize_for_model(image, size)
        if keep_originals:
            originals.append(image)
    return inputs, originals


@dataclass
class CAMs:
    """Raw CAMs (N, C, h, w) float32 and the model's scores at ``alpha`` (N, C) in [0, 1]."""

    raw: np.ndarray
    scores: np.ndarray
    alpha: float

    def boosted(self, alpha: float | None = None) -> np.ndarray:
        """``BoostLU(alpha)`` of the raw CAMs (default: the alpha the scores were taken at)."""
        return boost(self.raw, self.alpha if alpha is None else alpha)


def boost(cam: np.ndarray, alpha: float) -> np.ndarray:
    """BoostLU on a NumPy array, through the model's own module."""
    return BoostLU(alpha)(torch.from_numpy(np.asarray(cam, dtype=np.float32))).numpy()


def pooled_scores(cam: np.ndarray) -> np.ndarray:
    """Sigmoid of the spatial mean of (..., h, w) maps: what the classifier outputs for them."""
    return torch.sigmoid(torch.from_numpy(np.asarray(cam, dtype=np.float32)).mean(dim=(-2, -1))).numpy()


@torch.inference_mode()
def compute_cams(
    model: CAMClassifier,
    images: np.ndarray,
    *,
    alpha: float | None = None,
    batch_size: int = 128,
) -> CAMs:
    """Raw CAMs of uint8 images (N, 3, H, W), and sigmoid scores with BoostLU ``alpha``.

    ``alpha`` defaults to the model's inference alpha.
    """
    model.eval()
    alpha = model.eval_alpha if alpha is None else float(alpha)
    device = next(model.parameters()).device
    transform = DeviceTransform(device)
    raws = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
        raws.append(model.forward_cam(transform(batch)).raw.float().cpu())
    c = model.num_classes
    raw = torch.cat(raws).numpy() if raws else np.zeros((0, c, 1, 1), dtype=np.float32)
    return CAMs(raw=raw, scores=pooled_scores(boost(raw, alpha)), alpha=alpha)


def upsample_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of (..., h, w) maps to (..., H, W) image pixels (``size = (H, W)``)."""
    cam = np.asarray(cam, dtype=np.float32)
    lead = cam.shape[:-2]
    x = torch.from_numpy(cam.reshape(-1, 1, *cam.shape[-2:]))
    out = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size).numpy()


def select_classes(
    scores: np.ndarray,
    class_names: Sequence[str],
    *,
    top_k: int | None = None,
    names: Sequence[str] | None = None,
) -> list[int]:
    """Class indices to show for one image: the named classes, or the ``top_k`` best scored."""
    if names:
        lookup = {n: i for i, n in enumerate(class_names)}
        unknown = [n for n in names if n not in lookup]
        if unknown:
            raise PamcError(f"unknown class {unknown[0]!r}; the model's classes are: {', '.join(class_names)}")
        return [lookup[n] for n in names]
    k = min(top_k or 1, len(class_names))
    return [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")[:k]]
