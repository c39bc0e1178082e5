"""Paper configs parse and agree with the defaults table; `pamc table` aggregates runs; the zoo runs."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from pamc.cli.main import main
from pamc.config import load_config, replace
from pamc.losses import LOSSES, create_loss
from pamc.data.catalog import dataset_params
from pamc.table import build_table, format_csv, format_markdown, method_label
from pamc.zoo import ZOO_METHODS, parse_methods, run_zoo, zoo_arms

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PAPER_CONFIGS = sorted((CONFIGS / "paper").rglob("*.yaml"))


def _make_configs_module():
    spec = importlib.util.spec_from_file_location("make_configs", CONFIGS / "make_configs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_one_config_per_table_row() -> None:
    assert len(PAPER_CONFIGS) == 4 * 18 + 8
    datasets = {p.parent.name for p in PAPER_CONFIGS}
    assert datasets == {"voc2012", "coco2014", "nuswide", "cub", "openimages-v3"}


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_paper_config_parses_and_builds_its_loss(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.method.name in LOSSES
    assert "paper_map" in cfg.meta and "paper" in cfg.meta
    assert cfg.data.protocol == "authors"  # every paper config follows the authors' data protocol
    assert cfg.meta["deviations"] and cfg.meta["settings_source"]  # what still differs, and why
    create_loss(cfg.method.name, **dict(cfg.method.params))  # every parameter is accepted
    if cfg.data.dataset != "openimages-v3":
        # the typed defaults table's per-dataset values, written out explicitly
        assert dataset_params(cfg.method.name, cfg.data.dataset).items() <= dict(cfg.method.params).items()
    alphas = (cfg.model.train_alpha, cfg.model.resolved_eval_alpha)
    if path.stem == "an-boostlu":  # the paper's AN + BoostLU: BoostLU at inference only (Table 2)
        assert alphas == (1.0, 5.0) and cfg.meta["evaluates"].endswith("/an")
    else:
        assert alphas == ((5.0, 5.0) if path.stem.endswith("-boostlu") else (1.0, 1.0))


def test_paper_configs_follow_each_methods_authors() -> None:
    def train(dataset: str, row: str):
        return load_config(CONFIGS / "paper" / dataset / f"{row}.yaml").train

    for dataset in ("voc2012", "coco2014", "nuswide", "cub"):
        for row in ("full", "an", "ll-r", "ll-ct-boostlu", "ll-cp"):  # BoostLU / LL code
            t = train(dataset, row)
            assert (t.batch_size, t.lr, t.head_lr_mult, t.epochs, t.drop_last, t.select_on) == (
                16, 1e-5, 10.0, 10, False, "full")
        for row in ("an-ls", "role"):  # Cole et al.: whole classifier at one lr, drop the last batch
            t = train(dataset, row)
            assert (t.head_lr_mult, t.drop_last) == (1.0, True)
        assert train(dataset, "role").loss_lr_mult == 10.0
        em = train(dataset, "em-apl")  # Zhou et al.
        assert em.batch_size == (16 if dataset in ("coco2014", "nuswide") else 8)
        assert (em.lr, em.head_lr_mult) == ((1e-4 if dataset == "cub" else 1e-5), 1.0)
        assert train(dataset, "gr-loss").epochs == 8
    delta = {row: load_config(CONFIGS / "paper" / "voc2012" / f"{row}.yaml").method.params["delta_rel"]
             for row in ("ll-r", "ll-ct", "ll-cp")}
    assert delta == {"ll-r": 0.5, "ll-ct": 0.2, "ll-cp": 0.1}


def test_committed_configs_match_the_generator() -> None:
    module = _make_configs_module()
    generated = module.all_configs()
    assert {str(p.relative_to(CONFIGS)) for p in PAPER_CONFIGS} == set(generated)
    for rel, cfg in generated.items():
        assert (CONFIGS / rel).read_text() == module.render(cfg), rel


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_paper_number_fields_are_consistent(path: Path) -> None:
    meta = load_config(path).meta
    status, value, source = meta["paper_map_status"], meta["paper_map"], meta["paper_map_source"]
    assert status in {"verified", "not in the paper"}
    if status == "verified":
        assert isinstance(value, float) and 0.0 <= value <= 100.0
        assert isinstance(source, str) and "paper-numbers.md" in source  # every recorded number names its source
    else:
        assert value is None and source is None and meta["tables"] == []
    if path.parent.name == "openimages-v3":
        groups = meta["paper_group_map"]
        assert (groups is None) == (value is None) and (groups is None or len(groups) == 5)
    else:
        assert "paper_group_map" not in meta
    assert ("paper_ablation_map" in meta) == (path.parent.name in ("voc2012", "coco2014"))


# every cell of ../shared/paper-numbers.md, as (table, dataset, row) -> value, checked one by one
PAPER_CELLS = {
    ("Table 1", "voc2012", "full"): 89.42, ("Table 1", "cub", "full"): 30.90,
    ("Table 1", "coco2014", "an"): 64.92, ("Table 1", "nuswide", "role"): 41.63,
    ("Table 1", "cub", "em-apl"): 21.84, ("Table 1", "voc2012", "ll-r-boostlu"): 89.29,
    ("Table 1", "nuswide", "ll-cp-boostlu"): 48.61, ("Table 1", "coco2014", "asl"): 68.78,
    ("Table 2", "voc2012", "an"): 86.10, ("Table 2", "coco2014", "an"): 64.58,
    ("Table 2", "voc2012", "an-boostlu"): 87.31, ("Table 2", "coco2014", "an-boostlu"): 66.27,
    ("Table 2", "voc2012", "ll-r-boostlu"): 89.27, ("Table 2", "coco2014", "ll-r-boostlu"): 72.82,
    ("Table 3", "openimages-v3", "ll-r"): 82.53, ("Table 3", "openimages-v3", "ll-cp-boostlu"): 84.04,
    ("Table 3", "openimages-v3", "P-ASL [2]"): 83.03,
}


def test_paper_numbers_hold_every_cell_and_are_checked() -> None:
    module = _make_configs_module()
    numbers = module.PAPER_NUMBERS
    module.check_paper_numbers(numbers)
    # 14 rows x 4 datasets, 3 rows x 2 datasets, 10 rows of Table 3 (each with 5 groups)
    assert len(numbers) == 14 * 4 + 3 * 2 + 10
    for key, value in PAPER_CELLS.items():
        assert numbers[key].value == value, key
    assert numbers[("Table 3", "openimages-v3", "ll-ct-boostlu")].group_map == (79.43, 80.75, 83.41, 85.70, 90.41)
    assert numbers[("Table 3", "openimages-v3", "CNN-RNN [39]")].status == "not-implemented"
    assert all(n.status == "verified" for k, n in numbers.items() if k[2] not in module.OPENIMAGES_OTHER_ROWS)
    for (table, dataset, row), num in numbers.items():
        if num.status == "not-implemented":
            continue
        meta = load_config(CONFIGS / "paper" / dataset / f"{row}.yaml").meta
        assert table in meta["tables"]
        if table == "Table 2":
            assert meta["paper_ablation_map"] == num.value
        if table != "Table 2" or meta["tables"] == ["Table 2"]:
            assert (meta["paper_map"], meta["paper_map_source"], meta["paper_map_status"]) == (
                num.value, num.source, num.status)
        if table == "Table 3":
            assert meta["paper_group_map"] == list(num.group_map)
    number = module.PaperNumber
    bad = [
        ({("Table 1", "coco2014", "ll-r"): number(70.0, " ", "verified")}, "needs its source"),
        ({("Table 1", "coco2014", "ll-r"): number(70.0, "s", "remembered")}, "status"),
        ({("Table 1", "coco2014", "wan"): number(70.0, "s", "verified")}, "not a cell"),
        ({("Table 2", "cub", "an"): number(70.0, "s", "verified")}, "not a cell"),
        ({("Table 1", "coco2014", "ll-r"): number(0.7, "s", "verified", (1, 2, 3, 4, 5))}, "openimages-v3 only"),
        ({("Table 3", "openimages-v3", "an"): number(70.0, "s", "verified", (1, 2))}, "5 group mAPs"),
        ({("Table 1", "voc2012", "an"): number(170.0, "s", "verified")}, "percentages"),
        ({("Table 1", "voc2012", "an"): number(70.0, "s", "not-implemented")}, "implements"),
    ]
    for entries, message in bad:
        with pytest.raises(ValueError, match=message):
            module.check_paper_numbers(entries)


def test_generator_writes_a_recorded_number_into_its_row(monkeypatch) -> None:
    module = _make_configs_module()
    monkeypatch.setattr(module, "PAPER_NUMBERS", {
        ("Table 3", "openimages-v3", "ll-ct-boostlu"): module.PaperNumber(80.5, "source A", "verified",
                                                                           (70, 75, 80, 85, 90)),
        ("Table 1", "cub", "ll-r"): module.PaperNumber(19.5, "source B", "from-method-paper")})
    configs = module.all_configs()
    oi = configs["paper/openimages-v3/ll-ct-boostlu.yaml"]["meta"]
    assert (oi["paper_map"], oi["paper_map_status"], oi["paper_map_source"], oi["paper_group_map"]) == (
        80.5, "verified", "source A", [70, 75, 80, 85, 90])
    cub = configs["paper/cub/ll-r.yaml"]["meta"]
    assert (cub["paper_map"], cub["paper_map_status"], cub["paper_map_source"]) == (
        19.5, "from-method-paper", "source B")
    assert configs["paper/cub/ll-r-boostlu.yaml"]["meta"]["paper_map_status"] == "not in the paper"
    assert configs["paper/cub/asl.yaml"]["meta"]["paper_map_status"] == "not in the paper"


def _fake_run(root: Path, name: str, method: str, seed: int, test_map: float, alpha: float = 1.0,
              paper: float | None = None, dataset: str = "synthetic", group_map: list[float] | None = None,
              paper_groups: list[float] | None = None, eval_alpha: float | None = None,
              ablation: float | None = None) -> Path:
    meta = {"paper_map": paper}
    if paper_groups is not None:
        meta["paper_group_map"] = paper_groups
    if ablation is not None:
        meta["paper_ablation_map"] = ablation
    cfg = load_config(None, {"method.name": method, "train.seed": seed, "model.train_alpha": alpha,
                             "model.eval_alpha": eval_alpha, "data.dataset": dataset, "meta": meta})
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    from pamc.engine import RunDir, RunResults

    RunDir(run).write_results(RunResults(dataset, method, alpha, cfg.model.resolved_eval_alpha, 1, test_map, test_map,
                                         test_group_map=group_map))
    return run


def test_table_groups_seeds_and_shows_the_paper_number(tmp_path: Path) -> None:
    _fake_run(tmp_path, "a0", "an", 0, 60.0, paper=85.1, dataset="voc2012")
    _fake_run(tmp_path, "a1", "an", 1, 62.0, paper=85.1, dataset="voc2012")
    _fake_run(tmp_path, "b0", "ll-r", 0, 70.0, alpha=5.0, dataset="voc2012")
    _fake_run(tmp_path, "c0", "an", 0, 30.0, dataset="coco2014")
    groups = build_table([tmp_path])
    md = format_markdown(groups)
    std = statistics.stdev([60.0, 62.0])
    assert "| method | coco2014 | voc2012 |" in md
    assert f"| an | 30.00 ± 0.00 (—) | 61.00 ± {std:.2f} (paper 85.10, Δ -24.10) |" in md
    assert "| ll-r + BoostLU (a=5) | — | 70.00 ± 0.00 (—) |" in md
    assert "BoostLU ablation" not in md  # no run carries a Table 2 number
    rows = format_csv(groups).splitlines()
    assert rows[0].startswith("dataset,method,train_alpha,eval_alpha,runs")
    voc_an = next(r for r in rows if r.startswith("voc2012,an,"))
    assert voc_an.split(",")[4:] == ["2", "0 1", "61.0000", f"{std:.4f}", "85.1", "", "", ""]
    assert "G1" not in md  # no run reports frequency groups


def test_table_shows_frequency_groups_beside_the_paper(tmp_path: Path) -> None:
    paper = [60.0, 70.0, 75.0, 80.0, 85.0]
    _fake_run(tmp_path, "r0", "ll-r", 0, 74.0, dataset="openimages-v3", paper=78.5,
              group_map=[60.0, 70.0, 75.0, 80.0, 85.0], paper_groups=paper)
    _fake_run(tmp_path, "r1", "ll-r", 1, 76.0, dataset="openimages-v3", paper=78.5,
              group_map=[62.0, 72.0, 77.0, 82.0, 87.0], paper_groups=paper)
    _fake_run(tmp_path, "a0", "an", 0, 70.0, dataset="openimages-v3", group_map=[50.0, 60.0, 70.0, 80.0, 90.0])
    _fake_run(tmp_path, "v0", "an", 0, 80.0, dataset="voc2012")
    groups = build_table([tmp_path])
    md = format_markdown(groups)
    assert "| openimages-v3 | all | G1 | G2 | G3 | G4 | G5 |" in md
    assert "| an | 70.00 ± 0.00 (—) | 50.00 ± 0.00 (—) | 60.00 ± 0.00 (—) |" in md
    s = statistics.stdev([60.0, 62.0])
    assert (f"| ll-r | 75.00 ± {s:.2f} (paper 78.50, Δ -3.50) | 61.00 ± {s:.2f} (paper 60.00, Δ +1.00) "
            f"| 71.00 ± {s:.2f} (paper 70.00, Δ +1.00) |") in md
    assert "| voc2012 | all |" not in md  # voc runs report no groups
    rows = format_csv(groups).splitlines()
    llr = next(r for r in rows if r.startswith("openimages-v3,ll-r,")).split(",")
    assert llr[-3:] == ["61.0000 71.0000 76.0000 81.0000 86.0000", "60 70 75 80 85", ""]
    voc = next(r for r in rows if r.startswith("voc2012,an,")).split(",")
    assert voc[-3:] == ["", "", ""]


def test_table_shows_the_boostlu_ablation_beside_the_paper(tmp_path: Path) -> None:
    for dataset, (plain, inference, llr) in (("voc2012", (86.10, 87.31, 89.27)), ("coco2014", (64.58, 66.27, 72.82))):
        _fake_run(tmp_path, f"{dataset}-an", "an", 0, 80.0, dataset=dataset, paper=85.89, ablation=plain)
        _fake_run(tmp_path, f"{dataset}-an-inf", "an", 0, 81.0, dataset=dataset, eval_alpha=5.0, paper=inference,
                  ablation=inference)
        _fake_run(tmp_path, f"{dataset}-llr", "ll-r", 0, 84.0, alpha=5.0, dataset=dataset, paper=89.29, ablation=llr)
        _fake_run(tmp_path, f"{dataset}-llct", "ll-ct", 0, 83.0, dataset=dataset, paper=87.79)  # Table 1 only
    md = format_markdown(build_table([tmp_path]))
    table2 = md[md.index("| BoostLU ablation |"):]
    lines = table2.splitlines()
    assert lines[0] == "| BoostLU ablation | coco2014 | voc2012 |"
    assert lines[2] == "| an | 80.00 ± 0.00 (paper 64.58, Δ +15.42) | 80.00 ± 0.00 (paper 86.10, Δ -6.10) |"
    assert lines[3] == ("| an + BoostLU (inference, a=5) | 81.00 ± 0.00 (paper 66.27, Δ +14.73) "
                        "| 81.00 ± 0.00 (paper 87.31, Δ -6.31) |")
    assert lines[4] == "| ll-r + BoostLU (a=5) | 84.00 ± 0.00 (paper 72.82, Δ +11.18) | 84.00 ± 0.00 (paper 89.27, Δ -5.27) |"
    assert "ll-ct" not in table2
    # the main table shows Table 1's numbers for the same runs
    cell = "84.00 ± 0.00 (paper 89.29, Δ -5.29)"
    assert f"| ll-r + BoostLU (a=5) | {cell} | {cell} |" in md[:md.index("| BoostLU ablation |")]


def test_table_rejects_disagreeing_or_malformed_group_numbers(tmp_path: Path, capsys) -> None:
    _fake_run(tmp_path / "a", "x0", "an", 0, 50.0, paper_groups=[1.0, 2.0, 3.0, 4.0, 5.0])
    _fake_run(tmp_path / "a", "x1", "an", 1, 50.0, paper_groups=[1.0, 2.0, 3.0, 4.0, 6.0])
    assert main(["table", str(tmp_path / "a")]) == 2
    assert "disagree on meta.paper_group_map" in capsys.readouterr().err
    _fake_run(tmp_path / "b", "x0", "an", 0, 50.0, group_map=["high"])  # type: ignore[list-item]
    assert main(["table", str(tmp_path / "b")]) == 2
    assert "test_group_map must be a non-empty list of numbers" in capsys.readouterr().err


def test_table_cli_and_its_errors(tmp_path: Path, capsys) -> None:
    _fake_run(tmp_path / "runs", "a0", "an", 0, 50.0)
    out_csv = tmp_path / "t.csv"
    assert main(["table", str(tmp_path / "runs"), "--csv", str(out_csv)]) == 0
    printed = capsys.readouterr().out
    assert "| an | 50.00 ± 0.00 |" in printed and out_csv.read_text().startswith("dataset,")
    assert main(["table", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["table", str(tmp_path / "empty")]) == 2
    _fake_run(tmp_path / "bad", "x0", "an", 0, 50.0, paper=1.0)
    _fake_run(tmp_path / "bad", "x1", "an", 1, 50.0, paper=2.0)
    assert main(["table", str(tmp_path / "bad")]) == 2
    assert "disagree on meta.paper_map" in capsys.readouterr().err


def test_method_labels() -> None:
    assert method_label("an", 1.0, 1.0) == "an"
    assert method_label("an", 1.0, 5.0) == "an + BoostLU (inference, a=5)"
    assert method_label("an", 5.0, 5.0) == "an + BoostLU (a=5)"


def test_zoo_rows_and_method_parsing() -> None:
    # every registered method except those the test suite registers itself (tests/test_resume.py)
    assert set(ZOO_METHODS) == {n for n in LOSSES.names() if not n.startswith("test-")}
    arms = zoo_arms(["full", "em"])
    assert [(a.method, a.train_alpha, a.eval_alpha, a.reuse) for a in arms] == [
        ("full", 1.0, 1.0, None), ("em", 1.0, 1.0, None), ("em", 1.0, 5.0, "em"), ("em", 5.0, 5.0, None)]
    assert parse_methods("all") == list(ZOO_METHODS)
    assert parse_methods("an, wan") == ["an", "wan"]
    assert main(["zoo", "--methods", "an,nope"]) == 2


def test_zoo_writes_runs_that_pamc_table_rebuilds(tmp_path: Path) -> None:
    base = load_config(None, {"data.synthetic.num_train": 60, "data.synthetic.num_test": 30,
                              "data.synthetic.image_size": 32, "train.epochs": 2, "train.batch_size": 16,
                              "train.lr": 0.003})
    out = run_zoo(tmp_path / "zoo", seeds=[0], methods=["an", "em-apl"], base=base)
    groups = build_table([tmp_path / "zoo" / "runs"])
    assert [g.row_label for g in groups] == [
        "an", "an + BoostLU (inference, a=5)", "an + BoostLU (a=5)",
        "em-apl", "em-apl + BoostLU (inference, a=5)", "em-apl + BoostLU (a=5)"]
    assert (tmp_path / "zoo" / "results.md").read_text() == out["markdown"] == format_markdown(groups)
    # the inference-only row re-evaluates the plain model's checkpoint with alpha 5
    plain = json.loads((tmp_path / "zoo" / "runs" / "an-seed0" / "test_results.json").read_text())
    boosted = json.loads((tmp_path / "zoo" / "runs" / "an-boostlu-inference-seed0" / "test_results.json").read_text())
    assert boosted["evaluated_from"].endswith("an-seed0") and boosted["eval_alpha"] == 5.0
    assert not math.isclose(plain["test_map"], boosted["test_map"])
