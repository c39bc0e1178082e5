"""The COCO reader on the 2017 layout: a written fixture, and the real photos of coco2017-mini."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dataset_fixtures import make_coco
from pamc.config import DataConfig
from pamc.data import build_dataset
from pamc.data.adapters.coco import detect_year
from pamc.errors import DataError

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "data" / "coco2017-mini"
needs_mini = pytest.mark.skipif(not COCO_MINI.is_dir(), reason=f"{COCO_MINI} (shared data) is absent")


def cfg_for(name: str, root: Path, tmp_path: Path, size: int = 32) -> DataConfig:
    return DataConfig(dataset=name, root=str(root), cache_dir=str(tmp_path / "cache"), image_size=size)


@pytest.mark.parametrize("name", ["coco2017", "coco"])
def test_2017_layout_fixture(tmp_path, name):
    truth = make_coco(tmp_path / "coco", year="2017")
    bundle = build_dataset(cfg_for(name, tmp_path / "coco", tmp_path))
    assert bundle.name == "coco2017"
    assert bundle.class_names == ("cat1", "cat2", "cat3", "cat5", "cat7", "cat11")
    assert np.array_equal(bundle.test.full, truth["val2017"])
    assert len(bundle.train) + len(bundle.val) == 30


def test_layout_detection(tmp_path):
    make_coco(tmp_path / "c17", n_train=3, n_val=2, year="2017")
    make_coco(tmp_path / "c14", n_train=3, n_val=2, year="2014")
    assert detect_year(tmp_path / "c17") == "2017"
    assert detect_year(tmp_path / "c14") == "2014"
    assert build_dataset(cfg_for("coco", tmp_path / "c14", tmp_path)).name == "coco2014"
    with pytest.raises(DataError, match="instances_train2014.json"):
        build_dataset(cfg_for("coco2014", tmp_path / "c17", tmp_path))
    with pytest.raises(DataError, match="neither the 2014 nor the 2017 layout"):
        detect_year(tmp_path)
    make_coco(tmp_path / "c14", n_train=3, n_val=2, year="2017")
    with pytest.raises(DataError, match="both the 2014 and the 2017 layout"):
        build_dataset(cfg_for("coco", tmp_path / "c14", tmp_path))


def _labels_from_json(path: Path) -> tuple[list[str], dict[str, set[str]]]:
    """Independent reading of an instances file: category names in id order, file -> names."""
    data = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {i["id"]: i["file_name"] for i in data["images"]}
    labels: dict[str, set[str]] = {}
    for a in data["annotations"]:
        labels.setdefault(files[a["image_id"]], set()).add(names[a["category_id"]])
    return [names[k] for k in sorted(names)], labels


@needs_mini
def test_coco2017_mini(tmp_path):
    bundle = build_dataset(cfg_for("coco", COCO_MINI, tmp_path))
    names, train_labels = _labels_from_json(COCO_MINI / "annotations" / "instances_train2017.json")
    _, val_labels = _labels_from_json(COCO_MINI / "annotations" / "instances_val2017.json")
    assert bundle.name == "coco2017" and bundle.class_names == tuple(names) and len(names) == 80
    assert names[0] == "person" and names[-1] == "toothbrush"
    # 288 training photos, 2 without annotations; 158 val photos (shared/data/README.md)
    assert len(train_labels) == 286 and len(bundle.train) + len(bundle.val) == 286
    assert len(bundle.test) == len(val_labels) == 158
    test_full = bundle.test.full
    assert Counter((test_full == 1).sum(1).tolist()) == Counter(len(v) for v in val_labels.values())
    per_class = {n: sum(n in v for v in val_labels.values()) for n in names}
    assert (test_full == 1).sum(0).tolist() == [per_class[n] for n in names]
    assert min(per_class.values()) >= 1  # every category appears in val
    assert (test_full == 1).sum(1).mean() == pytest.approx(3.82, abs=0.005)
    pool_counts = np.concatenate([bundle.train.full, bundle.val.full]) == 1
    assert pool_counts.sum(1).mean() == pytest.approx(sum(map(len, train_labels.values())) / 286)
    # one observed positive per training image, and it is a true positive
    observed = bundle.train.observed.to_numpy()
    assert ((observed == 1).sum(1) == 1).all() and (bundle.train.full[observed == 1] == 1).all()
    assert bundle.test.images.shape[1:] == (3, 32, 32) and len(bundle.test.boxes) > 0
