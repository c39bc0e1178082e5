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

import logging
from pathlib import Path
from typing import Any, Sequence

from pamc.arms import Arm, check_results_replaceable, plan, run_arms, write_results_files
from pamc.config import RunConfig
from pamc.data import build_dataset
from pamc.data.labels import false_negative_rate
from pamc.demo import BOOST_ALPHA, demo_config, ll_delta_rel_for
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


def run_zoo(
    output_dir: Path,
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] = ZOO_METHODS,
    *,
    quick: bool = False,
    base: RunConfig | None = None,
    callbacks_for: Any = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Train every zoo row for every seed, ``jobs`` at a time; write ``runs/`` and
    ``results.md``/``results.csv``."""
    output_dir = Path(output_dir)
    runs = output_dir / "runs"
    check_results_replaceable(output_dir, ("results.md", "results.csv"))
    base = base if base is not None else zoo_config(quick)
    bundle = build_dataset(base.data)
    full = bundle.train.full
    fn_rate = false_negative_rate(full, bundle.train.observed.to_numpy())  # small synthetic set
    delta_rel = ll_delta_rel_for(base.train.epochs, fn_rate)
    expected_pos = float((full == 1).sum(1).mean())
    specs = plan(zoo_arms(methods), seeds, base, runs,
                 lambda method: method_params(method, base.train.epochs, delta_rel, expected_pos))
    run_arms(specs, dataset=bundle, callbacks_for=callbacks_for, jobs=jobs)
    groups = build_table([runs])
    md = format_markdown(groups)
    write_results_files(output_dir, {"results.md": md, "results.csv": format_csv(groups)})
    return {"markdown": md, "false_negative_rate": fn_rate, "ll_delta_rel": delta_rel,
            "expected_num_pos": expected_pos, "epochs": base.train.epochs, "seeds": list(seeds)}
