"""End-to-end tests of ``pamc cam``, ``predict``, ``explain-gap`` and ``alpha-sweep`` on tiny models."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from html_sources import image_sources

from pamc.cli.main import main
from pamc.data import DeviceTransform
from pamc.engine import load_trained
from pamc.explain.screenshot import find_chromium, screenshot

TINY = [
    "--epochs", "2", "--batch-size", "16", "--lr", "0.003",
    "--set", "data.synthetic.num_train=80", "--set", "data.synthetic.num_test=40",
    "--set", "data.synthetic.image_size=32", "--no-progress",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in ("full", "an"):
        assert main(["train", *TINY, "--method", method, "--output-dir", str(root / method)]) == 0
        out[method] = root / method
    return out


@pytest.fixture(scope="module")
def image_files(runs, tmp_path_factory) -> list[Path]:
    """Three test-split scenes saved as PNG files, one of them at twice the resolution."""
    folder = tmp_path_factory.mktemp("images")
    split = load_trained(runs["full"]).split("test")
    paths = []
    for i in range(3):
        img = Image.fromarray(split.images[i].transpose(1, 2, 0))
        if i == 2:
            img = img.resize((64, 64), Image.Resampling.NEAREST)
        paths.append(folder / f"scene {i}.png")
        img.save(paths[-1])
    return paths


def _index_sources(folder: Path) -> list[str]:
    return image_sources((folder / "index.html").read_text())


def test_cam_on_dataset_split_side_by_side(runs, tmp_path, capsys) -> None:
    out = tmp_path / "cams"
    assert main(["cam", str(runs["full"]), "--dataset-split", "test", "--limit", "4", "--top-k", "2",
                 "--side-by-side", "--out", str(out)]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"test_{i:05d}.png" for i in range(4)]
    assert sorted(_index_sources(out)) == pngs
    for p in pngs:
        with Image.open(out / p) as img:
            assert img.format == "PNG" and img.width > img.height > 100  # 2 rows x 3 columns
    assert "wrote 4 figures" in capsys.readouterr().out


def test_cam_on_files_with_named_classes(runs, image_files, tmp_path) -> None:
    out = tmp_path / "cams"
    assert main(["cam", str(runs["an"] / "best.safetensors"), *map(str, image_files),
                 "--classes", "disc,square", "--out", str(out)]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["000_scene 0.png", "001_scene 1.png", "002_scene 2.png"]
    assert sorted(s.replace("%20", " ") for s in _index_sources(out)) == pngs
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", (out / "index.html").read_text())
    assert len(captions) == 3
    assert all(re.search(r"disc: \d\.\d\d, square: \d\.\d\d$", c) for c in captions), captions


@pytest.mark.parametrize("extra, message", [
    ([], "give image files or --dataset-split"),
    (["--classes", "nope", "--dataset-split", "test"], "unknown class 'nope'"),
    (["--dataset-split", "test", "--alpha", "0.5"], "alpha"),
])
def test_cam_bad_input(runs, tmp_path, capsys, extra, message) -> None:
    assert main(["cam", str(runs["full"]), *extra, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pamc: error:") and message in err[-1]


def test_predict_formats_and_scores(runs, image_files, tmp_path, capsys) -> None:
    csv_path, json_path = tmp_path / "p.csv", tmp_path / "p.json"
    assert main(["predict", str(runs["full"]), *map(str, image_files), "--top-k", "2",
                 "--csv", str(csv_path), "--json", str(json_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["image", "class", "score"] and len(table) == 1 + 3 * 2
    data = json.loads(json_path.read_text())
    assert data["rule"] == {"top_k": 2}
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 6
    # independent path: the model's sigmoid output on the stored (unscaled) test images
    trained = load_trained(runs["full"])
    split = trained.split("test")
    with torch.inference_mode():
        x = DeviceTransform(torch.device("cpu"))(torch.from_numpy(split.images[:2]))
        expected = torch.sigmoid(trained.model(x)).numpy()
    for i, entry in enumerate(data["images"]):
        scores = np.array([entry["scores"][n] for n in trained.class_names])
        top = [trained.class_names[c] for c in np.argsort(-scores, kind="stable")[:2]]
        assert [p["class"] for p in entry["predictions"]] == top
        assert [r["class"] for r in rows if r["image"] == entry["image"]] == top
        for r in rows:
            if r["image"] == entry["image"]:
                assert float(r["score"]) == pytest.approx(entry["scores"][r["class"]], abs=1e-6)
        if i < 2:
            np.testing.assert_allclose(scores, expected[i], atol=1e-5)


def test_predict_threshold(runs, image_files, tmp_path, capsys) -> None:
    json_path = tmp_path / "p.json"
    assert main(["predict", str(runs["an"]), *map(str, image_files), "--threshold", "0.3",
                 "--json", str(json_path)]) == 0
    for entry in json.loads(json_path.read_text())["images"]:
        chosen = {p["class"] for p in entry["predictions"]}
        assert chosen == {n for n, s in entry["scores"].items() if s >= 0.3}
    assert main(["predict", str(runs["an"]), str(image_files[0]), "--threshold", "2"]) == 2


def test_explain_gap_and_alpha_sweep(runs, tmp_path, capsys) -> None:
    out = tmp_path / "gap"
    assert main(["explain-gap", str(runs["full"]), str(runs["an"]), "--limit", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "spatial similarity" in printed and "pointing game" in printed
    s = json.loads((out / "gap.json").read_text())
    split = load_trained(runs["full"]).split("test")
    assert s["images"] == 20 and s["pairs"] == int((split.full[:20] == 1).sum())
    assert -1 <= s["spatial"]["pearson"]["mean"] <= 1
    assert set(s["attribution"]) == {"map_mean", "map_max", "top_mean"}
    assert s["localization"]["full"]["pairs"] == int((split.boxes[:, 0] < 20).sum())
    with Image.open(out / "gap.png") as img:
        assert img.format == "PNG"

    plot, js = tmp_path / "sweep.png", tmp_path / "sweep.json"
    assert main(["alpha-sweep", str(runs["an"]), "--alpha", "1,5", "--out", str(plot), "--json", str(js)]) == 0
    rows = json.loads(js.read_text())["results"]
    assert [r["alpha"] for r in rows] == [1.0, 5.0]
    trained_map = json.loads((runs["an"] / "test_results.json").read_text())["test_map"]
    assert rows[0]["map"] == pytest.approx(trained_map, abs=1e-9)  # alpha 1 is the training alpha
    assert plot.is_file()


def test_explain_gap_rejects_mismatched_models(runs, tmp_path, capsys) -> None:
    other = tmp_path / "other"
    assert main(["train", *TINY, "--epochs", "1", "--set", "data.synthetic.num_classes=6", "--output-dir", str(other)]) == 0
    assert main(["explain-gap", str(runs["full"]), str(other), "--out", str(tmp_path / "g")]) == 2
    assert "different classes" in capsys.readouterr().err


def test_checkpoint_loads_without_its_pretrained_file(runs, tmp_path) -> None:
    """The checkpoint holds every weight, so a moved backbone file must not matter."""
    from pamc.config import replace
    from pamc.engine import save_checkpoint

    trained = load_trained(runs["full"])
    cfg = replace(trained.config, model__pretrained=str(tmp_path / "gone.safetensors"))
    save_checkpoint(tmp_path / "c.safetensors", trained.model, cfg, trained.class_names)
    again = load_trained(tmp_path / "c.safetensors")
    for a, b in zip(trained.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.skipif(find_chromium() is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_index_renders_in_headless_chromium(runs, tmp_path) -> None:
    out = tmp_path / "cams"
    assert main(["cam", str(runs["full"]), "--dataset-split", "test", "--limit", "2", "--out", str(out)]) == 0
    shot = screenshot(out / "index.html", tmp_path / "shot.png", size=(800, 600))
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape == (600, 800, 3)
    # the page background is near-white; the rendered figures bring saturated heatmap colours
    saturation = pixels.max(axis=2).astype(int) - pixels.min(axis=2)
    assert (saturation > 100).mean() > 0.01


def test_predict_streams_its_images_one_batch_at_a_time(runs, image_files, monkeypatch) -> None:
    """70 images (two batches of 64 at most): never more than one batch is decoded at once, and the
    scores are those of predicting each image on its own."""
    import pamc.explain.predict as predict_module

    paths = [image_files[i % 3] for i in range(70)]
    run, batches = predict_module.predict, []
    monkeypatch.setattr(predict_module, "predict", lambda model, loader, transform: (
        batches.append(len(loader.split)), run(model, loader, transform))[1])
    batched = predict_module.predict_files(runs["full"], paths, top_k=1)
    assert batches == [64, 6]
    alone = [predict_module.predict_files(runs["full"], [p], top_k=1)["images"][0]["scores"] for p in image_files]
    for i, entry in enumerate(batched["images"]):
        for name, score in entry["scores"].items():
            assert score == pytest.approx(alone[i % 3][name], abs=1e-6)
