"""Tests for pamc.explain: CAM geometry, overlays, the attribution-gap numbers, localisation."""

from __future__ import annotations


import numpy as np
import pytest
from matplotlib import colormaps

from html_sources import image_sources

from pamc.data import make_scenes
from pamc.explain import (
    attribution_gap,
    box_iou,
    cam_box,
    heat,
    localization,
    overlay_array,
    pearson,
    peak_pixel,
    score_title,
    select_classes,
    top_region,
    upsample_cam,
    write_index,
)
from pamc.explain.overlay import DEFAULT_CMAP, DEFAULT_WEIGHT
from pamc.explain.predict import select_labels

# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("i, j", [(0, 0), (2, 3), (5, 5), (5, 0)])
def test_upsampled_peak_lands_in_its_cell_block(i: int, j: int) -> None:
    cam = np.zeros((6, 6), dtype=np.float32)
    cam[i, j] = 1.0
    up = upsample_cam(cam, (48, 48))
    x, y = peak_pixel(up)
    assert 8 * j <= x < 8 * j + 8 and 8 * i <= y < 8 * i + 8
    # the heat-0.5 box of a one-cell peak is exactly the cell's 8x8 pixel block (derived by hand:
    # bilinear weights (1-|du|)(1-|dv|) >= 0.5 on every pixel of the block and on none outside)
    assert cam_box(up, 0.5) == (8 * j, 8 * i, 8 * j + 8, 8 * i + 8)


def test_upsample_non_square_image() -> None:
    cam = np.zeros((4, 4), dtype=np.float32)
    cam[1, 3] = 2.0  # row 1 of 4 -> y in [15, 30) of 60; column 3 of 4 -> x in [60, 80) of 80
    x, y = peak_pixel(upsample_cam(cam, (60, 80)))
    assert 60 <= x < 80 and 15 <= y < 30


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overlay_peak_colour_is_on_the_object(seed: int) -> None:
    """A CAM peaking on a synthetic object paints the hottest colour on that object's pixels only."""
    scene = make_scenes(1, num_classes=6, image_size=48, seed=seed)
    _, _, x0, y0, x1, y1 = scene.boxes[0]
    image = scene.images[0].transpose(1, 2, 0)
    cam = np.full((6, 6), -0.5, dtype=np.float32)
    cam[((y0 + y1) // 2) // 8, ((x0 + x1) // 2) // 8] = 3.0
    over = overlay_array(image, cam)
    hottest = (1 - DEFAULT_WEIGHT) * image + DEFAULT_WEIGHT * 255.0 * np.asarray(colormaps[DEFAULT_CMAP](1.0)[:3])
    ys, xs = np.nonzero(np.abs(over - hottest).max(axis=2) <= 2)
    assert len(xs) > 0
    assert ((x0 <= xs) & (xs < x1) & (y0 <= ys) & (ys < y1)).all()
    # negative evidence is drawn with the colour of zero heat
    coldest = (1 - DEFAULT_WEIGHT) * image + DEFAULT_WEIGHT * 255.0 * np.asarray(colormaps[DEFAULT_CMAP](0.0)[:3])
    assert np.abs(over[0, 0] - coldest[0, 0]).max() <= 1 or (x0 <= 0 < x1 and y0 <= 0 < y1)


def test_heat_scale() -> None:
    cam = np.array([[-1.0, 0.0], [1.0, 2.0]])
    np.testing.assert_allclose(heat(cam), [[0, 0], [0.5, 1.0]])
    np.testing.assert_allclose(heat(cam, scale=4.0), [[0, 0], [0.25, 0.5]])
    np.testing.assert_allclose(heat(-cam - 3), 0.0)


# --------------------------------------------------------------------------- gap analysis


def test_gap_on_scaled_copy_is_exact() -> None:
    """partial = 0.2 * full with all-positive CAMs: r = 1, ratio 0.2, BoostLU(5) restores exactly."""
    rng = np.random.default_rng(0)
    full = rng.uniform(0.1, 3.0, size=(50, 6, 6))
    s = attribution_gap(full, 0.2 * full, alpha=5.0, top_fraction=0.2).summary()
    assert s["pairs"] == 50
    assert s["spatial"]["pearson"]["mean"] == pytest.approx(1.0)
    assert s["spatial"]["top_region_iou"]["mean"] == pytest.approx(1.0)
    for stat in ("map_mean", "map_max", "top_mean"):
        row = s["attribution"][stat]
        assert row["ratio_partial"] == pytest.approx(0.2)
        assert row["ratio_partial_boostlu"] == pytest.approx(1.0)
        assert row["gap_closed"] == pytest.approx(1.0)
        assert row["partial_boostlu"]["median"] == pytest.approx(row["full"]["median"])


def test_gap_by_hand_with_negative_cells() -> None:
    full = np.array([[[2.0, -1.0], [4.0, 1.0]]])
    r = attribution_gap(full, 0.2 * full, alpha=5.0, top_fraction=0.5)
    s = r.summary()
    a = s["attribution"]
    # top region: the 2 highest cells (4 and 2)
    assert a["top_mean"]["full"]["mean"] == pytest.approx(3.0)
    assert a["top_mean"]["partial"]["mean"] == pytest.approx(0.6)
    assert a["top_mean"]["partial_boostlu"]["mean"] == pytest.approx(3.0)
    assert a["map_max"]["partial_boostlu"]["mean"] == pytest.approx(4.0)
    # BoostLU leaves the negative cell at -0.2: (2 - 0.2 + 4 + 1) / 4 = 1.7
    assert a["map_mean"]["full"]["mean"] == pytest.approx(1.5)
    assert a["map_mean"]["partial"]["mean"] == pytest.approx(0.3)
    assert a["map_mean"]["partial_boostlu"]["mean"] == pytest.approx(1.7)
    assert a["map_mean"]["gap_closed"] == pytest.approx(1 - (1.5 - 1.7) / (1.5 - 0.3))
    assert s["spatial"]["pearson"]["mean"] == pytest.approx(1.0)


def test_pearson_matches_numpy_and_handles_constant_maps() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 5, 7)), rng.normal(size=(20, 5, 7))
    b[:10] += 2 * a[:10]
    r = pearson(a, b)
    expected = [np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)]
    np.testing.assert_allclose(r, expected, rtol=1e-10)
    assert r[:10].mean() > 0.7 > abs(r[10:]).mean()
    const = pearson(np.ones((1, 3, 3)), a[:1, :3, :3])
    assert np.isnan(const[0])
    s = attribution_gap(np.ones((2, 3, 3)), rng.normal(size=(2, 3, 3))).summary()
    assert s["spatial"]["pearson"]["undefined"] == 2


def test_gap_detects_dissimilar_maps() -> None:
    """Maps peaking in different places: low correlation and disjoint top regions."""
    full = np.zeros((1, 6, 6))
    full[0, 0, 0] = 1
    part = np.zeros((1, 6, 6))
    part[0, 5, 5] = 1
    s = attribution_gap(full, part, top_fraction=1 / 36).summary()
    assert s["spatial"]["pearson"]["mean"] == pytest.approx(-1 / 35)
    assert s["spatial"]["top_region_iou"]["mean"] == 0.0


def test_top_region_size() -> None:
    cams = np.arange(36, dtype=float).reshape(1, 6, 6)
    mask = top_region(cams, 0.2)  # ceil(7.2) = 8 cells
    assert mask.sum() == 8 and mask[0, -8:].all()
    with pytest.raises(ValueError):
        top_region(cams, 0.0)


# --------------------------------------------------------------------------- localisation


def test_box_iou_by_hand() -> None:
    assert box_iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 5, 5), (5, 5, 9, 9)) == 0.0


def test_localization_pointing_and_iou() -> None:
    cams = np.zeros((2, 3, 6, 6), dtype=np.float32)
    cams[0, 1, 1, 2] = 1.0  # peak block x [16, 24), y [8, 16)
    cams[1, 2, 4, 4] = 1.0  # peak block x [32, 40), y [32, 40): misses its box below
    boxes = np.array([
        [0, 1, 16, 8, 24, 16],  # exactly the peak block: hit, IoU 1
        [1, 2, 0, 0, 10, 10],  # far from the peak: miss, IoU 0
        [5, 0, 0, 0, 4, 4],  # an image outside the CAM batch is ignored
    ])
    loc = localization(cams, boxes, (48, 48), ("a", "b", "c"))
    assert loc["pairs"] == 2
    assert loc["pointing_accuracy"] == 0.5
    assert loc["mean_iou"] == pytest.approx(0.5)
    assert loc["per_class"] == {"b": {"pairs": 1, "pointing": 1.0, "iou": 1.0},
                                "c": {"pairs": 1, "pointing": 0.0, "iou": 0.0}}


def test_localization_any_box_of_the_class_counts() -> None:
    cams = np.zeros((1, 2, 6, 6), dtype=np.float32)
    cams[0, 0, 5, 5] = 1.0
    boxes = np.array([[0, 0, 0, 0, 8, 8], [0, 0, 40, 40, 48, 48]])
    loc = localization(cams, boxes, (48, 48), ("a", "b"))
    assert loc["pairs"] == 1 and loc["pointing_accuracy"] == 1.0 and loc["mean_iou"] == 1.0


# --------------------------------------------------------------------------- selection, titles, html


def test_select_classes_and_labels() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7])
    names = ("a", "b", "c", "d")
    assert select_classes(scores, names, top_k=2) == [1, 3]
    assert select_classes(scores, names, names=["c", "a"]) == [2, 0]
    with pytest.raises(Exception, match="unknown class 'z'"):
        select_classes(scores, names, names=["z"])
    assert select_labels(scores, threshold=0.5) == [1, 3, 2]
    assert select_labels(scores, top_k=1) == [1]
    assert score_title("disc", 0.934) == "disc: 0.93"


def test_index_lists_every_png(tmp_path) -> None:
    names = [f"img {i}.png" for i in range(5)]
    path = write_index(tmp_path, [(n, f"caption <{i}>") for i, n in enumerate(names)])
    text = path.read_text()
    assert image_sources(text) == [n.replace(" ", "%20") for n in names]
    assert "caption &lt;3&gt;" in text


def test_screenshot_without_chromium_is_a_user_error(tmp_path, monkeypatch) -> None:
    from pamc.errors import PamcError
    from pamc.explain import screenshot as shot

    monkeypatch.setattr(shot.shutil, "which", lambda name: None)
    assert shot.find_chromium() is None
    page = tmp_path / "index.html"
    page.write_text("<html></html>")
    with pytest.raises(PamcError, match="no Chromium found"):
        shot.screenshot(page, tmp_path / "out.png")
