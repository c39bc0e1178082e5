"""Builders of tiny datasets in their real on-disk formats (JPEG, XML, JSON, CSV, txt, npy)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pamc.data.adapters.voc import VOC_CLASSES


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    """A small JPEG whose colour blocks depend on ``seed``."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    pixels = np.repeat(np.repeat(coarse, -(-h // 4), 0), -(-w // 4), 1)[:h, :w]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def random_labels(n: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    full = np.where(rng.random((n, c)) < 0.3, 1, -1).astype(np.int8)
    full[np.arange(n), rng.integers(0, c, n)] = 1
    return full


def make_voc(root: Path, year: str = "2007", n_pool: int = 30, n_test: int = 12, seed: int = 0) -> dict:
    """A VOCdevkit/VOC<year> folder with label files, XML annotations and JPEGs."""
    base = root / "VOCdevkit" / f"VOC{year}"
    splits = {"2007": ("trainval", "test"), "2012": ("train", "val")}[year]
    truth = {}
    rng = np.random.default_rng(seed)
    for s, (split, n) in enumerate(zip(splits, (n_pool, n_test))):
        ids = [f"{year}_{s}{i:05d}" for i in range(n)]
        flags = random_labels(n, 20, seed + s)
        difficult = (flags == 1) & (rng.random(flags.shape) < 0.2)
        flags[difficult] = 0
        truth[split] = (ids, flags)
        main = base / "ImageSets" / "Main"
        main.mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(VOC_CLASSES):
            lines = [f"{i} {int(f):>2d}" for i, f in zip(ids, flags[:, k])]
            (main / f"{name}_{split}.txt").write_text("\n".join(lines) + "\n")
        for r, image_id in enumerate(ids):
            write_jpeg(base / "JPEGImages" / f"{image_id}.jpg", seed * 1000 + s * 100 + r, (50, 40))
            objects = "".join(
                f"<object><name>{VOC_CLASSES[k]}</name><difficult>{int(flags[r, k] == 0)}</difficult>"
                f"<bndbox><xmin>{1 + k}</xmin><ymin>2</ymin><xmax>{20 + k}</xmax><ymax>30</ymax></bndbox></object>"
                for k in np.flatnonzero(flags[r] >= 0)
            )
            xml = (f"<annotation><folder>VOC{year}</folder><filename>{image_id}.jpg</filename>"
                   f"<size><width>50</width><height>40</height><depth>3</depth></size>{objects}</annotation>")
            (base / "Annotations").mkdir(exist_ok=True)
            (base / "Annotations" / f"{image_id}.xml").write_text(xml)
    return truth


def make_coco(root: Path, n_train: int = 30, n_val: int = 12, seed: int = 0, year: str = "2014") -> dict:
    """annotations/instances_{train,val}YEAR.json with images in trainYEAR/ and valYEAR/."""
    cat_ids = [1, 2, 3, 5, 7, 11]  # gaps, as in COCO's 1..90 ids
    cats = [{"id": cid, "name": f"cat{cid}", "supercategory": "x"} for cid in reversed(cat_ids)]
    out = {}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for s, (split, n) in enumerate(((f"train{year}", n_train), (f"val{year}", n_val))):
        full = random_labels(n, len(cat_ids), seed + s)
        images, anns = [], []
        for r in range(n):
            name = f"COCO_{split}_{r:012d}.jpg"
            write_jpeg(root / split / name, seed * 1000 + s * 100 + r, (64, 48))
            images.append({"id": 1000 * s + r + 7, "file_name": name, "width": 64, "height": 48})
            for k in np.flatnonzero(full[r] == 1):
                for _ in range(1 + (r % 2)):  # some images hold two instances of a class
                    anns.append({"id": ann_id, "image_id": 1000 * s + r + 7, "category_id": cat_ids[k],
                                 "bbox": [4.0, 6.0, 20.0, 10.0], "iscrowd": 0, "area": 200.0})
                    ann_id += 1
        # one image without annotations is left out by the adapter
        images.append({"id": 1000 * s + 999, "file_name": f"COCO_{split}_empty.jpg", "width": 64, "height": 48})
        write_jpeg(root / split / f"COCO_{split}_empty.jpg", 5, (64, 48))
        year_split = split[:-4]
        (root / "annotations" / f"instances_{year_split}{year}.json").write_text(
            json.dumps({"info": {}, "images": images, "annotations": anns, "categories": cats}))
        out[split] = full
    return out


def make_nuswide_formatted(root: Path, n_train: int = 30, n_val: int = 12, c: int = 81, seed: int = 0) -> dict:
    out = {}
    for s, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        full = random_labels(n, c, seed + s)
        paths = [f"Flickr/concept{s}/{r:04d}_{seed}.jpg" for r in range(n)]
        for r, p in enumerate(paths):
            write_jpeg(root / p, seed * 1000 + s * 100 + r)
        np.save(root / f"formatted_{split}_images.npy", np.array(paths))
        np.save(root / f"formatted_{split}_labels.npy", (full == 1).astype(np.float32))
        out[split] = (paths, full)
    return out


def make_nuswide_official(root: Path, concepts: list[str], n_train: int = 30, n_test: int = 12, seed: int = 0) -> dict:
    out = {}
    (root / "ImageList").mkdir(parents=True, exist_ok=True)
    labels_dir = root / "Groundtruth" / "TrainTestLabels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    for s, (split, n) in enumerate((("Train", n_train), ("Test", n_test))):
        full = random_labels(n, len(concepts), seed + s)
        rel = [f"actor\\{r:04d}_{s}{seed}.jpg" for r in range(n)]  # the official lists use backslashes
        for r, p in enumerate(rel):
            write_jpeg(root / "Flickr" / p.replace("\\", "/"), seed * 1000 + s * 100 + r)
        (root / "ImageList" / f"{split}Imagelist.txt").write_text("\r\n".join(rel) + "\r\n")
        for k, name in enumerate(concepts):
            (labels_dir / f"Labels_{name}_{split}.txt").write_text("\n".join(str(int(v == 1)) for v in full[:, k]) + "\n")
        out[split] = (rel, full)
    return out


def make_cub(root: Path, n: int = 40, num_attributes: int = 312, seed: int = 0) -> dict:
    base = root / "CUB_200_2011"
    rng = np.random.default_rng(seed)
    full = random_labels(n, num_attributes, seed)
    is_train = rng.random(n) < 0.6
    is_train[:2], is_train[-2:] = True, False
    paths = [f"001.Black_footed_Albatross/Bird_{i:04d}.jpg" for i in range(1, n + 1)]
    for i, p in enumerate(paths):
        write_jpeg(base / "images" / p, seed * 1000 + i)
    (base / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in enumerate(paths, 1)))
    (base / "train_test_split.txt").write_text("".join(f"{i} {int(t)}\n" for i, t in enumerate(is_train, 1)))
    (base / "attributes").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        for a in range(num_attributes):
            lines.append(f"{i + 1} {a + 1} {int(full[i, a] == 1)} {1 + (a % 4)} {rng.uniform(0, 20):.3f}\n")
    (base / "attributes" / "image_attribute_labels.txt").write_text("".join(lines))
    (root / "attributes.txt").write_text("".join(f"{a + 1} has_attr::value_{a + 1}\n" for a in range(num_attributes)))
    return {"full": full, "is_train": is_train, "paths": paths}


def make_openimages(root: Path, n_train: int = 40, n_test: int = 15, c: int = 12, seed: int = 0) -> dict:
    """The 2017_11 layout with ~30% of the entries annotated (1 or 0 confidence)."""
    rng = np.random.default_rng(seed)
    mids = [f"/m/0{k:03x}" for k in range(c)]
    (root / "classes-trainable.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes-trainable.txt").write_text("\n".join(mids) + "\n")
    with (root / "class-descriptions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        for k, m in enumerate(mids + ["/m/untrainable"]):
            w.writerow([m, f"Thing, kind {k}"])  # a comma inside a quoted name
    out = {}
    for s, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        labels = np.zeros((n, c), dtype=np.int8)
        (root / split).mkdir(parents=True, exist_ok=True)
        ids = [f"{seed:02x}{s}{r:013x}" for r in range(n)]
        with (root / split / "annotations-human.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageID", "Source", "LabelName", "Confidence"])
            for r, image in enumerate(ids):
                write_jpeg(root / "images" / split / f"{image}.jpg", seed * 1000 + s * 100 + r)
                ks = rng.choice(c, size=int(rng.integers(1, 5)), replace=False)
                ks[0] = r % c  # every class has annotations
                for k in ks:
                    value = 1 if (k == ks[0] or rng.random() < 0.4) else -1
                    labels[r, k] = value
                    w.writerow([image, "verification", mids[k], 1 if value == 1 else 0])
                w.writerow([image, "verification", "/m/untrainable", 1])
        out[split] = (ids, labels)
    out["mids"] = mids
    return out


def make_csv(root: Path, n: int = 30, classes: tuple[str, ...] = ("cat", "dog", "bird", "fish"), form: str = "list",
             name: str = "train.csv", seed: int = 0, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    """A CSV dataset (list or wide form) with JPEGs in ``img/``; returns the written labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, len(classes)), dtype=np.int8)
    root.mkdir(parents=True, exist_ok=True)
    with (root / name).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "labels", "negatives"] if form == "list" else ["image", *classes])
        for r in range(n):
            image = f"img/{name[:-4]}_{r:04d}.jpg"
            write_jpeg(root / image, seed * 10000 + r, size)
            pos = {int(rng.integers(len(classes)))}
            neg = {k for k in range(len(classes)) if k not in pos and rng.random() < 0.4}
            labels[r, list(pos)] = 1
            labels[r, list(neg)] = -1
            if form == "list":
                w.writerow([image, ";".join(classes[k] for k in pos), ";".join(classes[k] for k in neg)])
            else:
                w.writerow([image, *labels[r].tolist()])
    return labels


# one small dataset per reader, in its real layout: FIXTURES[name](root)
FIXTURES = {
    "voc2007": lambda root: make_voc(root, "2007", n_pool=24, n_test=10),
    "voc2012": lambda root: make_voc(root, "2012", n_pool=24, n_test=10),
    "coco2014": lambda root: make_coco(root, n_train=24, n_val=10),
    "nuswide": lambda root: make_nuswide_formatted(root, n_train=24, n_val=10),
    "cub": lambda root: make_cub(root, n=30),
    "openimages-v3": lambda root: make_openimages(root, n_train=30, n_test=12),
    "csv": lambda root: make_csv(root, n=30),
}
