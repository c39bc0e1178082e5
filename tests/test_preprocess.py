"""One preprocessing path: the image cache, evaluation, predict and cam decode, resize and
normalise an image the same way; the cache build is parallel, with JPEG draft decoding."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dataset_fixtures import FIXTURES, make_csv, truncate, write_jpeg
from pamc.cli.main import main
from pamc.config import DataConfig, RunConfig, replace
from pamc.data import DATASETS, DeviceTransform, Preprocess, build_dataset, dataset_info, preprocess_for
from pamc.data import image_cache
from pamc.data.catalog import parser
from pamc.data.image_cache import decode_image, open_or_build_cache
from pamc.errors import DataError


def _photo(path: Path, size: tuple[int, int], seed: int = 0) -> None:
    """A smooth image with fine detail (so that decoding at a reduced scale changes pixels)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 3) % 256], -1)
    pixels = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def _full_decode(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)


def test_draft_mode_applies_where_the_target_is_at_most_half_the_source(tmp_path) -> None:
    jpeg, png = tmp_path / "a.jpg", tmp_path / "a.png"
    _photo(jpeg, (640, 480))
    _photo(png, (640, 480))
    with Image.open(jpeg) as im:
        im.draft("RGB", (224, 224))
        assert im.size == (320, 240)  # DCT-domain scale 1/2: both sides stay >= 224
        drafted = np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR)).transpose(2, 0, 1)
    pixels, original = decode_image(jpeg, 224)
    assert original == (640, 480)  # the original size, not the draft's (boxes are scaled by it)
    assert np.array_equal(pixels, drafted)
    assert not np.array_equal(pixels, _full_decode(jpeg, 224))
    assert np.array_equal(decode_image(jpeg, 241)[0], _full_decode(jpeg, 241))  # 2 * 241 > 480: no draft
    assert np.array_equal(decode_image(png, 224)[0], _full_decode(png, 224))  # not a JPEG: no draft


def _files(root: Path) -> list[str]:
    names = []
    for i in range(18):
        name = f"img{i:02d}.{'png' if i % 5 == 0 else 'jpg'}"
        _photo(root / name, (120 + 8 * i, 90), seed=i)
        names.append(name)
    truncate(root / "img03.jpg")
    names.insert(7, "missing.jpg")
    return names


@pytest.mark.parametrize("size", [32, 60])
def test_cache_is_identical_whatever_the_number_of_processes(tmp_path, monkeypatch, size) -> None:
    names = _files(tmp_path / "img")
    monkeypatch.setattr(image_cache, "CHUNK", 4)  # 5 chunks, so the worker processes share them
    caches = [open_or_build_cache(tmp_path / "img", names, size, tmp_path / f"cache{w}", workers=w)
              for w in (1, 2, 3)]
    first = caches[0]
    assert first.ok.sum() == len(names) - 2 and not first.ok[names.index("missing.jpg")]
    for other in caches[1:]:
        assert other.path.read_bytes() == first.path.read_bytes()
        assert np.array_equal(other.ok, first.ok) and np.array_equal(other.sizes, first.sizes)
    for i in np.flatnonzero(first.ok):
        assert np.array_equal(first.array[i], decode_image(tmp_path / "img" / names[i], size)[0])
        assert tuple(first.sizes[i]) == Image.open(tmp_path / "img" / names[i]).size


def test_strict_build_with_processes_names_the_first_bad_image_and_keeps_nothing(tmp_path, monkeypatch) -> None:
    names = _files(tmp_path / "img")
    monkeypatch.setattr(image_cache, "CHUNK", 4)
    with pytest.raises(DataError, match=r"img03.jpg cannot be decoded .*strict mode"):
        open_or_build_cache(tmp_path / "img", names, 32, tmp_path / "cache", workers=2, strict=True)
    assert [p for p in (tmp_path / "cache").iterdir() if p.suffix != ".lock"] == []  # the build lock stays


@pytest.mark.parametrize("size", [48, 100])  # 48: a draft decode of the 200x150 JPEGs; 100: a full one
def test_an_image_gives_the_same_network_input_in_training_and_inference(tmp_path, size) -> None:
    make_csv(tmp_path / "data", n=12, size=(200, 150))
    cfg = RunConfig(data=DataConfig(dataset="csv", root=str(tmp_path / "data"), image_size=size,
                                    cache_dir=str(tmp_path / "cache")))
    bundle = build_dataset(cfg.data)
    paths = parser("csv")(cfg.data).pool.paths
    rows = [0, len(bundle.train) - 1]
    files = [tmp_path / "data" / paths[bundle.train.images.rows[r]] for r in rows]
    # training: the cached uint8 batch through fit's transform (channels_last, reused buffer)
    train_tf = DeviceTransform(torch.device("cpu"), IMAGE_MEAN, IMAGE_STD, channels_last=True, reuse_output=True)
    trained = train_tf(bundle.train.images[torch.tensor(rows)]).clone()
    # inference: the files through the run's preprocessing
    preprocess = preprocess_for(replace(cfg, data__mean=list(IMAGE_MEAN), data__std=list(IMAGE_STD)))
    assert preprocess == Preprocess(size, IMAGE_MEAN, IMAGE_STD)
    inferred = preprocess(files)
    assert torch.equal(inferred, trained)  # bit-identical: same uint8 pixels, same float arithmetic


IMAGE_MEAN, IMAGE_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["voc2007", "coco2014", "csv"])
def test_predict_and_cam_need_no_image_size_after_training(tmp_path, monkeypatch, dataset, capsys) -> None:
    info = dataset_info(dataset)  # a small catalog default size keeps the test fast on the CPU
    monkeypatch.setitem(DATASETS._items, dataset,
                        dataclasses.replace(info, metadata=dataclasses.replace(info.metadata, image_size=40)))
    FIXTURES[dataset](tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--dataset", dataset, "--data-root", str(tmp_path / "data"), "--epochs", "1",
                 "--batch-size", "8", "--no-progress", "--cache-dir", str(tmp_path / "cache"),
                 "--output-dir", str(run)]) == 0
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert recorded["image_size"] == 40 and len(recorded["mean"]) == len(recorded["std"]) == 3
    image = next(p for p in sorted((tmp_path / "data").rglob("*.jpg")))
    capsys.readouterr()
    assert main(["predict", str(run), str(image), "--top-k", "2", "--json", str(tmp_path / "p.json"),
                 "--device", "cpu"]) == 0
    predictions = json.loads((tmp_path / "p.json").read_text())["images"][0]
    assert len(predictions["predictions"]) == 2
    assert main(["cam", str(run), str(image), "--out", str(tmp_path / "cam"), "--device", "cpu"]) == 0
    assert len(list((tmp_path / "cam").glob("*.png"))) == 1
