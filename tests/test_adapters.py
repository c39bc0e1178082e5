"""Each adapter on a fixture written in the dataset's real on-disk format."""

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_fixtures import (
    make_coco, make_csv, make_cub, make_nuswide_formatted, make_nuswide_official, make_openimages, make_voc,
    truncate, write_jpeg,
)
from pamc.config import DataConfig
from pamc.data import ArrayLoader, SparseLabelStore, build_dataset
from pamc.data.adapters import PARSERS
from pamc.data.adapters.voc import VOC_CLASSES, read_flags
from pamc.data.image_cache import decode_image
from pamc.data.labels import observe
from pamc.errors import DataError

REPO = Path(__file__).resolve().parents[1]
VOC2007_LABELS = REPO.parent / "shared" / "data" / "voc2007-labels"

# /work/shared/data/README.md: positive images per class (flag 1), trainval / test
README_COUNTS = {
    "aeroplane": (238, 204), "bicycle": (243, 239), "bird": (330, 282), "boat": (181, 172),
    "bottle": (244, 212), "bus": (186, 174), "car": (713, 721), "cat": (337, 322), "chair": (445, 417),
    "cow": (141, 127), "diningtable": (200, 190), "dog": (421, 418), "horse": (287, 274),
    "motorbike": (245, 222), "person": (2008, 2007), "pottedplant": (245, 224), "sheep": (96, 97),
    "sofa": (229, 223), "train": (261, 259), "tvmonitor": (256, 229),
}


def cfg_for(name: str, root: Path, tmp_path: Path, **kw) -> DataConfig:
    kw.setdefault("image_size", 32)
    return DataConfig(dataset=name, root=str(root), cache_dir=str(tmp_path / "cache"), **kw)


@pytest.mark.skipif(not VOC2007_LABELS.is_dir(), reason=f"real VOC2007 label files not found at {VOC2007_LABELS}")
def test_real_voc2007_label_files():
    for column, (split, count) in enumerate((("trainval", 5011), ("test", 4952))):
        ids, flags = read_flags(VOC2007_LABELS, split)
        assert len(ids) == count == len(set(ids))
        assert all(len(i) == 6 and i.isdigit() for i in ids)
        assert ids == sorted(ids)
        counts = dict(zip(VOC_CLASSES, (flags == 1).sum(0).tolist()))
        assert counts == {k: v[column] for k, v in README_COUNTS.items()}
    assert read_flags(VOC2007_LABELS, "trainval")[0][:3] == ["000005", "000007", "000009"]
    # the adapter maps "difficult" (0) to positive by default, and can treat it as negative
    cfg = DataConfig(dataset="voc2007", root=str(VOC2007_LABELS))
    parsed = PARSERS.get("voc2007")(cfg)
    flags = read_flags(VOC2007_LABELS, "trainval")[1]
    full = parsed.pool.dense(20)
    assert np.array_equal(full, np.where(flags == 0, 1, flags))
    assert parsed.pool.paths[0] == "JPEGImages/000005.jpg" and len(parsed.test) == 4952
    negative = PARSERS.get("voc2007")(DataConfig(dataset="voc2007", root=str(VOC2007_LABELS), voc_difficult="negative"))
    assert np.array_equal(negative.pool.dense(20), np.where(flags == 0, -1, flags))
    # single positive labels from the real matrix: one per image, always a true positive
    obs = observe(full, 1, 0, seed=1200)
    assert ((obs == 1).sum(1) == 1).all() and (full[obs == 1] == 1).all()


def test_voc_fixture_labels_images_boxes(tmp_path):
    truth = make_voc(tmp_path / "data", "2007")
    bundle = build_dataset(cfg_for("voc2007", tmp_path / "data", tmp_path))
    assert bundle.class_names == VOC_CLASSES and bundle.name == "voc2007"
    assert len(bundle.train) + len(bundle.val) == 30 and len(bundle.test) == 12
    ids, flags = truth["test"]
    assert np.array_equal(bundle.test.full, np.where(flags == 0, 1, flags))
    # cached pixels equal the reference decode path exactly
    base = tmp_path / "data" / "VOCdevkit" / "VOC2007"
    for row in (0, 5, 11):
        expected, _ = decode_image(base / "JPEGImages" / f"{ids[row]}.jpg", 32)
        assert np.array_equal(bundle.test.images[row].numpy(), expected)
    # on disk each image is Pillow's (H, W, RGB) array; batches come out channels_last
    with Image.open(base / "JPEGImages" / f"{ids[0]}.jpg") as im:
        pillow = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR)).ravel()
    stored = [np.fromfile(f, dtype=np.uint8).reshape(-1, pillow.size) for f in (tmp_path / "cache").glob("*.u8")]
    assert any((images == pillow).all(axis=1).any() for images in stored)
    batch = bundle.test.images[torch.tensor([11, 0, 5])]
    assert batch.shape == (3, 3, 32, 32) and batch.is_contiguous(memory_format=torch.channels_last)
    for j, row in enumerate((11, 0, 5)):
        assert torch.equal(batch[j], torch.from_numpy(np.ascontiguousarray(bundle.test.images[row].numpy())))
    # boxes: xml (xmin=1+k, ymin=2, xmax=20+k, ymax=30) on 50x40 images, scaled to 32x32
    row0 = bundle.test.boxes[bundle.test.boxes[:, 0] == 0]
    k = int(np.flatnonzero(flags[0] >= 0)[0])
    assert row0[0].tolist() == [0, k, round(k * 32 / 50), round(1 * 32 / 40), round((20 + k) * 32 / 50), 24]
    # observed labels: one true positive per training image
    obs = bundle.train.observed.to_numpy()
    assert ((obs == 1).sum(1) == 1).all() and (bundle.train.full[obs == 1] == 1).all()


def test_voc2012_uses_train_and_val_and_difficult_switch(tmp_path):
    truth = make_voc(tmp_path / "data", "2012", n_pool=20, n_test=10)
    bundle = build_dataset(cfg_for("voc2012", tmp_path / "data", tmp_path, voc_difficult="ignore"))
    ids, flags = truth["val"]
    assert np.array_equal(bundle.test.full, flags) and bundle.partial_test_labels
    assert len(bundle.train) + len(bundle.val) == 20


def test_cache_and_observed_labels_are_reused(tmp_path, monkeypatch):
    make_voc(tmp_path / "data", "2007", n_pool=20, n_test=8)
    cfg = cfg_for("voc2007", tmp_path / "data", tmp_path)
    first = build_dataset(cfg)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert sum(f.startswith("observed-1pos-0neg-seed1200") for f in files) == 1
    assert sum(f.endswith(".u8") for f in files) == 2

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr("pamc.data.image_cache.decode_image", no_decoding)
    second = build_dataset(cfg)
    assert torch.equal(second.train.images[torch.arange(len(second.train))], first.train.images[torch.arange(len(first.train))])
    assert np.array_equal(second.train.observed.to_numpy(), first.train.observed.to_numpy())
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == files
    # another image size is another cache
    monkeypatch.undo()
    build_dataset(cfg_for("voc2007", tmp_path / "data", tmp_path, image_size=24))
    assert sum(p.name.endswith(".u8") for p in (tmp_path / "cache").iterdir()) == 4


def test_missing_and_corrupt_images_are_counted_or_fatal(tmp_path, caplog):
    truth = make_voc(tmp_path / "data", "2007", n_pool=20, n_test=8)
    images = tmp_path / "data" / "VOCdevkit" / "VOC2007" / "JPEGImages"
    ids = truth["trainval"][0]
    truncate(images / f"{ids[3]}.jpg")
    (images / f"{ids[7]}.jpg").write_bytes(b"not a jpeg")
    (images / f"{ids[9]}.jpg").unlink()
    with caplog.at_level(logging.WARNING):
        bundle = build_dataset(cfg_for("voc2007", tmp_path / "data", tmp_path))
    assert len(bundle.train) + len(bundle.val) == 17
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 3 of 20 images: 1 missing" in warnings[0] and "2 corrupt or truncated" in warnings[0]
    with pytest.raises(DataError, match=rf"image .*{ids[3]}.jpg cannot be decoded.*strict"):
        build_dataset(cfg_for("voc2007", tmp_path / "data", tmp_path / "s", strict=True))
    assert not list((tmp_path / "s" / "cache").glob("*.u8*"))  # no partial cache is left behind


def test_voc_missing_files_are_named(tmp_path):
    with pytest.raises(DataError, match="data root .* does not exist"):
        build_dataset(cfg_for("voc2007", tmp_path / "nowhere", tmp_path))
    make_voc(tmp_path / "data", "2007", n_pool=5, n_test=3)
    split_file = tmp_path / "data" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "cow_test.txt"
    split_file.unlink()
    with pytest.raises(DataError, match="missing split file .*cow_test.txt"):
        build_dataset(cfg_for("voc2007", tmp_path / "data", tmp_path))
    with pytest.raises(DataError, match="needs a data root"):
        build_dataset(DataConfig(dataset="voc2007"))


def test_coco_fixture(tmp_path):
    truth = make_coco(tmp_path / "coco")
    bundle = build_dataset(cfg_for("coco2014", tmp_path / "coco", tmp_path))
    assert bundle.class_names == ("cat1", "cat2", "cat3", "cat5", "cat7", "cat11")  # category-id order
    assert np.array_equal(bundle.test.full, truth["val2014"])  # the image without annotations is left out
    assert len(bundle.train) + len(bundle.val) == 30
    # one box per instance: bbox [4, 6, 20, 10] on 64x48 images -> (2, 4, 12, 11) at 32x32
    first = bundle.test.boxes[bundle.test.boxes[:, 0] == 0]
    assert len(first) == (truth["val2014"][0] == 1).sum()  # image 0 has one instance per class
    assert first[0, 2:].tolist() == [2, 4, 12, 11]


def test_coco_bad_json(tmp_path):
    make_coco(tmp_path / "coco", n_train=4, n_val=3)
    (tmp_path / "coco" / "annotations" / "instances_val2014.json").write_text('{"images": [')
    with pytest.raises(DataError, match="instances_val2014.json is not valid JSON"):
        build_dataset(cfg_for("coco2014", tmp_path / "coco", tmp_path))


def test_nuswide_formatted(tmp_path, caplog):
    truth = make_nuswide_formatted(tmp_path / "nus")
    paths, full = truth["train"]
    (tmp_path / "nus" / paths[4]).unlink()  # a dead link
    (tmp_path / "nus" / paths[5]).unlink()
    with caplog.at_level(logging.WARNING):
        bundle = build_dataset(cfg_for("nuswide", tmp_path / "nus", tmp_path))
    assert bundle.num_classes == 81
    assert len(bundle.train) + len(bundle.val) == 28
    assert any("2 missing" in r.getMessage() for r in caplog.records)
    assert np.array_equal(bundle.test.full, truth["val"][1])


def test_nuswide_official_layout(tmp_path):
    concepts = ["airport", "animal", "beach", "bear", "birds"]
    truth = make_nuswide_official(tmp_path / "nus", concepts)
    (tmp_path / "nus" / "Concepts81.txt").write_text("\n".join(concepts) + "\n")
    bundle = build_dataset(cfg_for("nuswide", tmp_path / "nus", tmp_path))
    assert bundle.class_names == tuple(concepts)
    assert np.array_equal(bundle.test.full, truth["Test"][1])
    (tmp_path / "nus" / "Groundtruth" / "TrainTestLabels" / "Labels_bear_Test.txt").write_text("0\n1\n")
    with pytest.raises(DataError, match="Labels_bear_Test.txt has 2 lines, TestImagelist.txt lists 12 images"):
        PARSERS.get("nuswide")(cfg_for("nuswide", tmp_path / "nus", tmp_path))


def test_cub_attributes(tmp_path):
    truth = make_cub(tmp_path / "cub")
    bundle = build_dataset(cfg_for("cub", tmp_path / "cub", tmp_path))
    assert bundle.num_classes == 312 and bundle.class_names[0] == "has_attr::value_1"
    is_train = truth["is_train"]
    assert len(bundle.train) + len(bundle.val) == is_train.sum() and len(bundle.test) == (~is_train).sum()
    assert np.array_equal(bundle.test.full, truth["full"][~is_train])


def test_openimages_partial_labels_and_group_frequency(tmp_path):
    truth = make_openimages(tmp_path / "oi")
    bundle = build_dataset(cfg_for("openimages-v3", tmp_path / "oi", tmp_path, label_store="sparse"))
    assert bundle.partial_test_labels and bundle.num_classes == 12
    assert bundle.class_names[0] == "Thing, kind 0"
    # untrainable label ignored, 0 = unannotated; val/test ground truth stays in the sparse store
    assert isinstance(bundle.test.full, SparseLabelStore) and isinstance(bundle.val.full, SparseLabelStore)
    assert np.array_equal(bundle.test.full_rows(np.arange(len(bundle.test))), truth["test"][1])
    assert isinstance(bundle.train.observed, SparseLabelStore) and bundle.train.full is None
    # observed = the real partial labels, split 80/20; frequency counts the training positives
    pool = truth["train"][1]
    both = np.concatenate([bundle.train.observed.to_numpy(), bundle.val.full_rows(np.arange(len(bundle.val)))])
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, pool.tolist()))
    assert bundle.class_frequency.tolist() == (bundle.train.observed.to_numpy() == 1).sum(0).tolist()
    batch = next(iter(ArrayLoader(bundle.train, 8)))
    assert batch.images.shape == (8, 3, 32, 32) and batch.observed.shape == (8, 12)


def test_openimages_bad_confidence(tmp_path):
    make_openimages(tmp_path / "oi", n_train=5, n_test=3)
    path = tmp_path / "oi" / "test" / "annotations-human.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",2"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"annotations-human.csv:3: confidence '2' is not 0 or 1"):
        PARSERS.get("openimages-v3")(cfg_for("openimages-v3", tmp_path / "oi", tmp_path))


@pytest.mark.parametrize("form", ["list", "wide"])
def test_csv_forms(tmp_path, form):
    labels = make_csv(tmp_path / "d", n=30, form=form)
    test = make_csv(tmp_path / "d", n=10, form=form, name="test.csv", seed=1)
    bundle = build_dataset(cfg_for("csv", tmp_path / "d" / "train.csv", tmp_path, test_csv=str(tmp_path / "d" / "test.csv")))
    assert bundle.class_names == ("bird", "cat", "dog", "fish")  # sorted union of the names found
    reorder = [2, 0, 1, 3]  # make_csv writes (cat, dog, bird, fish)
    assert np.array_equal(bundle.test.full, test[:, reorder]) and bundle.partial_test_labels
    both = np.concatenate([bundle.train.observed.to_numpy(), bundle.val.observed.to_numpy()])
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, labels[:, reorder].tolist()))


def test_csv_classes_file_and_held_out_test(tmp_path):
    make_csv(tmp_path / "d", n=40)
    (tmp_path / "d" / "classes.txt").write_text("fish\ncat\ndog\nbird\nzebra\n")
    bundle = build_dataset(cfg_for("csv", tmp_path / "d", tmp_path))
    assert bundle.class_names == ("fish", "cat", "dog", "bird", "zebra")
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 40 and len(bundle.test) == 8


@pytest.mark.parametrize("content, message", [
    ("image,labels\na.jpg,cat;unicorn\n", r"train.csv:2: unknown class 'unicorn'"),
    ("image,cat,dog\na.jpg,1,2\n", r"train.csv:2: value '2' for class 'dog' is not one of -1, 0, 1"),
    ("image,labels\na.jpg,cat\nb.jpg,dog\na.jpg,dog\n", r"train.csv:4: image 'a.jpg' is listed twice \(first at .*train.csv:2\)"),
    ("image,labels\n", r"train.csv: no image rows \(empty dataset\)"),
    ("", r"train.csv is empty"),
    ("file,labels\na.jpg,cat\n", r"no 'image' column"),
    ("image,labels,negatives\na.jpg,cat,cat\n", r"'cat' is both a label and a negative"),
])
def test_csv_bad_input(tmp_path, content, message):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.csv").write_text(content)
    (tmp_path / "d" / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match=message):
        build_dataset(cfg_for("csv", tmp_path / "d", tmp_path))


def test_csv_all_images_missing_is_empty_dataset(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.csv").write_text("image,labels\na.jpg,cat\nb.jpg,dog\n")
    with pytest.raises(DataError, match="no usable images"):
        build_dataset(cfg_for("csv", tmp_path / "d", tmp_path))


def test_image_rows_reads_in_any_order():
    from pamc.data.image_cache import ImageRows

    base = np.arange(5 * 3 * 2 * 2, dtype=np.uint8).reshape(5, 3, 2, 2)
    view = ImageRows(base, np.array([4, 0, 2]))
    assert view.shape == (3, 3, 2, 2)
    assert np.array_equal(view[torch.tensor([2, 0, 1])].numpy(), base[[2, 4, 0]])
    assert np.array_equal(np.asarray(view), base[[4, 0, 2]])


def test_openimages_repeated_descriptions_stay_distinct(tmp_path):
    truth = make_openimages(tmp_path / "oi", n_train=5, n_test=3, c=5)
    mids = truth["mids"]
    (tmp_path / "oi" / "class-descriptions.csv").write_text(f"{mids[0]},Bat\n{mids[1]},Bat\n{mids[2]},Ball\n{mids[3]},Cup\n{mids[4]},Dog\n")
    parsed = PARSERS.get("openimages-v3")(cfg_for("openimages-v3", tmp_path / "oi", tmp_path))
    assert parsed.class_names == (f"Bat ({mids[0]})", f"Bat ({mids[1]})", "Ball", "Cup", "Dog")


def test_split_index_canonical_entries_and_subset():
    from pamc.data.adapters import SplitIndex

    index = SplitIndex(["a", "b", "c"], [2, 0, 2, 1], [1, 3, 1, 0], [1, -1, -1, 1],
                       np.array([[2, 1, 0, 0, 5, 5], [0, 3, 1, 1, 2, 2]]))
    assert index.dense(4).tolist() == [[0, 0, 0, -1], [1, 0, 0, 0], [0, -1, 0, 0]]  # the repeat keeps -1
    assert index.rows.tolist() == [0, 1, 2]  # sorted by (row, class)
    sub = index.subset(np.array([True, False, True]))
    assert sub.paths == ["a", "c"] and sub.dense(4).tolist() == [[0, 0, 0, -1], [0, -1, 0, 0]]
    assert sub.boxes[:, 0].tolist() == [1, 0]
    with pytest.raises(DataError, match="not one of -1, 0, 1"):
        SplitIndex(["a"], [0], [0], [3])


def test_device_transform_leaves_its_input_alone():
    from pamc.data import DeviceTransform

    t = DeviceTransform(torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    images = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    as_float = images.float()
    before_u8, before_f = images.clone(), as_float.clone()
    t(images, flip=True)
    t(as_float, flip=True)
    assert torch.equal(images, before_u8) and torch.equal(as_float, before_f)


def test_16_bit_png_is_rescaled_to_8_bits_not_clipped(tmp_path):
    from PIL import Image

    from pamc.data.image_cache import decode_image

    gradient = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(gradient).save(tmp_path / "g16.png")  # Pillow reads it back as mode I;16
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    pixels, size = decode_image(tmp_path / "g16.png", 64)  # same size: the resize is the identity
    expected = np.floor(gradient.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)  # round half up
    assert size == (64, 64)
    for channel in pixels:
        assert np.array_equal(channel, expected)
    assert (pixels == 255).mean() < 0.01  # clipping made 99.6% of this gradient 255


def test_float_tiff_is_rescaled_to_8_bits(tmp_path):
    from PIL import Image

    from pamc.data.image_cache import decode_image

    unit = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(unit, mode="F").save(tmp_path / "unit.tif")
    pixels, _ = decode_image(tmp_path / "unit.tif", 32)
    assert np.array_equal(pixels[0], np.rint(unit.astype(np.float64) * 255).astype(np.uint8))
    wide = (unit * 4000 - 1000).astype(np.float32)  # outside [0, 1]: min-max scaled
    Image.fromarray(wide, mode="F").save(tmp_path / "wide.tif")
    pixels, _ = decode_image(tmp_path / "wide.tif", 32)
    lo, hi = float(wide.min()), float(wide.max())
    assert np.array_equal(pixels[1], np.rint((wide.astype(np.float64) - lo) * (255 / (hi - lo))).astype(np.uint8))


def test_8_bit_images_decode_as_before(tmp_path):
    from PIL import Image

    from pamc.data.image_cache import decode_image

    write_jpeg(tmp_path / "a.jpg", 3, (40, 30))
    pixels, _ = decode_image(tmp_path / "a.jpg", 20)
    with Image.open(tmp_path / "a.jpg") as im:
        reference = np.asarray(im.convert("RGB").resize((20, 20), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(pixels, reference)


def test_images_over_the_pixel_budget_are_skipped_with_a_counted_warning(tmp_path, caplog):
    from pamc.data.image_cache import open_or_build_cache

    for i in range(3):
        write_jpeg(tmp_path / f"{i}.jpg", i, (20, 20))
    write_jpeg(tmp_path / "big.jpg", 9, (40, 40))
    write_jpeg(tmp_path / "big2.jpg", 8, (30, 30))
    paths = ["0.jpg", "big.jpg", "1.jpg", "big2.jpg", "2.jpg"]
    with caplog.at_level("WARNING"):
        cached = open_or_build_cache(tmp_path, paths, 16, tmp_path / "cache", max_pixels=400)
    assert cached.ok.tolist() == [True, False, True, False, True]
    assert "skipped 2 of 5 images: 2 over the pixel budget of 400 (first: big.jpg)" in caplog.text
    with pytest.raises(DataError, match=r"big\.jpg is over the pixel budget of 400 \(data.max_image_pixels\) \(strict mode\)"):
        open_or_build_cache(tmp_path, paths, 16, tmp_path / "cache2", max_pixels=400, strict=True)
    assert not [p for p in (tmp_path / "cache2").iterdir() if p.suffix != ".lock"]


def test_check_image_paths_normalises_and_keeps_paths_inside_the_root(tmp_path):
    from pamc.data.adapters.common import check_image_paths

    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    (root / "inner.jpg").write_bytes(b"x")
    (root / "img" / "alias.jpg").symlink_to(root / "inner.jpg")  # a symlink that stays inside is fine
    where = lambda i: f"list:{i + 1}"  # noqa: E731
    assert check_image_paths(root, ["img/./a.jpg", "img/../b.jpg", "img/alias.jpg"], where) == [
        "img/a.jpg", "b.jpg", "img/alias.jpg"]
    with pytest.raises(DataError, match=r"list:2: image path '\.\./x\.jpg' resolves outside the data root"):
        check_image_paths(root, ["a.jpg", "../x.jpg"], where)
    outside = ["../x.jpg", str(tmp_path / "y.jpg")]
    assert check_image_paths(root, outside, where, allow_outside=True) == outside
    with pytest.raises(DataError, match=r"list:2: image 'a\.jpg' is listed twice \(first at list:1\)"):
        check_image_paths(root, ["img/../a.jpg", "a.jpg"], where, allow_outside=True)


def test_allow_outside_root_reads_images_outside_the_csv_folder(tmp_path):
    make_csv(tmp_path / "shared", n=12)
    d = tmp_path / "mine"
    d.mkdir()
    rows = [line.split(",", 1) for line in (tmp_path / "shared" / "train.csv").read_text().splitlines()[1:]]
    (d / "train.csv").write_text("image,labels,negatives\n" + "".join(f"../shared/{img},{rest}\n" for img, rest in rows))
    cfg = DataConfig(dataset="csv", root=str(d), image_size=16)
    with pytest.raises(DataError, match="resolves outside the data root"):
        build_dataset(cfg)
    bundle = build_dataset(dataclasses.replace(cfg, allow_outside_root=True))
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 12
