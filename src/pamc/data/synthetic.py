"""A seeded generator of synthetic multi-label scenes.

Each class is a shape (square, disc, ring, triangle, ...). An image holds 1-4 objects of
distinct classes at random positions and sizes, each in a random colour, on a smooth noisy
background. The generator returns the full label matrix and every object's box, so that
localisation of class activation maps can be checked against ground truth.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pamc.data.labels import observe
from pamc.errors import ConfigError, DataError

SHAPE_NAMES: tuple[str, ...] = (
    "square", "disc", "ring", "triangle", "plus", "cross", "diamond", "frame", "bar", "hourglass",
    "stripes", "checker",
)


def _shape_mask(shape: int, size: int) -> np.ndarray:
    """A boolean (size, size) mask of class ``shape`` drawn in its bounding box."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    v, u = np.meshgrid(c, c, indexing="ij")
    r2 = u * u + v * v
    name = SHAPE_NAMES[shape]
    if name == "square":
        return (np.abs(u) < 0.85) & (np.abs(v) < 0.85)
    if name == "disc":
        return r2 < 0.8
    if name == "ring":
        return (r2 < 0.95) & (r2 > 0.35)
    if name == "triangle":
        return (v > -0.85) & (v < 0.85) & (np.abs(u) < (0.85 - v) / 1.7 * 1.0)
    if name == "plus":
        return ((np.abs(u) < 0.28) | (np.abs(v) < 0.28)) & (r2 < 2)
    if name == "cross":
        return np.abs(np.abs(u) - np.abs(v)) < 0.3
    if name == "diamond":
        return np.abs(u) + np.abs(v) < 0.9
    if name == "frame":
        inner = (np.abs(u) < 0.45) & (np.abs(v) < 0.45)
        return (np.abs(u) < 0.9) & (np.abs(v) < 0.9) & ~inner
    if name == "bar":
        return (np.abs(v) < 0.35) & (np.abs(u) < 0.95)
    if name == "hourglass":
        return (np.abs(u) < np.abs(v) + 0.1) & (np.abs(v) < 0.9)
    if name == "stripes":
        return (np.abs(u) < 0.9) & (np.abs(v) < 0.9) & (np.floor((v + 1) * 2.5) % 2 == 0)
    return (np.abs(u) < 0.9) & (np.abs(v) < 0.9) & ((np.floor((u + 1) * 2) + np.floor((v + 1) * 2)) % 2 == 0)


@dataclass(frozen=True)
class SyntheticScenes:
    """Generated scenes: uint8 images (N,3,H,W), labels (N,C) in {+1,-1}, boxes (M,6).

    ``boxes`` rows are ``(image_index, class, x0, y0, x1, y1)`` in pixels, ``x1``/``y1``
    exclusive.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    class_names: tuple[str, ...]


def make_scenes(
    num_images: int,
    num_classes: int = 10,
    image_size: int = 48,
    *,
    min_objects: int = 1,
    max_objects: int = 4,
    noise: float = 0.25,
    min_size: float = 0.22,
    max_size: float = 0.36,
    seed: int = 0,
) -> SyntheticScenes:
    """Draw ``num_images`` scenes; the same arguments always give the same scenes."""
    if not 2 <= num_classes <= len(SHAPE_NAMES):
        raise ConfigError(f"synthetic scenes support 2..{len(SHAPE_NAMES)} classes, got {num_classes}")
    if not 1 <= min_objects <= max_objects <= num_classes:
        raise ConfigError("synthetic scenes need 1 <= min_objects <= max_objects <= num_classes")
    rng = np.random.default_rng(seed)
    size = image_size
    coarse = max(2, size // 8)
    low = rng.random((num_images, 3, coarse, coarse), dtype=np.float32)
    reps = -(-size // coarse)
    background = np.repeat(np.repeat(low, reps, axis=2), reps, axis=3)[:, :, :size, :size]
    background = 0.35 + 0.3 * background
    background += noise * rng.standard_normal(background.shape, dtype=np.float32) * 0.5
    images = background
    labels = -np.ones((num_images, num_classes), dtype=np.int8)
    boxes: list[tuple[int, int, int, int, int, int]] = []
    masks = {}
    for i in range(num_images):
        count = int(rng.integers(min_objects, max_objects + 1))
        classes = rng.choice(num_classes, size=count, replace=False)
        occupied = np.zeros((size, size), dtype=bool)
        for cls in classes:
            for _ in range(20):
                side = int(round(size * rng.uniform(min_size, max_size)))
                x0 = int(rng.integers(0, size - side + 1))
                y0 = int(rng.integers(0, size - side + 1))
                if not occupied[y0:y0 + side, x0:x0 + side].any():
                    break
            occupied[y0:y0 + side, x0:x0 + side] = True
            key = (int(cls), side)
            if key not in masks:
                masks[key] = _shape_mask(int(cls), side)
            mask = masks[key]
            colour = _bright_colour(rng)
            patch = images[i, :, y0:y0 + side, x0:x0 + side]
            patch[:, mask] = colour[:, None] + noise * 0.3 * rng.standard_normal((3, int(mask.sum())), dtype=np.float32)
            labels[i, cls] = 1
            boxes.append((i, int(cls), x0, y0, x0 + side, y0 + side))
    images = np.clip(images * 255.0, 0, 255).astype(np.uint8)
    return SyntheticScenes(
        images=images,
        labels=labels,
        boxes=np.asarray(boxes, dtype=np.int64).reshape(-1, 6),
        class_names=SHAPE_NAMES[:num_classes],
    )


def _bright_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated random colour, far from the mid-grey background."""
    colour = rng.random(3, dtype=np.float32)
    hi = int(rng.integers(3))
    lo = (hi + int(rng.integers(1, 3))) % 3
    colour[hi] = 0.85 + 0.15 * colour[hi]
    colour[lo] = 0.15 * colour[lo]
    return colour


def write_csv_dataset(
    folder: str | Path,
    *,
    num_train: int = 1000,
    num_val: int = 100,
    num_test: int = 400,
    num_classes: int = 10,
    image_size: int = 64,
    seed: int = 0,
    obs_seed: int = 1200,
) -> dict[str, int]:
    """Synthetic scenes written as a ``--dataset csv`` folder, the layout a user's own data has.

    ``images/<split>/<i>.jpg`` (JPEG quality 95); ``train.csv`` in the list form with one
    observed positive per image (drawn with :func:`~pamc.data.labels.observe`, ``obs_seed``);
    ``val.csv`` and ``test.csv`` listing every positive of each image (complete labels);
    ``val.boxes.csv`` / ``test.boxes.csv`` with every object's box; ``classes.txt``. The three
    splits are drawn with different seeds. ``folder`` must not exist or be empty. Returns the
    number of images per split.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise DataError(f"{folder} is not empty; choose a new folder")
    names = SHAPE_NAMES[:num_classes]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("".join(n + "\n" for n in names))
    sizes = {}
    for k, (split, n) in enumerate((("train", num_train), ("val", num_val), ("test", num_test))):
        scenes = make_scenes(n, num_classes, image_size, seed=seed + 100_003 * k)
        labels = observe(scenes.labels, 1, 0, obs_seed) if split == "train" else scenes.labels
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        paths = [f"images/{split}/{i:05d}.jpg" for i in range(n)]
        for path, image in zip(paths, scenes.images):
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / path, quality=95)
        with (folder / f"{split}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "labels"])
            w.writerows([p, ";".join(names[c] for c in np.flatnonzero(row == 1))] for p, row in zip(paths, labels))
        if split != "train":
            with (folder / f"{split}.boxes.csv").open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["image", "class", "x0", "y0", "x1", "y1"])
                w.writerows([paths[i], names[c], x0, y0, x1, y1] for i, c, x0, y0, x1, y1 in scenes.boxes.tolist())
        sizes[split] = n
    return sizes
