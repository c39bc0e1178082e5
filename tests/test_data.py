import numpy as np
import pytest
import torch

from pamc.config import DataConfig, SyntheticConfig
from pamc.data import ArrayLoader, DeviceTransform, LabelStore, Split, build_dataset, make_scenes, observe, split_indices
from pamc.errors import DataError, RegistryError


def test_scenes_are_seeded_and_consistent():
    a = make_scenes(50, num_classes=8, image_size=32, seed=3)
    b = make_scenes(50, num_classes=8, image_size=32, seed=3)
    c = make_scenes(50, num_classes=8, image_size=32, seed=4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert a.images.dtype == np.uint8 and a.images.shape == (50, 3, 32, 32)
    assert set(np.unique(a.labels)) == {-1, 1}
    counts = (a.labels == 1).sum(1)
    assert counts.min() >= 1 and counts.max() <= 4
    # every positive label has exactly one box of that class in that image, and vice versa
    pairs = {(int(i), int(k)) for i, k in a.boxes[:, :2]}
    assert pairs == {tuple(p) for p in np.argwhere(a.labels == 1).tolist()}
    assert len(pairs) == len(a.boxes)
    x0, y0, x1, y1 = a.boxes[:, 2], a.boxes[:, 3], a.boxes[:, 4], a.boxes[:, 5]
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 32).all() and (y1 <= 32).all()
    assert ((x1 - x0) > 4).all()


def test_objects_are_drawn_inside_their_boxes():
    s = make_scenes(20, num_classes=6, image_size=48, noise=0.0, seed=1)
    for i, cls, x0, y0, x1, y1 in s.boxes:
        inside = s.images[i, :, y0:y1, x0:x1].astype(int)
        # a saturated object colour: some pixel has a channel spread the flat background lacks
        spread = inside.max(0) - inside.min(0)
        assert spread.max() > 150


def test_observe_keeps_requested_counts():
    rng = np.random.default_rng(0)
    full = np.where(rng.random((200, 12)) < 0.3, 1, -1).astype(np.int8)
    full[0] = -1  # an image without positives keeps none
    obs = observe(full, num_pos=1, num_neg=2, seed=1200)
    pos = (obs == 1).sum(1)
    neg = (obs == -1).sum(1)
    has_pos = (full == 1).any(1)
    assert (pos[has_pos] == 1).all() and pos[0] == 0
    assert (neg == 2).all()
    # observed entries agree with the truth
    assert ((obs == 0) | (obs == full)).all()
    assert np.array_equal(obs, observe(full, 1, 2, seed=1200))
    assert not np.array_equal(obs, observe(full, 1, 2, seed=1))


def test_observe_is_uniform_over_positives():
    full = np.array([[1, 1, -1, 1]] * 6000, dtype=np.int8)
    obs = observe(full, num_pos=1, seed=5)
    freq = (obs == 1).mean(0)
    assert freq[2] == 0
    assert np.allclose(freq[[0, 1, 3]], 1 / 3, atol=0.03)


def test_observe_rejects_bad_values():
    with pytest.raises(DataError, match="value 2"):
        observe(np.array([[1, 2]]))


def test_label_store_corrections():
    store = LabelStore(np.zeros((4, 3), dtype=np.int8))
    store.set_positive(torch.tensor([1, 3]), torch.tensor([2, 0]))
    assert store.to_numpy().tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]]
    assert store.get(torch.tensor([3])).tolist() == [[1, 0, 0]]


def test_split_is_seeded_and_disjoint():
    tr, va = split_indices(100, 0.2, 1200)
    assert len(va) == 20 and len(tr) == 80
    assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(range(100))
    tr2, va2 = split_indices(100, 0.2, 1200)
    assert np.array_equal(va, va2)


def test_synthetic_bundle_and_loader():
    bundle = build_dataset(DataConfig(synthetic=SyntheticConfig(num_train=60, num_test=20, image_size=32)))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (48, 12, 20)
    assert bundle.num_classes == 10
    loader = ArrayLoader(bundle.train, 16, shuffle=True, seed=0)
    seen = torch.cat([b.index for b in loader])
    assert sorted(seen.tolist()) == list(range(48))
    batch = next(iter(loader))
    assert batch.images.dtype == torch.uint8 and batch.observed.dtype == torch.int8
    assert torch.equal(batch.observed, bundle.train.observed.get(batch.index))
    # single positive labels: exactly one observed positive per image, nothing else observed
    obs = bundle.train.observed.to_numpy()
    assert ((obs == 1).sum(1) == 1).all() and (obs >= 0).all()


def test_device_transform_normalises_and_flips():
    images = torch.randint(0, 256, (4, 3, 5, 7), dtype=torch.uint8)
    t = DeviceTransform(torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    x = t(images)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(x, (images.float() / 255 - mean) / std, atol=1e-5)
    flipped = t(images, flip=True)
    for i in range(4):
        assert torch.allclose(flipped[i], x[i], atol=1e-6) or torch.allclose(flipped[i], x[i].flip(2), atol=1e-6)


def test_device_transform_flips_the_drawn_images_in_every_output_mode():
    """Same draws as an independent where()-based flip, for fresh, reused and NHWC outputs."""
    images = torch.randint(0, 256, (5, 3, 4, 6), dtype=torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for channels_last in (False, True):
        for reuse in (False, True):
            t = DeviceTransform(torch.device("cpu"), generator=torch.Generator().manual_seed(3),
                                channels_last=channels_last, reuse_output=reuse)
            draws = torch.Generator().manual_seed(3)
            for batch in (images, images[:2], images):  # a short last batch, then a full one again
                mask = torch.rand(batch.shape[0], generator=draws) < 0.5
                want = torch.where(mask.view(-1, 1, 1, 1), batch.flip(3), batch)
                want = (want.float() / 255 - mean) / std
                got = t(batch, flip=True)
                assert got.shape == batch.shape
                assert torch.allclose(got, want, atol=1e-5)
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                assert got.is_contiguous(memory_format=fmt)


def test_device_transform_reuses_its_output_buffer_only_when_asked():
    images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    fresh = DeviceTransform(torch.device("cpu"))
    a, b = fresh(images), fresh(images)
    assert a.data_ptr() != b.data_ptr()
    reused = DeviceTransform(torch.device("cpu"), reuse_output=True)
    a = reused(images)
    first = a.clone()
    b = reused(images[:3].flip(0))  # the next batch overwrites the first one's buffer
    assert a.data_ptr() == b.data_ptr()
    assert torch.equal(a[:3], b) and not torch.equal(a, first)
    with torch.inference_mode():  # evaluation first, then a training step into the same buffer
        reused = DeviceTransform(torch.device("cpu"), reuse_output=True)
        reused(images)
    x = reused(images, flip=True)
    assert not x.is_inference()


def test_unknown_dataset():
    with pytest.raises(RegistryError, match="unknown dataset 'nope'"):
        build_dataset(DataConfig(dataset="nope"))


def test_loader_drops_the_last_partial_batch_only_when_asked():
    images = np.zeros((10, 3, 16, 16), dtype=np.uint8)
    split = Split(images, None, LabelStore(np.zeros((10, 2), dtype=np.int8)))
    for drop_last, sizes in ((False, [4, 4, 2]), (True, [4, 4])):
        loader = ArrayLoader(split, 4, shuffle=True, seed=3, drop_last=drop_last)
        batches = list(loader)
        assert [len(b.index) for b in batches] == sizes and len(loader) == len(sizes)
        seen = torch.cat([b.index for b in batches])
        assert len(set(seen.tolist())) == sum(sizes)  # no repeats, the left-out ones differ per epoch
    kept = [set(torch.cat([b.index for b in ArrayLoader(split, 4, shuffle=True, seed=s, drop_last=True)]).tolist())
            for s in range(4)]
    assert len({frozenset(k) for k in kept}) > 1
