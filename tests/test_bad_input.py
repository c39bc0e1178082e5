"""The bad-input suite: every CLI command against input it must refuse (docs/bad-input.md).

Each case asserts exit code 2, exactly one stderr line ``pamc: error: ...`` holding the
expected message, no traceback, no run directory left behind and no temporary or corrupt
checkpoint file. Cases marked ``subprocess`` run ``python -m pamc`` as a user would; the
others call the same ``main()`` in-process (faster, and able to inject a full disk).
"""

from __future__ import annotations

import errno
import os
import random
import pickle
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

from pamc.cli.main import main
from pamc.config import config_from_dict
from pamc.engine import fit, load_checkpoint, save_checkpoint
from pamc.engine.resume import LAST_CHECKPOINT, load_last
from pamc.engine.rundir import LOCK_FILE

SRC = str(Path(__file__).resolve().parents[1] / "src")
DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"
TINY = ["--epochs", "1", "--batch-size", "8", "--lr", "0.003", "--set", "data.synthetic.num_train=80",
        "--set", "data.synthetic.num_test=40", "--set", "data.synthetic.image_size=32", "--no-progress"]


class Evil:
    """A pickle payload: unpickling it creates the marker file (it must never happen)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-epoch run (config.yaml, metrics, best, last + state, test results)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    cfg = config_from_dict({
        "data": {"synthetic": {"num_train": 80, "num_test": 40, "image_size": 32}},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.003},
        "output_dir": str(run),
    })
    fit(cfg, callbacks=())
    return run


@dataclass
class Ctx:
    tmp: Path
    finished: Path

    @property
    def out(self) -> Path:  # every train case writes here; it must not exist afterwards
        return self.tmp / "out" / "run"

    @property
    def marker(self) -> Path:
        return self.tmp / "PWNED"

    def file(self, name: str, content: bytes | str) -> str:
        path = self.tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def interrupted(self) -> Path:
        """A copy of the finished run without its test results: a valid ``--resume`` target."""
        run = self.tmp / "interrupted"
        shutil.copytree(self.finished, run)
        (run / "test_results.json").unlink()
        return run

    def best_copy(self) -> Path:
        path = self.tmp / "best.safetensors"
        shutil.copy(self.finished / "best.safetensors", path)
        return path

    def evil_pickle(self, torch_format: bool) -> bytes:
        path = self.tmp / "evil.bin"
        if torch_format:
            torch.save({"state_dict": Evil(self.marker)}, path)
        else:
            path.write_bytes(pickle.dumps(Evil(self.marker)))
        data = path.read_bytes()
        path.unlink()
        return data


def train(c: Ctx, *extra: str) -> list[str]:
    return ["train", *TINY, *extra, "--output-dir", str(c.out)]


def resume(c: Ctx, prepare: Callable[[Path], object] | None = None) -> list[str]:
    """``pamc train --resume`` on a copy of the finished run, damaged by ``prepare``."""
    run = c.interrupted()
    if prepare is not None:
        prepare(run)
    return ["train", "--resume", str(run)]


def torch_file(c: Ctx, name: str, obj: object) -> str:
    torch.save(obj, c.tmp / name)
    return str(c.tmp / name)


def plain_safetensors(c: Ctx) -> str:
    save_file({"w": torch.zeros(2)}, str(c.tmp / "plain.safetensors"))
    return str(c.tmp / "plain.safetensors")


def _state_file(run: Path) -> Path:
    return run / load_checkpoint(run / LAST_CHECKPOINT).extra["state_file"]


def _corrupt_state(run: Path, data: bytes | None = None, truncate: bool = False, version: int | None = None,
                   edit: Callable[[dict], None] | None = None) -> None:
    path = _state_file(run)
    if data is not None:
        path.write_bytes(data)
    if truncate:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    if version is not None or edit is not None:
        raw = torch.load(path, weights_only=True)
        if version is not None:
            raw["version"] = version
        if edit is not None:
            edit(raw)
        torch.save(raw, path)


def _edit_config(run: Path, old: str, new: str) -> None:
    text = (run / "config.yaml").read_text()
    assert old in text
    (run / "config.yaml").write_text(text.replace(old, new, 1))


def _recheckpoint(c: Ctx, names: int | None = None, version: str | None = None) -> str:
    ckpt = load_checkpoint(c.finished / "best.safetensors")
    path = c.tmp / "other.safetensors"
    if version is not None:
        save_file(ckpt.state_dict, str(path), metadata={"pamc_format": version})
    else:
        from pamc.engine import make_model

        model = make_model(ckpt.config, len(ckpt.class_names))
        model.load_state_dict(ckpt.state_dict)
        save_checkpoint(path, model, ckpt.config, ckpt.class_names[:names])
    return str(path)



# ---- tiny datasets as text files (no images unless a case needs them) -------------------------

BOMB_YAML = ("# nine levels of nine aliases, 9**9 x\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
             "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
             "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
             "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
             "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\ntrain: {epochs: *i}\n")


def bomb_jpeg(width: int = 12000, height: int = 12000) -> bytes:
    """A real small JPEG whose header claims ``width`` x ``height`` pixels."""
    import io
    import struct

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def prep(c: Ctx, dataset: str, root: Path, *extra: str) -> list[str]:
    """``pamc prepare`` without the image cache: parse errors only (the out folder must not appear)."""
    return ["prepare", dataset, "--data-root", str(root), "--out", str(c.out), "--no-cache", "--no-progress", *extra]


def csv_root(c: Ctx, body: bytes | str = "image,labels\nimg/a.jpg,cat\nimg/b.jpg,dog\n",
             classes: bytes | str | None = "cat\ndog\n") -> Path:
    d = c.tmp / "csvdata"
    _write(d / "train.csv", body)
    if classes is not None:
        _write(d / "classes.txt", classes)
    return d


def csv_prep(c: Ctx, body: bytes | str, classes: bytes | str | None = "cat\ndog\n") -> list[str]:
    return prep(c, "csv", csv_root(c, body, classes))


def csv_images(c: Ctx, rows: list[str], header: str = "image,cat,dog", extra: dict[str, bytes] | None = None) -> Path:
    """A wide-form CSV dataset whose images exist (small JPEGs), for cases that decode them."""
    from dataset_fixtures import write_jpeg

    d = c.tmp / "csvimg"
    for i, row in enumerate(rows):
        name = row.split(",")[0]
        if not (extra and name in extra):
            write_jpeg(d / name, i, (24, 24))
    for name, data in (extra or {}).items():
        _write(d / name, data)
    _write(d / "train.csv", header + "\n" + "\n".join(rows) + "\n")
    return d


def csv_train(c: Ctx, root: Path, *extra: str, size: int = 32) -> list[str]:
    return ["train", "--dataset", "csv", "--data-root", str(root), "--image-size", str(size), "--epochs", "1",
            "--batch-size", "4", "--no-progress", *extra, "--output-dir", str(c.out)]


def _wide(n: int, value: str = "1") -> list[str]:
    return [f"img/{i:02d}.jpg,{value},0" for i in range(n)]


def outside_link(c: Ctx, folder: bool = False) -> list[str]:
    """A CSV row through a symlink inside the data root to a file (or folder) outside it."""
    from dataset_fixtures import write_jpeg

    d = csv_root(c, "image,labels\nimg/a.jpg,cat\nlink/x.jpg,dog\n" if folder else
                 "image,labels\nimg/a.jpg,cat\nimg/link.jpg,dog\n")
    write_jpeg(c.tmp / "elsewhere" / "x.jpg", 0)
    (d / "img").mkdir(exist_ok=True)
    if folder:
        (d / "link").symlink_to(c.tmp / "elsewhere", target_is_directory=True)
    else:
        (d / "img" / "link.jpg").symlink_to(c.tmp / "elsewhere" / "x.jpg")
    return prep(c, "csv", d)


VOC_IDS = ["000005", "000007", "000009"]


def voc_root(c: Ctx, edit: Callable[[Path], object] | None = None, xml: str | None = None) -> Path:
    from pamc.data.adapters.voc import VOC_CLASSES

    main = c.tmp / "voc" / "VOC2007" / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for split in ("trainval", "test"):
        for k, name in enumerate(VOC_CLASSES):
            (main / f"{name}_{split}.txt").write_text("".join(f"{i} {1 if k == j else -1}\n" for j, i in enumerate(VOC_IDS)))
    if xml is not None:
        _write(main.parents[1] / "Annotations" / f"{VOC_IDS[0]}.xml", xml)
    if edit is not None:
        edit(main)
    return c.tmp / "voc"


def voc_prep(c: Ctx, edit: Callable[[Path], object] | None = None, xml: str | None = None) -> list[str]:
    return prep(c, "voc2007", voc_root(c, edit, xml))


def _voc_line(main: Path, old: str, new: bytes | str, name: str = "aeroplane_trainval.txt") -> None:
    path = main / name
    data = path.read_bytes()
    new_b = new.encode() if isinstance(new, str) else new
    assert old.encode() in data
    path.write_bytes(data.replace(old.encode(), new_b, 1))


def _voc_box(box: str) -> str:
    return f"<annotation><object><name>cat</name><bndbox>{box}</bndbox></object></annotation>"


def coco_json(images: object = None, annotations: object = None, categories: object = None) -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
                   {"id": 2, "file_name": "b.jpg", "width": 10, "height": 10}] if images is None else images,
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},
                        {"id": 2, "image_id": 2, "category_id": 2}] if annotations is None else annotations,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}] if categories is None else categories,
    }


def coco_prep(c: Ctx, train: object) -> list[str]:
    """COCO 2014 whose train JSON is ``train`` (an object, or raw text/bytes)."""
    import json

    root = c.tmp / "coco"
    raw = train if isinstance(train, (str, bytes)) else json.dumps(train)
    _write(root / "annotations" / "instances_train2014.json", raw)
    _write(root / "annotations" / "instances_val2014.json", json.dumps(coco_json()))
    (root / "train2014").mkdir()
    (root / "val2014").mkdir()
    return prep(c, "coco2014", root)


def coco_ann(**fields: object) -> dict:
    return coco_json(annotations=[{"id": 1, "image_id": 1, "category_id": 1, **fields}])


def cub_prep(c: Ctx, images: bytes | str = "1 a/1.jpg\n2 a/2.jpg\n3 a/3.jpg\n",
             split: bytes | str = "1 1\n2 1\n3 0\n", labels: bytes | str | None = None) -> list[str]:
    base = c.tmp / "cub" / "CUB_200_2011"
    _write(base / "images.txt", images)
    _write(base / "train_test_split.txt", split)
    _write(base / "attributes.txt", "1 has_a\n2 has_b\n3 has_c\n")
    default = "".join(f"{i} {a} {(i + a) % 2} 3 1.0\n" for i in (1, 2, 3) for a in (1, 2, 3))
    _write(base / "attributes" / "image_attribute_labels.txt", default if labels is None else labels)
    return prep(c, "cub", c.tmp / "cub")


OI_HEADER = "ImageID,Source,LabelName,Confidence\n"


def oi_root(c: Ctx, train: bytes | str | None = None, classes: int = 6, desc: bytes | str | None = None) -> Path:
    root = c.tmp / "oi"
    mids = [f"/m/0{k}" for k in range(classes)]
    _write(root / "classes-trainable.txt", "\n".join(mids) + "\n")
    _write(root / "class-descriptions.csv", "".join(f"{m},thing {k}\n" for k, m in enumerate(mids)) if desc is None else desc)
    rows = "".join(f"img{r},v,{mids[r % classes]},1\n" for r in range(12))
    _write(root / "train" / "annotations-human.csv", OI_HEADER + rows if train is None else train)
    _write(root / "test" / "annotations-human.csv", OI_HEADER + rows)
    return root


def _linked(argv: list[str], link: Path, target: Path) -> list[str]:
    """``argv`` after making ``link`` a symlink to ``target`` (a file outside the data root)."""
    _write(target, b"outside")
    link.symlink_to(target)
    return argv


def _rewrite(root: Path, name: str, text: str) -> Path:
    (root / name).write_text(text)
    return root


def oi_prep(c: Ctx, train: bytes | str | None = None, **kw) -> list[str]:
    return prep(c, "openimages-v3", oi_root(c, train, **kw))


def nus_official(c: Ctx, listing: bytes | str = "a\\1.jpg\r\na\\2.jpg\r\n", labels: bytes | str = "1\n0\n") -> list[str]:
    root = c.tmp / "nus"
    _write(root / "ImageList" / "TrainImagelist.txt", listing)
    _write(root / "ImageList" / "TestImagelist.txt", "a\\3.jpg\r\na\\4.jpg\r\n")
    gt = root / "Groundtruth" / "TrainTestLabels"
    for concept in ("sky", "water"):
        _write(gt / f"Labels_{concept}_Train.txt", labels if concept == "sky" else "0\n1\n")
        _write(gt / f"Labels_{concept}_Test.txt", "1\n0\n")
    return prep(c, "nuswide", root)


def nus_formatted(c: Ctx, images: object = None, labels: object = None) -> list[str]:
    import numpy as np

    root = c.tmp / "nusf"
    root.mkdir()
    for split in ("train", "val"):
        imgs = np.array(["Flickr/a.jpg", "Flickr/b.jpg"]) if images is None or split == "val" else images
        labs = np.eye(2, 3, dtype=np.float32) if labels is None or split == "val" else labels
        np.save(root / f"formatted_{split}_images.npy", imgs, allow_pickle=True)
        np.save(root / f"formatted_{split}_labels.npy", labs, allow_pickle=True)
    return prep(c, "nuswide", root)


def retyped_checkpoint(c: Ctx, edit: Callable[[dict], None]) -> str:
    """The finished run's best checkpoint with its tensors edited (dtype, values), metadata kept."""
    from safetensors import safe_open

    src = c.finished / "best.safetensors"
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors)
    path = c.tmp / "edited.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return str(path)


def _first_float(tensors: dict, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = fn(tensors[key])


def meta_checkpoint(c: Ctx, **data: object) -> str:
    """The best checkpoint with its metadata's data section edited (as a downloaded file could be)."""
    import dataclasses
    import json

    from safetensors import safe_open

    src = c.finished / "best.safetensors"
    with safe_open(str(src), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(metadata["config"])
    cfg["data"].update(data)
    metadata["config"] = json.dumps(cfg)
    path = c.tmp / "downloaded.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return str(path)


def pretrained_file(c: Ctx, edit: Callable[[dict], None]) -> str:
    from pamc.engine import make_model

    model = make_model(config_from_dict({}), 10)
    state = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    edit(state)
    return torch_file(c, "backbone.pth", state)


def _edit_state_progress(**fields: object) -> Callable[[dict], None]:
    def edit(raw: dict) -> None:
        for k, v in fields.items():
            if k == "best_epoch":  # the selection hook's state (training-state format 2)
                raw["hooks"]["selection"][k] = v
            elif k in raw["progress"]:
                raw["progress"][k] = v
            else:
                raw[k] = v
    return edit


def png_image(c: Ctx, name: str = "x.png") -> str:
    from dataset_fixtures import write_jpeg

    write_jpeg(c.tmp / name, 0, (32, 32))
    return str(c.tmp / name)


def user_file(c: Ctx, name: str) -> str:
    """A file the user owns at an output path: a failed write must leave it byte-identical."""
    return c.file(name, "the user's own file\n")


def users_dir(c: Ctx, *names: str) -> str:
    """A directory holding the user's own files (pamc's file names among them): pamc must not write there."""
    folder = c.tmp / "mine"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text(f"the user's own {name}\n")
    return str(folder)


def live_run(c: Ctx, run: Path | None = None) -> str:
    """A run directory whose lock another writer holds (here: this process, through its own descriptor)."""
    from filelock import FileLock

    run = run if run is not None else c.tmp / "live"
    run.mkdir(exist_ok=True)
    c.held = FileLock(str(run / LOCK_FILE))  # released when the test's context goes
    c.held.acquire(timeout=0)
    return str(run)


def demo_over_other_run(c: Ctx) -> list[str]:
    """``demo -o D`` where ``D/runs/full-seed0`` is a finished run of another config."""
    shutil.copytree(c.finished, c.tmp / "demo" / "runs" / "full-seed0")
    return ["demo", "--quick", "--seeds", "1", "--pretrained", "none", "--no-progress", "-o", str(c.tmp / "demo")]


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], list[str]]
    message: str
    subprocess: bool = False
    enospc_at: int | None = None  # simulate a full disk at the n-th fsync of an atomic write
    read_only: bool = False  # simulate a read-only file system: every plain file write fails
    read_only_fs: bool = False  # simulate a read-only file system: creating any file fails with EROFS
    after: Callable[[Ctx], None] | None = None


def _kept_resumable(c: Ctx) -> None:
    """A full disk after epoch 1's checkpoint: the run stays, intact, and resumes."""
    ckpt, state = load_last(c.out)
    assert (state.progress.epoch, state.progress.step) == (2, 0)
    assert len(list(c.out.glob("last.state-*.pt"))) == 1
    assert main(["train", "--resume", str(c.out), "--no-progress"]) == 0
    assert (c.out / "test_results.json").is_file()


CASES = [
    # malformed configs and wrong value types
    Case("yaml-syntax", lambda c: train(c, "--config", c.file("c.yaml", "train: [1, 2\n")), "is not valid YAML (line 2)"),
    Case("yaml-not-mapping", lambda c: train(c, "--config", c.file("c.yaml", "- 1\n- 2\n")),
         "must hold a mapping at the top level"),
    Case("yaml-unknown-key", lambda c: train(c, "--config", c.file("c.yaml", "train:\n  warmup: 3\n")),
         "unknown config key 'train.warmup'"),
    Case("yaml-wrong-type", lambda c: train(c, "--config", c.file("c.yaml", "train:\n  seed: ten\n")),
         "config key 'train.seed' must be int, got 'ten'"),
    Case("yaml-section-not-mapping", lambda c: train(c, "--config", c.file("c.yaml", "model: 5\n")),
         "'model' must be a mapping, got 5"),
    Case("set-wrong-type", lambda c: train(c, "--set", "train.flip=maybe"), "config key 'train.flip' must be bool"),
    Case("set-no-equals", lambda c: train(c, "--set", "train.lr"), "--set expects KEY=VALUE"),
    Case("flag-wrong-type", lambda c: train(c, "--epochs", "x"), "argument --epochs: invalid int value: 'x'"),
    Case("unknown-method-param", lambda c: train(c, "--method", "ll-r", "--set", "method.params.bogus=1"),
         "unknown parameter 'bogus' for method 'll-r'"),
    Case("on-nonfinite-choice", lambda c: train(c, "--set", "train.on_nonfinite=ignore"),
         "config key 'train.on_nonfinite' must be one of ['stop', 'skip'], got 'ignore'"),
    Case("unknown-device", lambda c: train(c, "--device", "tpu9"), "unknown device 'tpu9'"),
    # run-directory ownership and locks: pamc writes only where it owns the directory, one writer at a time
    Case("output-users-config-and-metrics", lambda c: ["train", *TINY, "-o", users_dir(c, "config.yaml", "metrics.jsonl")],
         "mine is not empty and is not a pamc run directory"),
    Case("output-users-file", lambda c: ["train", *TINY, "-o", users_dir(c, "notes.txt")],
         "mine is not empty and is not a pamc run directory"),
    Case("output-overwrite-users-dir", lambda c: ["train", *TINY, "--overwrite", "-o",
                                                  users_dir(c, "config.yaml", "best.safetensors")],
         "mine is not empty and is not a pamc run directory"),
    Case("output-overwrite-with-resume", lambda c: ["train", "--resume", str(c.interrupted()), "--overwrite"],
         "--overwrite starts a new run; it cannot be combined with --resume"),
    Case("output-live-run", lambda c: ["train", *TINY, "-o", live_run(c)],
         "live is in use by another pamc process"),
    Case("resume-live-run", lambda c: ["train", "--resume", live_run(c, c.interrupted())],
         "interrupted is in use by another pamc process"),
    Case("demo-reuses-other-config", demo_over_other_run, "full-seed0 holds a finished run with another config"),
    Case("demo-into-users-results", lambda c: ["demo", "--quick", "--seeds", "1", "--pretrained", "none", "--no-progress",
                                                "-o", users_dir(c, "results.md")],
         "mine/results.md exists and was not written by pamc (no runs/ beside it)"),
    Case("zoo-into-users-results", lambda c: ["zoo", "--quick", "--seeds", "1", "--methods", "an", "--no-progress",
                                               "-o", users_dir(c, "notes.txt", "results.csv")],
         "mine/results.csv exists and was not written by pamc (no runs/ beside it)"),
    Case("reproduce-into-users-results", lambda c: ["reproduce", "--dataset", "voc2012", "--data-root", str(c.tmp),
                                                     "-o", users_dir(c, "results.md")],
         "mine/results.md exists and was not written by pamc (no runs/ beside it)"),
    # out-of-range hyperparameters
    Case("negative-lr", lambda c: train(c, "--lr", "-0.1"), "train.lr must be > 0, got -0.1"),
    Case("nan-lr", lambda c: train(c, "--set", "train.lr=.nan"), "train.lr must be > 0, got nan"),
    Case("alpha-below-1", lambda c: train(c, "--alpha", "0.5"), "model.train_alpha must be >= 1 (BoostLU), got 0.5"),
    Case("eval-alpha-below-1", lambda c: train(c, "--eval-alpha", "0"), "model.eval_alpha must be >= 1 (BoostLU), got 0.0"),
    Case("delta-rel-zero", lambda c: train(c, "--method", "ll-r", "--set", "method.params.delta_rel=0"),
         "delta_rel must be in (0, 100) percent per epoch, got 0"),
    Case("delta-rel-100", lambda c: train(c, "--method", "ll-ct", "--set", "method.params.delta_rel=100"),
         "delta_rel must be in (0, 100) percent per epoch, got 100"),
    Case("delta-rel-string", lambda c: train(c, "--method", "ll-cp", "--set", "method.params.delta_rel=lots"),
         "delta_rel must be a number, got 'lots'"),
    Case("batch-size-zero", lambda c: train(c, "--batch-size", "0"), "train.batch_size must be >= 1, got 0"),
    Case("step-checkpoints-negative", lambda c: train(c, "--set", "train.checkpoint_every_steps=-1"),
         "train.checkpoint_every_steps must be >= 0, got -1"),
    Case("lr-diverges", lambda c: train(c, "--lr", "1e30"),
         "non-finite loss (nan) at epoch 1, step 2 of 8; no checkpoint had been written yet"),
    # missing or corrupt files, checkpoints from elsewhere
    Case("config-missing", lambda c: train(c, "--config", str(c.tmp / "nope.yaml")), "config file not found"),
    Case("pretrained-missing", lambda c: train(c, "--pretrained", str(c.tmp / "nope.pth")), "checkpoint file not found"),
    Case("pretrained-random-bytes", lambda c: train(c, "--pretrained", c.file("r.pth", random.Random(0).randbytes(4096))),
         "r.pth: not a plain tensor checkpoint"),
    Case("pretrained-truncated", lambda c: train(c, "--pretrained", c.file(
        "t.safetensors", c.best_copy().read_bytes()[:5000])), "cannot read safetensors file"),
    Case("pretrained-foreign-keys", lambda c: train(c, "--pretrained", torch_file(
        c, "f.pth", {"conv1.weight": torch.zeros(64, 3, 7, 7)})), "does not match SmallCNN"),
    Case("pretrained-pickle-payload", lambda c: train(c, "--pretrained", c.file("evil.pth", c.evil_pickle(True))),
         "refusing to load", subprocess=True),
    Case("eval-missing", lambda c: ["eval", str(c.tmp / "nope.safetensors")], "checkpoint not found"),
    Case("eval-run-dir-empty", lambda c: ["eval", str(c.tmp)], "checkpoint not found"),
    Case("eval-truncated", lambda c: ["eval", c.file("t.safetensors", c.best_copy().read_bytes()[:5000])],
         "is not a safetensors checkpoint"),
    Case("eval-random-bytes", lambda c: ["eval", c.file("r.safetensors", random.Random(0).randbytes(4096))],
         "is not a safetensors checkpoint"),
    Case("eval-pickle-payload", lambda c: ["eval", c.file("best.safetensors", c.evil_pickle(False))],
         "is not a safetensors checkpoint", subprocess=True),
    Case("eval-torch-pickle-payload", lambda c: ["eval", c.file("model.pth", c.evil_pickle(True))],
         "is not a safetensors checkpoint"),
    Case("eval-not-pamc", lambda c: ["eval", plain_safetensors(c)], "has no pamc metadata"),
    Case("eval-format-version", lambda c: ["eval", _recheckpoint(c, version="99")],
         "has checkpoint format 99, this pamc reads format 1"),
    Case("eval-class-count", lambda c: ["eval", _recheckpoint(c, names=6)], "has 6 classes, the dataset has 10"),
    Case("eval-bad-alpha", lambda c: ["eval", str(c.finished), "--alpha", "a,b"], "comma list of numbers"),
    # resuming
    Case("resume-missing-dir", lambda c: ["train", "--resume", str(c.tmp / "nope")], "run directory not found"),
    Case("resume-not-a-run", lambda c: ["train", "--resume", str(c.tmp)], "has no config.yaml; it is not a pamc run"),
    Case("resume-no-last", lambda c: resume(c, lambda run: (run / LAST_CHECKPOINT).unlink()), "no last.safetensors in"),
    Case("resume-finished", lambda c: ["train", "--resume", str(c.finished)], "has already finished"),
    Case("resume-with-flags", lambda c: [*resume(c), "--lr", "0.1"], "--resume continues a run with its own config.yaml"),
    Case("resume-pickle-payload", lambda c: resume(c, lambda run: _corrupt_state(run, data=c.evil_pickle(True))),
         "refusing to load", subprocess=True),
    Case("resume-truncated-state", lambda c: resume(c, lambda run: _corrupt_state(run, truncate=True)),
         "cannot read training state"),
    Case("resume-state-version", lambda c: resume(c, lambda run: _corrupt_state(run, version=99)),
         "has training-state format 99, this pamc reads format 2"),
    Case("resume-state-optimizer", lambda c: resume(c, lambda run: _corrupt_state(
        run, edit=lambda raw: raw["optimizer"]["param_groups"].pop())),
         "does not match this run: loaded state dict has a different number of parameter groups"),
    Case("resume-state-rng", lambda c: resume(c, lambda run: _corrupt_state(
        run, edit=lambda raw: raw["rng"].update(numpy="x"))), "does not match this run"),
    Case("resume-state-missing", lambda c: resume(c, lambda run: _state_file(run).unlink()),
         "is missing"),
    Case("resume-truncated-last", lambda c: resume(c, lambda run: (run / LAST_CHECKPOINT).write_bytes(b"\x08" * 64)),
         "is not a safetensors checkpoint"),
    Case("resume-backbone-changed", lambda c: resume(c, lambda run: _edit_config(
        run, "backbone: smallcnn", "backbone: resnet18")), "has backbone 'smallcnn', expected 'resnet18'"),
    Case("resume-classes-changed", lambda c: resume(c, lambda run: _edit_config(
        run, "num_classes: 10", "num_classes: 8")), "has 10 classes, the dataset has 8"),
    Case("resume-config-changed", lambda c: resume(c, lambda run: _edit_config(run, "lr: 0.003", "lr: 0.01")),
         "train.lr is 0.003 in the checkpoint and 0.01 in the config"),
    Case("resume-config-corrupt", lambda c: resume(c, lambda run: (run / "config.yaml").write_text("train: {")),
         "config.yaml is not valid YAML"),
    # output that cannot be written
    Case("output-under-file", lambda c: ["train", *TINY, "-o", str(Path(c.file("somefile", "x")) / "run")],
         "somefile/run: Not a directory"),
    Case("output-holds-run", lambda c: ["train", *TINY, "-o", str(c.finished)], "already holds a run"),
    Case("output-holds-interrupted-run", lambda c: ["train", *TINY, "-o", str(c.interrupted())],
         "holds an interrupted run; continue it with --resume"),
    Case("output-read-only", lambda c: train(c), "out/run: Read-only file system", read_only=True),
    Case("eval-json-under-file", lambda c: ["eval", str(c.finished), "--json", str(Path(c.file("f", "x")) / "r.json")],
         "r.json: Not a directory"),
    Case("disk-full-first-state", lambda c: train(c), ".pt: No space left on device", enospc_at=2),
    Case("disk-full-first-weights", lambda c: train(c), "last.safetensors: No space left on device", enospc_at=3),
    Case("disk-full-later", lambda c: train(c, "--epochs", "2"), "No space left on device", enospc_at=6,
         after=_kept_resumable),
    Case("disk-full-eval-json", lambda c: ["eval", str(c.finished), "--json", str(c.tmp / "r.json")],
         "r.json: No space left on device", enospc_at=1),
    # demo
    Case("demo-seeds-zero", lambda c: ["demo", "--seeds", "0", "-o", str(c.out)], "--seeds must be >= 1"),
    Case("demo-output-under-file", lambda c: ["demo", "--quick", "--seeds", "1", "--no-progress",
                                              "-o", str(Path(c.file("somefile", "x")) / "demo")],
         "cannot write to output directory"),
    Case("demo-jobs-zero", lambda c: ["demo", "--jobs", "0", "-o", str(c.out)], "expected a positive integer, got '0'"),
    Case("zoo-threads-bad", lambda c: ["zoo", "--threads", "two", "-o", str(c.out)],
         "expected 'auto' or a positive integer, got 'two'"),
    Case("train-threads-zero", lambda c: ["train", *TINY, "--threads", "0", "-o", str(c.out)],
         "expected 'auto' or a positive integer, got '0'"),
]

CASES += [
    # YAML bounds, encodings and YAML 1.2 values (config files, config.yaml of a run, --set)
    Case("yaml-alias-bomb", lambda c: train(c, "--config", c.file("bomb.yaml", BOMB_YAML)),
         "aliases expand to more than 100000 values", subprocess=True),
    Case("yaml-alias-recursive", lambda c: train(c, "--config", c.file("c.yaml", "train: &a [*a]\n")),
         "or refer to themselves"),
    Case("yaml-deep-nesting", lambda c: train(c, "--config", c.file("c.yaml", "a: " + "[" * 20000 + "]" * 20000)),
         "is nested too deeply"),
    Case("yaml-not-utf8", lambda c: train(c, "--config", c.file("c.yaml", b"train:\n  lr: 0.1 # caf\xe9\n")),
         "c.yaml is not UTF-8 text (line 2"),
    Case("yaml-too-large", lambda c: train(c, "--config", c.file("c.yaml", "# " + "x" * (1 << 20) + "\n")),
         "is larger than 1 MiB"),
    Case("yaml-duplicate-key", lambda c: train(c, "--config", c.file("c.yaml", "train:\n  lr: 0.1\n  lr: 0.2\n")),
         "key 'lr' is given twice (first at line 2)"),
    Case("yaml-python-tag", lambda c: train(c, "--config", c.file(
        "c.yaml", f"train: !!python/object/apply:os.system ['touch {c.marker}']\n")),
         "could not determine a constructor for the tag"),
    Case("yaml-two-documents", lambda c: train(c, "--config", c.file("c.yaml", "train: {}\n---\nmodel: {}\n")),
         "is not valid YAML (line 2)"),
    Case("yaml-unhashable-key", lambda c: train(c, "--config", c.file("c.yaml", "? [a]\n: 1\n")), "found unhashable key"),
    Case("yaml-1.1-bool", lambda c: train(c, "--config", c.file("c.yaml", "train:\n  flip: yes\n")),
         "config key 'train.flip' must be bool, got 'yes'"),
    Case("yaml-1.1-sexagesimal", lambda c: train(c, "--config", c.file("c.yaml", "train:\n  seed: 1:30\n")),
         "config key 'train.seed' must be int, got '1:30'"),
    Case("set-malformed-value", lambda c: train(c, "--set", "train.lr=[1,"), "--set train.lr is not valid YAML"),
    Case("set-unclosed-quote", lambda c: train(c, "--set", "train.device='cpu"), "--set train.device is not valid YAML"),
    Case("set-alias-bomb", lambda c: train(c, "--set", "meta.x=" + BOMB_YAML.split("\n", 1)[1].replace("\n", ", ").join("{}")),
         "aliases expand to more than 100000 values"),
    Case("set-yaml-1.1-bool", lambda c: train(c, "--set", "train.flip=on"), "config key 'train.flip' must be bool, got 'on'"),
    Case("set-python-tag", lambda c: train(c, "--set", f"meta.x=!!python/object/apply:os.system ['touch {c.marker}']"),
         "could not determine a constructor"),
    Case("resume-config-not-utf8", lambda c: resume(c, lambda run: (run / "config.yaml").write_bytes(
        (run / "config.yaml").read_bytes() + b"# \xff\n")), "config.yaml is not UTF-8 text"),
    Case("resume-config-alias-bomb", lambda c: resume(c, lambda run: (run / "config.yaml").write_text(BOMB_YAML)),
         "aliases expand to more than 100000 values"),
    # CSV datasets: header, class list, rows, encodings
    Case("csv-not-utf8", lambda c: csv_prep(c, b"image,labels\nimg/a.jpg,cat\nimg/\xff.jpg,dog\n"),
         "train.csv:3: not UTF-8 text"),
    Case("csv-duplicate-column", lambda c: csv_prep(c, "image,cat,dog,cat\nimg/a.jpg,1,0,0\n"),
         "column 'cat' appears twice (columns 2 and 4)"),
    Case("csv-empty-column-name", lambda c: csv_prep(c, "image,cat,,dog\nimg/a.jpg,1,0,0\n"),
         "column 3 of the header has no name"),
    Case("csv-trailing-comma", lambda c: csv_prep(c, "image,cat,dog,\nimg/a.jpg,1,0,\n"), "(a trailing comma?)"),
    Case("csv-duplicate-image-column", lambda c: csv_prep(c, "image,labels,image\nimg/a.jpg,cat,x\n"),
         "column 'image' appears twice"),
    Case("csv-no-image-column", lambda c: csv_prep(c, "path,labels\nimg/a.jpg,cat\n"), "the header has no 'image' column"),
    Case("csv-empty-file", lambda c: csv_prep(c, ""), "train.csv is empty"),
    Case("csv-header-only", lambda c: csv_prep(c, "image,labels\n"), "no image rows (empty dataset)"),
    Case("csv-nul-byte", lambda c: csv_prep(c, "image,labels\nimg/a.jpg,c\x00at\n"), "train.csv:2: unknown class 'c\\x00at'"),
    Case("csv-reserved-class", lambda c: csv_prep(c, "image,labels\nimg/a.jpg,cat\n", "cat\nlabels\n"),
         "classes.txt:2: 'labels' cannot be a class name"),
    Case("csv-class-with-separator", lambda c: csv_prep(c, "image,labels\nimg/a.jpg,cat\n", "cat\ndog;owl\n"),
         "'dog;owl' cannot be a class name"),
    Case("csv-class-twice", lambda c: csv_prep(c, "image,labels\nimg/a.jpg,cat\n", "cat\ndog\ncat\n"),
         "classes.txt:3: class 'cat' is listed twice (first at line 1)"),
    Case("csv-classes-not-utf8", lambda c: csv_prep(c, "image,labels\nimg/a.jpg,cat\n", b"cat\n\xe9t\xe9\n"),
         "classes.txt:2: not UTF-8 text"),
    Case("csv-unknown-class", lambda c: csv_prep(c, "image,labels\nimg/a.jpg,owl\n"), "train.csv:2: unknown class 'owl'"),
    Case("csv-wide-unknown-column", lambda c: csv_prep(c, "image,cat,owl\nimg/a.jpg,1,0\n"),
         "column 'owl' is not a known class"),
    Case("csv-label-and-negative", lambda c: csv_prep(c, "image,labels,negatives\nimg/a.jpg,cat,cat\n"),
         "class 'cat' is both a label and a negative"),
    Case("csv-row-too-long", lambda c: csv_prep(c, "image,cat,dog\nimg/a.jpg,1,0,\n"), "train.csv:2: expected 3 columns, got 4"),
    Case("csv-wide-bad-value", lambda c: csv_prep(c, "image,cat,dog\nimg/a.jpg,1,yes\n"),
         "value 'yes' for class 'dog' is not one of -1, 0, 1"),
    Case("csv-empty-image", lambda c: csv_prep(c, "image,labels\n,cat\n"), "train.csv:2: empty image path"),
    Case("csv-duplicate-image", lambda c: csv_prep(c, "image,labels\nimg/a.jpg,cat\nimg/a.jpg,dog\n"),
         "train.csv:3: image 'img/a.jpg' is listed twice"),
    Case("csv-duplicate-after-normalising", lambda c: csv_prep(c, "image,labels\nimg/a.jpg,cat\nimg/./a.jpg,dog\n"),
         "train.csv:3: image 'img/./a.jpg' is listed twice"),
    Case("csv-duplicate-through-dotdot", lambda c: csv_prep(c, "image,labels\nimg/a.jpg,cat\nx/../img/a.jpg,dog\n"),
         "image 'x/../img/a.jpg' is listed twice"),
    Case("csv-test-csv-missing", lambda c: prep(c, "csv", csv_root(c), "--test-csv", str(c.tmp / "nope.csv")),
         "missing test CSV"),
    # paths that leave the data root
    Case("path-csv-dotdot", lambda c: csv_prep(c, "image,labels\n../secret.jpg,cat\n"),
         "train.csv:2: image path '../secret.jpg' resolves outside the data root"),
    Case("path-csv-absolute", lambda c: csv_prep(c, "image,labels\nimg/a.jpg,cat\n/etc/passwd,dog\n"),
         "train.csv:3: image path '/etc/passwd' resolves outside the data root"),
    Case("path-csv-deep-dotdot", lambda c: csv_prep(c, "image,labels\nimg/../../x/../../etc/hosts,cat\n"),
         "resolves outside the data root"),
    Case("path-csv-symlink-file", lambda c: outside_link(c), "train.csv:3: image path 'img/link.jpg' resolves outside"),
    Case("path-csv-symlink-folder", lambda c: outside_link(c, folder=True),
         "train.csv:3: image path 'link/x.jpg' resolves outside"),
    Case("path-csv-test-csv", lambda c: prep(c, "csv", csv_root(c), "--test-csv", str(_write(
        c.tmp / "t" / "test.csv", "image,labels\n../../etc/hosts,cat\n"))),
         "test.csv:2: image path '../../etc/hosts' resolves outside the data root"),
    Case("path-coco-file-name", lambda c: coco_prep(c, coco_json(images=[{"id": 1, "file_name": "../../../etc/hosts"},
                                                                       {"id": 2, "file_name": "b.jpg"}])),
         "images[0].file_name: image path 'train2014/../../../etc/hosts' resolves outside the data root"),
    Case("path-coco-symlink", lambda c: _linked(coco_prep(c, coco_json()), c.tmp / "coco" / "train2014" / "a.jpg",
                                                c.tmp / "elsewhere.jpg"),
         "images[0].file_name: image path 'train2014/a.jpg' resolves outside the data root"),
    Case("path-cub-images-txt", lambda c: cub_prep(c, images="1 a/1.jpg\n2 ../../../etc/hosts\n3 a/3.jpg\n"),
         "images.txt:2: image path 'images/../../../etc/hosts' resolves outside"),
    Case("path-voc-id", lambda c: voc_prep(c, lambda main: [
        _voc_line(main, "000005 ", "../../../x ", f"{n}_trainval.txt") for n in __import__(
            "pamc.data.adapters.voc", fromlist=["VOC_CLASSES"]).VOC_CLASSES]),
         "aeroplane_trainval.txt:1: image path 'JPEGImages/../../../x.jpg' resolves outside"),
    Case("path-nuswide-list", lambda c: nus_official(c, listing="a\\1.jpg\r\n..\\..\\..\\etc\\hosts\r\n"),
         "TrainImagelist.txt:2: image path 'Flickr/../../../etc/hosts' resolves outside"),
    Case("path-nuswide-npy", lambda c: nus_formatted(c, images=__import__("numpy").array(["Flickr/a.jpg", "/etc/hosts"])),
         "formatted_train_images.npy[1]: image path '/etc/hosts' resolves outside"),
    Case("path-openimages-id", lambda c: oi_prep(c, OI_HEADER + "img0,v,/m/00,1\n../../../../etc/hosts,v,/m/01,1\n"),
         "annotations-human.csv:3: image path 'images/train/../../../../etc/hosts.jpg' resolves outside"),
    # VOC
    Case("voc-not-utf8", lambda c: voc_prep(c, lambda main: _voc_line(main, "000007 -1", b"000007 -1 \xff")),
         "aeroplane_trainval.txt:2: not UTF-8 text"),
    Case("voc-bad-flag", lambda c: voc_prep(c, lambda main: _voc_line(main, "000007 -1", "000007 2")),
         "aeroplane_trainval.txt:2: expected '<image id> <1|0|-1>', got '000007 2'"),
    Case("voc-extra-field", lambda c: voc_prep(c, lambda main: _voc_line(main, "000007 -1", "000007 -1 x")),
         "expected '<image id> <1|0|-1>'"),
    Case("voc-duplicate-id", lambda c: voc_prep(c, lambda main: [
        _voc_line(main, "000009", "000005", f"{n}_trainval.txt") for n in __import__(
            "pamc.data.adapters.voc", fromlist=["VOC_CLASSES"]).VOC_CLASSES]),
         "aeroplane_trainval.txt:3: image 'JPEGImages/000005.jpg' is listed twice"),
    Case("voc-different-ids", lambda c: voc_prep(c, lambda main: _voc_line(main, "000009", "000011", "bird_test.txt")),
         "bird_test.txt lists different images than aeroplane_test.txt"),
    Case("voc-missing-split-file", lambda c: voc_prep(c, lambda main: (main / "sofa_test.txt").unlink()),
         "missing split file"),
    Case("voc-xml-malformed", lambda c: voc_prep(c, xml="<annotation><object>"), "000005.xml: malformed XML"),
    Case("voc-xml-billion-laughs", lambda c: voc_prep(c, xml=(
        '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">' + "".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
        + ']><annotation><object><name>&i;</name></object></annotation>')), "000005.xml: malformed XML"),
    Case("voc-xml-unknown-class", lambda c: voc_prep(c, xml=_voc_box("<xmin>1</xmin>").replace("cat", "unicorn")),
         "object with unknown class 'unicorn'"),
    Case("voc-xml-box-text", lambda c: voc_prep(c, xml=_voc_box(
        "<xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax>")), "bndbox of 'cat' is not four numbers"),
    Case("voc-xml-box-nan", lambda c: voc_prep(c, xml=_voc_box(
        "<xmin>nan</xmin><ymin>1</ymin><xmax>2</xmax><ymax>inf</ymax>")), "bndbox of 'cat' is not four finite numbers"),
    Case("voc-no-images", lambda c: voc_prep(c, lambda main: [p.write_text("") for p in main.glob("*_test.txt")]),
         "split 'test' lists no images"),
    # COCO JSON of the wrong shape, whatever the shape
    Case("coco-top-level-list", lambda c: coco_prep(c, "[1, 2]"), "the top level must be a JSON object, got a list"),
    Case("coco-top-level-string", lambda c: coco_prep(c, '"images"'), "the top level must be a JSON object, got a string"),
    Case("coco-top-level-number", lambda c: coco_prep(c, "3"), "the top level must be a JSON object, got a number"),
    Case("coco-top-level-null", lambda c: coco_prep(c, "null"), "the top level must be a JSON object, got null"),
    Case("coco-no-images", lambda c: coco_prep(c, {"annotations": [], "categories": []}), "missing the 'images' list"),
    Case("coco-images-object", lambda c: coco_prep(c, {**coco_json(), "images": {"1": "a.jpg"}}), "missing the 'images' list"),
    Case("coco-image-not-object", lambda c: coco_prep(c, coco_json(images=[1])), "images[0] must be an object, got a number"),
    Case("coco-image-no-id", lambda c: coco_prep(c, coco_json(images=[{"file_name": "a.jpg"}])), "images[0] has no 'id'"),
    Case("coco-image-id-string", lambda c: coco_prep(c, coco_json(images=[{"id": "x", "file_name": "a.jpg"}])),
         "images[0].id must be an integer id, got 'x'"),
    Case("coco-image-id-bool", lambda c: coco_prep(c, coco_json(images=[{"id": True, "file_name": "a.jpg"}])),
         "images[0].id must be an integer id, got True"),
    Case("coco-image-id-float", lambda c: coco_prep(c, coco_json(images=[{"id": 1.5, "file_name": "a.jpg"}])),
         "images[0].id must be an integer id, got 1.5"),
    Case("coco-file-name-number", lambda c: coco_prep(c, coco_json(images=[{"id": 1, "file_name": 7}])),
         "images[0].file_name must be a string, got 7"),
    Case("coco-width-string", lambda c: coco_prep(c, coco_json(images=[{"id": 1, "file_name": "a.jpg", "width": "wide"}])),
         "images[0].width must be a number, got 'wide'"),
    Case("coco-image-id-twice", lambda c: coco_prep(c, coco_json(images=[{"id": 1, "file_name": "a.jpg"},
                                                                       {"id": 1, "file_name": "b.jpg"}])),
         "images[1]: image id 1 is listed twice"),
    Case("coco-file-name-twice", lambda c: coco_prep(c, coco_json(images=[{"id": 1, "file_name": "a.jpg"},
                                                                        {"id": 2, "file_name": "./a.jpg"}])),
         "images[1].file_name: image 'train2014/./a.jpg' is listed twice"),
    Case("coco-annotations-null", lambda c: coco_prep(c, {**coco_json(), "annotations": None}),
         "missing the 'annotations' list"),
    Case("coco-annotation-string", lambda c: coco_prep(c, coco_json(annotations=["x"])),
         "annotations[0] must be an object, got a string"),
    Case("coco-annotation-no-image-id", lambda c: coco_prep(c, coco_json(annotations=[{"category_id": 1}])),
         "annotations[0] has no 'image_id'"),
    Case("coco-annotation-category-float", lambda c: coco_prep(c, coco_ann(category_id=1.0)),
         "annotations[0].category_id must be an integer id, got 1.0"),
    Case("coco-annotation-unknown-image", lambda c: coco_prep(c, coco_json(annotations=[{"image_id": 9, "category_id": 1}])),
         "annotations[0] refers to unknown image id 9"),
    Case("coco-annotation-unknown-category", lambda c: coco_prep(c, coco_ann(category_id=42)),
         "annotations[0] has unknown category id 42"),
    Case("coco-bbox-short", lambda c: coco_prep(c, coco_ann(bbox=[1, 2, 3])), "annotations[0].bbox must be four finite numbers"),
    Case("coco-bbox-object", lambda c: coco_prep(c, coco_ann(bbox={"x": 1})), "annotations[0].bbox must be four finite numbers"),
    Case("coco-bbox-nan", lambda c: coco_prep(c, '{"images": [{"id": 1, "file_name": "a.jpg"}], "categories": '
                                                 '[{"id": 1, "name": "cat"}], "annotations": [{"image_id": 1, '
                                                 '"category_id": 1, "bbox": [NaN, 0, 1, 1]}]}'),
         "annotations[0].bbox must be four finite numbers"),
    Case("coco-category-no-name", lambda c: coco_prep(c, coco_json(categories=[{"id": 1}])), "categories[0] has no 'name'"),
    Case("coco-category-name-list", lambda c: coco_prep(c, coco_json(categories=[{"id": 1, "name": ["cat"]}])),
         "categories[0].name must be a string"),
    Case("coco-category-id-twice", lambda c: coco_prep(c, coco_json(categories=[{"id": 1, "name": "a"}, {"id": 1, "name": "b"}])),
         "a category id is listed twice"),
    Case("coco-not-utf8", lambda c: coco_prep(c, b'{"images": [], "x": "\xff"}'), "instances_train2014.json:1: not UTF-8 text"),
    Case("coco-invalid-json", lambda c: coco_prep(c, '{"images": ['), "instances_train2014.json is not valid JSON"),
    Case("coco-deep-json", lambda c: coco_prep(c, "[" * 100000 + "]" * 100000), "is not valid JSON (nested too deeply)"),
    # CUB
    Case("cub-images-not-utf8", lambda c: cub_prep(c, images=b"1 a/1.jpg\n2 a/\xff.jpg\n3 a/3.jpg\n"), "images.txt:2: not UTF-8 text"),
    Case("cub-images-bad-line", lambda c: cub_prep(c, images="1 a/1.jpg\nx a/2.jpg\n3 a/3.jpg\n"),
         "images.txt:2: expected '<id> <value>', got 'x a/2.jpg'"),
    Case("cub-images-id-twice", lambda c: cub_prep(c, images="1 a/1.jpg\n1 a/2.jpg\n3 a/3.jpg\n"), "images.txt:2: id 1 is listed twice"),
    Case("cub-image-path-twice", lambda c: cub_prep(c, images="1 a/1.jpg\n2 a/./1.jpg\n3 a/3.jpg\n"),
         "images.txt:2: image 'images/a/./1.jpg' is listed twice"),
    Case("cub-split-value", lambda c: cub_prep(c, split="1 1\n2 2\n3 0\n"),
         "train_test_split.txt:2: split value '2' is not 1 (train) or 0 (test)"),
    Case("cub-split-word", lambda c: cub_prep(c, split="1 train\n2 1\n3 0\n"), "split value 'train' is not 1 (train) or 0 (test)"),
    Case("cub-split-ids", lambda c: cub_prep(c, split="1 1\n2 1\n4 0\n"), "and images.txt list different image ids"),
    Case("cub-labels-not-utf8", lambda c: cub_prep(c, labels=b"1 1 1 3 1.0\n1 2 \xff 3 1.0\n"), "image_attribute_labels.txt: not UTF-8 text"),
    Case("cub-labels-short-line", lambda c: cub_prep(c, labels="1 1\n"),
         "image_attribute_labels.txt:1: expected '<image id> <attribute id> <is_present> ...'"),
    Case("cub-labels-unknown-image", lambda c: cub_prep(c, labels="9 1 1 3 1.0\n"), "image_attribute_labels.txt:1: unknown image id 9"),
    Case("cub-labels-attribute-range", lambda c: cub_prep(c, labels="1 4 1 3 1.0\n"), "attribute id 4 outside 1..3"),
    Case("cub-labels-present", lambda c: cub_prep(c, labels="1 1 2 3 1.0\n"), "is_present '2' is not 0 or 1"),
    # OpenImages
    Case("oi-annotations-not-utf8", lambda c: oi_prep(c, (OI_HEADER + "img0,v,/m/00,1\n").encode() + b"\xff\xfe,v,/m/01,1\n"),
         "annotations-human.csv: not UTF-8 text"),
    Case("oi-descriptions-not-utf8", lambda c: oi_prep(c, desc=b"/m/00,caf\xe9\n"), "class-descriptions.csv:1: not UTF-8 text"),
    Case("oi-bad-header", lambda c: oi_prep(c, "ImageID,LabelName\nimg0,/m/00\n"), "expected the header ImageID,Source,LabelName,Confidence"),
    Case("oi-short-row", lambda c: oi_prep(c, OI_HEADER + "img0,v,/m/00\n"), "annotations-human.csv:2: expected 4 columns, got 3"),
    Case("oi-confidence", lambda c: oi_prep(c, OI_HEADER + "img0,v,/m/00,0.5\n"), "annotations-human.csv:2: confidence '0.5' is not 0 or 1"),
    Case("oi-empty", lambda c: oi_prep(c, OI_HEADER), "no annotation rows (empty dataset)"),
    Case("oi-classes-twice", lambda c: prep(c, "openimages-v3", _rewrite(oi_root(c), "classes-trainable.txt", "/m/00\n/m/00\n")),
         "a label id is listed twice"),
    Case("oi-fewer-classes-than-groups", lambda c: ["train", "--dataset", "openimages-v3", "--data-root",
                                                    str(oi_root(c, classes=3)), "--no-progress", "-o", str(c.out)],
         "openimages-v3: 3 classes; its evaluation reports 5 frequency groups of classes and needs at least 5"),
    # NUS-WIDE
    Case("nus-list-not-utf8", lambda c: nus_official(c, listing=b"a\\1.jpg\r\na\\\xff.jpg\r\n"), "TrainImagelist.txt:2: not UTF-8 text"),
    Case("nus-list-twice", lambda c: nus_official(c, listing="a\\1.jpg\r\na/1.jpg\r\n"), "TrainImagelist.txt:2: image 'Flickr/a/1.jpg' is listed twice"),
    Case("nus-labels-count", lambda c: nus_official(c, labels="1\n0\n1\n"), "has 3 lines, TrainImagelist.txt lists 2 images"),
    Case("nus-labels-value", lambda c: nus_official(c, labels="1\n2\n"), "Labels_sky_Train.txt: value '2' is not 0 or 1"),
    Case("nus-npy-pickled", lambda c: nus_formatted(c, images=__import__("numpy").array(["Flickr/a.jpg", None], dtype=object)),
         "cannot read"),
    Case("nus-npy-not-strings", lambda c: nus_formatted(c, images=__import__("numpy").arange(2)),
         "formatted_train_images.npy must be a 1-D array of strings, got int64"),
    Case("nus-npy-labels-shape", lambda c: nus_formatted(c, labels=__import__("numpy").ones(2)),
         "formatted_train_labels.npy has shape (2,), expected (2, C)"),
    Case("nus-npy-labels-values", lambda c: nus_formatted(c, labels=__import__("numpy").full((2, 3), 0.5)),
         "formatted_train_labels.npy holds values other than 0 and 1"),
    # a training set with no observed label
    Case("no-observed-csv", lambda c: csv_train(c, csv_images(c, _wide(10, "0"))),
         "csv: the training split has no observed label"),
    Case("no-observed-synthetic", lambda c: train(c, "--set", "data.num_pos=0"),
         "synthetic: the training split has no observed label"),
    # images: pixel budget from the header, before decoding
    Case("image-pixel-bomb-strict", lambda c: csv_train(c, csv_images(c, _wide(9) + ["img/bomb.jpg,1,0"],
                                                                        extra={"img/bomb.jpg": bomb_jpeg()}),
                                                        "--set", "data.strict=true"),
         "is over the pixel budget of 64000000 (data.max_image_pixels) (strict mode)", subprocess=True),
    Case("image-budget-strict-custom", lambda c: csv_train(c, csv_images(c, _wide(10)), "--set", "data.strict=true",
                                                           "--set", "data.max_image_pixels=500", size=16),
         "is over the pixel budget of 500 (data.max_image_pixels) (strict mode)"),
    Case("predict-pixel-bomb", lambda c: ["predict", str(c.finished), c.file("bomb.jpg", bomb_jpeg())],
         "bomb.jpg is 12000 x 12000 = 144000000 pixels, over the pixel budget of 64000000", subprocess=True),
    Case("cam-pixel-bomb", lambda c: ["cam", str(c.finished), c.file("bomb.jpg", bomb_jpeg()), "--out", str(c.out)],
         "over the pixel budget"),
    Case("predict-pillow-bomb", lambda c: ["predict", str(c.finished), c.file("huge.jpg", bomb_jpeg(30000, 30000))],
         "over the pixel budget"),
    Case("budget-too-small", lambda c: train(c, "--set", "data.max_image_pixels=10"), "data.max_image_pixels must be >= 256, got 10"),
    Case("image-size-over-budget", lambda c: train(c, "--image-size", "9000"),
         "data.image_size 9000 is over the pixel budget data.max_image_pixels (64000000)"),
    Case("synthetic-too-large", lambda c: train(c, "--set", "data.synthetic.num_train=100000000"),
         "data.synthetic needs more than 16 GiB of images"),
    # checkpoint metadata never chooses bounds; weights and training state checked
    Case("eval-metadata-image-size", lambda c: ["eval", meta_checkpoint(c, image_size=100000, max_image_pixels=10 ** 12)],
         "data.image_size 100000 is over the pixel budget data.max_image_pixels (64000000)"),
    Case("predict-metadata-image-size", lambda c: ["predict", meta_checkpoint(c, image_size=100000, max_image_pixels=10 ** 12),
                                                   png_image(c)],
         "data.image_size 100000 is over the pixel budget"),
    Case("eval-metadata-synthetic-size", lambda c: ["eval", meta_checkpoint(c, synthetic={"num_train": 10 ** 9})],
         "data.synthetic needs more than 16 GiB of images"),
    Case("eval-weights-float64", lambda c: ["eval", retyped_checkpoint(c, lambda t: _first_float(t, lambda v: v.double()))],
         "1 dtype mismatch (backbone.features.0.weight torch.float64 vs torch.float32)"),
    Case("eval-weights-int", lambda c: ["eval", retyped_checkpoint(c, lambda t: _first_float(t, lambda v: v.to(torch.int32)))],
         "torch.int32 vs torch.float32"),
    Case("eval-weights-nan", lambda c: ["eval", retyped_checkpoint(c, lambda t: _first_float(t, lambda v: v * float("nan")))],
         "holds non-finite values (NaN or inf) in 1 tensor (backbone.features.0.weight)"),
    Case("eval-weights-inf", lambda c: ["eval", retyped_checkpoint(c, lambda t: t.update(
        {k: v.clone().fill_(float("inf")) for k, v in list(t.items()) if k.endswith("bias")}))], "holds non-finite values"),
    Case("pretrained-nan", lambda c: train(c, "--pretrained", pretrained_file(c, lambda s: next(
        v for v in s.values() if v.is_floating_point()).fill_(float("nan")))), "holds non-finite values (NaN or inf)"),
    Case("pretrained-float16", lambda c: train(c, "--pretrained", pretrained_file(c, lambda s: s.update(
        {k: v.half() for k, v in s.items() if v.is_floating_point()}))), "dtype mismatches"),
    Case("resume-epoch-impossible", lambda c: resume(c, lambda run: _corrupt_state(run, edit=_edit_state_progress(epoch=99))),
         "holds an impossible position for a run of 1 epochs (epoch 99"),
    Case("resume-step-negative", lambda c: resume(c, lambda run: _corrupt_state(run, edit=_edit_state_progress(step=-3))),
         "holds an impossible position"),
    Case("resume-epoch-float", lambda c: resume(c, lambda run: _corrupt_state(run, edit=_edit_state_progress(epoch=1.5))),
         "holds an impossible position"),
    Case("resume-best-epoch-future", lambda c: resume(c, lambda run: _corrupt_state(run, edit=_edit_state_progress(best_epoch=7))),
         "best epoch 7"),
    Case("resume-position-disagrees", lambda c: resume(c, lambda run: _corrupt_state(
        run, edit=_edit_state_progress(epoch=1, step=3, global_step=3, best_epoch=0))),
         "is at epoch 1, step 3, but"),
    # outputs that cannot be written: one line, no partial file, a user's file left as it was
    Case("prepare-out-under-file", lambda c: ["prepare", "csv", "--data-root", str(csv_root(c)), "--no-cache",
                                              "--out", str(Path(c.file("somefile", "x")) / "prep")],
         "cannot write", ),
    Case("observe-out-under-file", lambda c: ["observe", "voc2007", "--data-root", str(voc_root(c)),
                                              "--out", str(Path(c.file("somefile", "x")) / "prep")],
         "somefile/prep: Not a directory"),
    Case("predict-csv-under-file", lambda c: ["predict", str(c.finished), png_image(c), "--csv",
                                              str(Path(c.file("f", "x")) / "p.csv")], "cannot write"),
    Case("predict-json-under-file", lambda c: ["predict", str(c.finished), png_image(c), "--json",
                                               str(Path(c.file("f", "x")) / "p.json")], "f/p.json: Not a directory"),
    Case("predict-csv-disk-full", lambda c: ["predict", str(c.finished), png_image(c), "--csv", user_file(c, "p.csv")],
         "p.csv: No space left on device", enospc_at=1),
    Case("predict-json-read-only", lambda c: ["predict", str(c.finished), png_image(c), "--json", user_file(c, "p.json")],
         "p.json: Read-only file system", read_only_fs=True),
    Case("table-csv-under-file", lambda c: ["table", str(c.finished), "--csv", str(Path(c.file("f", "x")) / "t.csv")],
         "f/t.csv: Not a directory"),
    Case("table-csv-disk-full", lambda c: ["table", str(c.finished), "--csv", user_file(c, "t.csv")],
         "t.csv: No space left on device", enospc_at=1),
    Case("table-markdown-disk-full", lambda c: ["table", str(c.finished), "--markdown", user_file(c, "t.md")],
         "t.md: No space left on device", enospc_at=1),
    Case("cam-out-under-file", lambda c: ["cam", str(c.finished), png_image(c), "--out", str(Path(c.file("f", "x")) / "cams")],
         "f/cams: Not a directory"),
    Case("cam-png-disk-full", lambda c: ["cam", str(c.finished), png_image(c), "--out", str(c.out)],
         "No space left on device", enospc_at=1, after=lambda c: _only_dirs(c.out)),
    Case("explain-gap-out-under-file", lambda c: ["explain-gap", str(c.finished), str(c.finished), "--limit", "4",
                                                  "--out", str(Path(c.file("f", "x")) / "gap")], "f/gap: Not a directory"),
    Case("explain-gap-disk-full", lambda c: ["explain-gap", str(c.finished), str(c.finished), "--limit", "4",
                                             "--out", str(c.out)], "gap.png: No space left on device", enospc_at=1,
         after=lambda c: _only_dirs(c.out)),
    Case("alpha-sweep-json-disk-full", lambda c: ["alpha-sweep", str(c.finished), "--alpha", "1,2", "--out",
                                                  str(c.tmp / "s.png"), "--json", user_file(c, "s.json")],
         "s.json: No space left on device", enospc_at=2, after=lambda c: (c.tmp / "s.png").unlink()),
    Case("eval-json-disk-full-keeps-old", lambda c: ["eval", str(c.finished), "--json", user_file(c, "r.json")],
         "r.json: No space left on device", enospc_at=1),
    Case("prepare-index-disk-full", lambda c: prep(c, "csv", csv_root(c)), "index-train.npz: No space left on device",
         enospc_at=1, after=lambda c: _only_dirs(c.out)),
]


def _only_dirs(folder: Path) -> None:
    """A failed command may leave the folders it created, but no file in them."""
    assert not [p for p in folder.rglob("*") if p.is_file()], list(folder.rglob("*"))


def _run(case: Case, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    if case.subprocess:
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.run([sys.executable, "-m", "pamc", *argv], capture_output=True, text=True,
                              env=env, timeout=300)
        return proc.returncode, proc.stderr
    if case.enospc_at is not None:
        real_fsync, calls = os.fsync, {"n": 0}

        def fsync(fd: int) -> None:  # the disk fills up during this write: half the bytes land
            calls["n"] += 1
            if calls["n"] == case.enospc_at:
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    if case.read_only:
        def write_text(self, *args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

        monkeypatch.setattr(Path, "write_text", write_text)
    if case.read_only_fs:
        def mkstemp(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    finally:
        monkeypatch.undo()
    return code, capsys.readouterr().err


def _files(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` and its bytes, except pamc's own dataset caches."""
    return {p: p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and ".pamc-cache" not in p.parts}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, finished: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    c = Ctx(tmp_path, finished)
    argv = case.build(c)
    before = sorted(p.name for p in finished.iterdir())
    user_files = _files(tmp_path)
    code, stderr = _run(case, argv, monkeypatch, capsys)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("pamc: error: "), stderr
    assert case.message in lines[0], stderr
    assert not c.marker.exists(), "a pickled payload was executed"
    assert sorted(p.name for p in finished.iterdir()) == before
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    if case.after is not None:
        case.after(c)
    else:
        assert not (tmp_path / "out").exists(), "a partial run directory was left behind"
    after = _files(tmp_path)
    changed = [p for p, data in user_files.items() if after.get(p) != data]
    assert not changed, f"files present before the command were changed or removed: {changed}"
    new = [p for p in after if p not in user_files and not (case.after is not None and c.out in p.parents)]
    assert not new, f"the failed command left files behind: {new}"
    if case.enospc_at is not None:
        for last in tmp_path.rglob(LAST_CHECKPOINT):  # whatever checkpoint remains is intact
            load_last(last.parent)


def test_the_pickle_payload_is_live(tmp_path):
    """The payload used above really runs when unpickled: its absence is meaningful."""
    c = Ctx(tmp_path, tmp_path)
    pickle.loads(c.evil_pickle(False))
    assert c.marker.exists()
    c.marker.unlink()
    torch.load(tmp_path / c.file("e.pth", c.evil_pickle(True)), weights_only=False)
    assert c.marker.exists()


def test_every_case_is_documented():
    doc = DOC.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"cases missing from {DOC.name}: {missing}"
    assert len(CASES) >= 150
