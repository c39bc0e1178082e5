import json
from pathlib import Path

import pytest

from pamc.demo import fine_tune_config, demo_config, gap_line, ll_delta_rel_for, summarize
from pamc.cli.main import main
from pamc.config import load_config
from pamc.engine import RunDir

ARMS = ["full", "an", "an + BoostLU (inference)", "ll-r", "ll-r + BoostLU"]


def test_summarize_gap_closed_by_hand():
    table = summarize({"full": [90.0, 92.0], "an": [70.0, 72.0], "x": [80.0, 82.0]}, "an", "full")
    rows = {r["arm"]: r for r in table["rows"]}
    assert rows["full"]["gap_closed"] == 1.0 and rows["an"]["gap_closed"] == 0.0
    assert rows["x"]["gap_closed"] == pytest.approx(0.5)
    assert rows["x"]["map_mean"] == 81.0 and rows["x"]["map_std"] == pytest.approx(2 ** 0.5)


def test_gap_line_by_hand():
    scores = {"full": [90.0, 92.0], "an": [70.0, 72.0], "an + BoostLU (inference)": [75.0, 77.0],
              "ll-r": [78.0, 80.0], "ll-r + BoostLU": [85.0, 87.0]}
    # gap 20 points; +5 closes 25%, +15 closes 75%
    assert gap_line(summarize(scores, "an", "full")) == (
        "AN-to-full gap: 20.00 mAP points; AN + BoostLU (inference) closes +25% of it, LL-R + BoostLU +75%")


def test_fine_tune_config_starts_from_the_weights():
    base = demo_config()
    tuned = fine_tune_config(base, "w.safetensors")
    assert tuned.model.pretrained == "w.safetensors" and tuned.train.lr == 1e-3 and tuned.train.epochs == 10
    assert fine_tune_config(base, None) == base  # from scratch: the old demo's schedule


def test_ll_schedule_reaches_false_negative_rate():
    # 20 epochs: the clean rate falls 19 times; 19 * delta_rel / 100 == fn rate
    assert 19 * ll_delta_rel_for(20, 0.19) / 100 == pytest.approx(0.19)


@pytest.mark.slow
def test_quick_demo_writes_tables(tmp_path, capsys):
    parallel, sequential = tmp_path / "jobs2", tmp_path / "jobs1"
    assert main(["demo", "--quick", "--no-progress", "--jobs", "2", "--output-dir", str(parallel)]) == 0
    printed = capsys.readouterr().out
    assert main(["demo", "--quick", "--no-progress", "--jobs", "1", "--output-dir", str(sequential)]) == 0
    # two arms at a time in worker processes: the same table and result files as one after another
    assert (parallel / "results.json").read_text() == (sequential / "results.json").read_text()
    for path in sorted((sequential / "runs").glob("*/test_results.json")):
        assert path.read_bytes() == (parallel / path.relative_to(sequential)).read_bytes(), path
    tmp_path = parallel
    table = json.loads((tmp_path / "results.json").read_text())
    arms = [r["arm"] for r in table["rows"]]
    assert arms == ARMS
    assert all(len(r["runs"]) == 2 for r in table["rows"])
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n") == 9 and "an + BoostLU (inference)" in printed
    assert "AN-to-full gap:" in md and "AN-to-full gap:" in printed
    # the inference-only arm re-evaluates the AN models: no extra training runs
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 8 and not any("inference" in r for r in runs)
    # every arm fine-tunes from the one cached backbone, pretrained on other scenes
    (weights,) = (tmp_path / "pretrained").glob("*/backbone.safetensors")
    starts = {RunDir(tmp_path / "runs" / r).read_config().model.pretrained for r in runs}
    assert starts == {str(weights)}
    pretrain_cfg = RunDir(weights.parent / "run").read_config()
    assert pretrain_cfg.data.synthetic.seed != RunDir(tmp_path / "runs" / runs[0]).read_config().data.synthetic.seed


@pytest.mark.slow
def test_demo_runs_on_a_real_dataset_reader(tmp_path, capsys):
    from dataset_fixtures import make_coco
    from test_pretrain import tiny_config

    from pamc.pretrain import disjoint_task, pretrained_backbone

    make_coco(tmp_path / "coco")
    weights = pretrained_backbone(disjoint_task(tiny_config()), tmp_path / "cache")  # a small stand-in start
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-progress", "-o", str(out), "--dataset", "coco2014",
                 "--pretrained", str(weights),
                 "--data-root", str(tmp_path / "coco"), "--set", "data.image_size=32",
                 "--set", "train.epochs=1", "--set", "train.batch_size=8"]) == 0
    table = json.loads((out / "results.json").read_text())
    assert table["dataset"] == "coco2014" and [r["arm"] for r in table["rows"]] == ARMS
    cfg = RunDir(out / "runs" / "an-seed0").read_config()
    assert cfg.data.dataset == "coco2014" and cfg.data.image_size == 32 and cfg.train.epochs == 1
    assert cfg.model.pretrained == str(weights) and table["pretrained"] == str(weights)


def test_demo_dataset_needs_a_root(capsys):
    assert main(["demo", "--dataset", "coco2014"]) == 2
    assert capsys.readouterr().err.strip() == "pamc: error: --dataset coco2014 needs --data-root"


COCO_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco2017-mini"


@pytest.mark.slow
@pytest.mark.skipif(not COCO_MINI.is_dir(), reason=f"needs the shared data set {COCO_MINI}")
def test_demo_on_coco2017_mini_tiny_budget(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-progress", "-o", str(out), "--dataset", "coco2017",
                 "--data-root", str(COCO_MINI), "--set", "data.image_size=48",
                 "--set", "train.epochs=1", "--seeds", "2", "--pretrain-cache", str(tmp_path / "cache")]) == 0
    table = json.loads((out / "results.json").read_text())
    rows = {r["arm"]: r for r in table["rows"]}
    assert set(rows) == set(ARMS) and all(0.0 < r["map_mean"] <= 100.0 for r in rows.values())
    assert 0.0 < table["false_negative_rate"] < 1.0


@pytest.mark.slow
@pytest.mark.skipif(not COCO_MINI.is_dir(), reason=f"needs the shared data set {COCO_MINI}")
def test_demo_fine_tunes_every_arm_from_imagenet_lite0_weights(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-progress", "-o", str(out), "--dataset", "coco2017",
                 "--data-root", str(COCO_MINI), "--backbone", "efficientnet_lite0", "--pretrained", "imagenet",
                 "--set", "data.image_size=64", "--set", "train.epochs=1", "--seeds", "1", "--jobs", "1"]) == 0
    table = json.loads((out / "results.json").read_text())
    assert table["pretrained"] == "imagenet" and table["backbone"] == "efficientnet_lite0"
    assert all(0.0 < r["map_mean"] <= 100.0 for r in table["rows"])
    for run in (out / "runs").iterdir():  # every trained arm started from the ImageNet weights
        cfg = load_config(run / "config.yaml")
        assert (cfg.model.backbone, cfg.model.pretrained) == ("efficientnet_lite0", "imagenet"), run
        assert cfg.data.mean == pytest.approx((127 / 255,) * 3) and cfg.data.std == pytest.approx((128 / 255,) * 3)
    assert not (out / "pretrained").exists()  # no synthetic pretraining when ImageNet weights are given
