import json

import pytest

from pamc.demo import ll_delta_rel_for, summarize
from pamc.cli.main import main


def test_summarize_gap_closed_by_hand():
    table = summarize({"full": [90.0, 92.0], "an": [70.0, 72.0], "x": [80.0, 82.0]}, "an", "full")
    rows = {r["arm"]: r for r in table["rows"]}
    assert rows["full"]["gap_closed"] == 1.0 and rows["an"]["gap_closed"] == 0.0
    assert rows["x"]["gap_closed"] == pytest.approx(0.5)
    assert rows["x"]["map_mean"] == 81.0 and rows["x"]["map_std"] == pytest.approx(2 ** 0.5)


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
    assert arms == ["full", "an", "an + BoostLU (inference)", "ll-r", "ll-r + BoostLU"]
    assert all(len(r["runs"]) == 2 for r in table["rows"])
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n") == 7 and "an + BoostLU (inference)" in printed
    # the inference-only arm re-evaluates the AN models: no extra training runs
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 8 and not any("inference" in r for r in runs)
