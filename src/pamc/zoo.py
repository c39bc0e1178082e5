"""The method zoo on the synthetic scenes: every method, alone and with BoostLU.

For each method three rows share data, observed labels and seeds:

* ``M``: trained and tested with alpha 1;
* ``M + BoostLU (inference, a=5)``: the same model tested with alpha 5 (no retraining);
* ``M + BoostLU (a=5)``: trained and tested with alpha 5.

Every row leaves a run directory (``config.yaml`` + ``test_results.json``) so that
``pamc table`` rebuilds the table; the inference-only rows get a directory with the
evaluated config and results (no checkpoint of their own).

Schedules are scaled to the run length: Large-Loss ``delta_rel`` reaches the observed
false-negative rate at the last epoch (as in the demo); em-apl warms up for half the epochs
(the paper: 5 of 10); role-li trains the head alone for the first half; EPR/ROLE's expected
number of positives is the training pool's mean (Cole et al. use the dataset statistic).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import yaml

from pamc.config import RunConfig, replace
from pamc.data import build_dataset
from pamc.data.labels import false_negative_rate
from pamc.demo import BOOST_ALPHA, Arm, _test_with_alpha, demo_config, ll_delta_rel_for
from pamc.engine import fit
from pamc.engine.trainer import CONFIG_FILE, TEST_RESULTS
from pamc.errors import PamcError
from pamc.losses import LOSSES
from pamc.table import build_table, format_csv, format_markdown

log = logging.getLogger(__name__)

ZOO_METHODS: tuple[str, ...] = (
    "full", "an", "an-ls", "wan", "epr", "role", "role-li", "asl", "em", "em-apl", "gr-loss",
    "ll-r", "ll-ct", "ll-cp",
)


def zoo_arms(methods: Sequence[str]) -> list[Arm]:
    """Rows of the zoo table for ``methods`` (``full`` gets no BoostLU rows)."""
    arms = []
    for m in methods:
        arms.append(Arm(m, m, 1.0, 1.0))
        if m != "full":
            arms.append(Arm(f"{m} + BoostLU (inference)", m, 1.0, BOOST_ALPHA, reuse=m))
            arms.append(Arm(f"{m} + BoostLU", m, BOOST_ALPHA, BOOST_ALPHA))
    return arms


def zoo_config(quick: bool = False) -> RunConfig:
    """The demo's base config (1600-image pool, 1000 test images, 20 epochs), so that the zoo's
    AN / LL-R / BoostLU rows are the demo's arms and the other methods sit beside them."""
    return demo_config(quick)


def method_params(method: str, epochs: int, delta_rel: float, expected_num_pos: float) -> dict[str, Any]:
    """Run-length-scaled parameters of ``method`` on the synthetic scenes."""
    half = max(1, epochs // 2)
    if method.startswith("ll-"):
        return {"delta_rel": delta_rel}
    if method in ("epr", "role"):
        return {"expected_num_pos": expected_num_pos}
    if method == "role-li":
        return {"expected_num_pos": expected_num_pos, "linear_init_epochs": half}
    if method == "em-apl":
        return {"warmup_epochs": min(half, epochs - 1)}
    return {}


def parse_methods(text: str) -> list[str]:
    """``all`` or a comma list of registered method names."""
    if text == "all":
        return list(ZOO_METHODS)
    methods = [m.strip() for m in text.split(",") if m.strip()]
    for m in methods:
        LOSSES.get(m)  # raises RegistryError naming the choices
    if not methods:
        raise PamcError("--methods needs 'all' or a comma list of method names")
    return methods


def _write_eval_run(run_dir: Path, cfg: RunConfig, source: Path, test_map: float,
                    extra: dict[str, Any] | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    results = {"method": cfg.method.name, "train_alpha": cfg.model.train_alpha,
               "eval_alpha": cfg.model.resolved_eval_alpha, "test_map": test_map,
               "evaluated_from": str(source), **(extra or {})}
    (run_dir / TEST_RESULTS).write_text(json.dumps(results, indent=2))


def run_zoo(
    output_dir: Path,
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] = ZOO_METHODS,
    *,
    quick: bool = False,
    base: RunConfig | None = None,
    callbacks_for: Any = None,
) -> dict[str, Any]:
    """Train every zoo row for every seed; write ``runs/`` and ``results.md``/``results.csv``."""
    output_dir = Path(output_dir)
    runs = output_dir / "runs"
    if runs.exists():  # the zoo owns this folder
        shutil.rmtree(runs)
    base = base if base is not None else zoo_config(quick)
    bundle = build_dataset(base.data)
    full = bundle.train.full
    observed = bundle.train.observed.to_numpy()
    fn_rate = false_negative_rate(full, observed)
    delta_rel = ll_delta_rel_for(base.train.epochs, fn_rate)
    expected_pos = float((full == 1).sum(1).mean())
    arms = zoo_arms(methods)
    for seed in seeds:
        trained: dict[str, tuple[Path, RunConfig]] = {}
        for arm in arms:
            run_dir = runs / f"{_slug(arm.name)}-seed{seed}"
            params = method_params(arm.method, base.train.epochs, delta_rel, expected_pos)
            cfg = replace(base, method={"name": arm.method, "params": params},
                          model__train_alpha=arm.train_alpha, model__eval_alpha=arm.eval_alpha,
                          train__seed=seed, output_dir=str(run_dir))
            if arm.reuse is not None:
                source, _ = trained[arm.reuse]
                _write_eval_run(run_dir, cfg, source, _test_with_alpha(source, bundle, arm.eval_alpha))
                continue
            bundle.train.observed.load(observed)
            callbacks = callbacks_for(arm.name, seed) if callbacks_for else ()
            result = fit(cfg, dataset=bundle, callbacks=callbacks)
            trained[arm.name] = (result.output_dir, cfg)
            log.info("%s seed %d: test mAP %.2f", arm.name, seed, result.test_map)
    groups = build_table([runs])
    md = format_markdown(groups)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.md").write_text(md)
    (output_dir / "results.csv").write_text(format_csv(groups))
    return {"markdown": md, "false_negative_rate": fn_rate, "ll_delta_rel": delta_rel,
            "expected_num_pos": expected_pos, "epochs": base.train.epochs, "seeds": list(seeds)}


def _slug(name: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    while "--" in out:
        out = out.replace("--", "-")
    return out
