"""``train.linear_init``: ROLE + LI's linear phase, its best epoch restored, then a fresh optimizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pamc.config import load_config
from pamc.engine import fit, load_checkpoint
from pamc.engine.phases import LINEAR_INIT_DIR, phase_configs
from pamc.engine.resume import load_last
from pamc.engine.trainer import make_model, seed_everything
from pamc.errors import PamcError
from pamc.table import build_table


def two_phase_config(out: Path, **extra):
    return load_config(None, {
        "data.synthetic": {"num_train": 60, "num_test": 20, "image_size": 24},
        "model.backbone": "smallcnn", "method.name": "role-li",
        "method.params": {"expected_num_pos": 2.0, "linear_init_epochs": 0},
        "train.epochs": 2, "train.batch_size": 16, "train.lr": 1e-12, "train.head_lr_mult": 1.0,
        "train.loss_lr_mult": 1.0, "train.flip": False,
        "train.linear_init": {"epochs": 2, "lr": 3e-2, "batch_size": 8}, "output_dir": str(out), **extra})


@pytest.mark.slow
def test_linear_phase_best_epoch_starts_the_fine_tuning_with_a_fresh_optimizer(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "role-li"
    cfg = two_phase_config(out)
    first, second = phase_configs(cfg)
    assert (first.train.epochs, first.train.lr, first.train.batch_size) == (2, 3e-2, 8)
    assert first.method.params["linear_init_epochs"] == 2 and second.method.params["linear_init_epochs"] == 0
    fit(cfg, callbacks=())
    phase1 = load_checkpoint(out / LINEAR_INIT_DIR / "best.safetensors")
    init = load_checkpoint(out / "best.safetensors")
    # phase 1 trained only the head: its backbone is still the initial one (BatchNorm statistics
    # included), its head moved
    seed_everything(cfg.train.seed)
    initial = make_model(cfg, 10).state_dict()
    for key, value in initial.items():
        if value.is_floating_point():
            same = torch.equal(phase1.state_dict[key], value)
            assert same == key.startswith("backbone."), key
    # phase 2 starts from phase 1's best weights and ROLE estimates; at lr 1e-12 it keeps them
    # (BatchNorm statistics move in training mode whatever the lr)
    for key, value in phase1.state_dict.items():
        if value.is_floating_point() and "running_" not in key:
            torch.testing.assert_close(init.state_dict[key], value, rtol=0, atol=1e-6, msg=key)
    assert phase1.criterion_state
    for key, value in phase1.criterion_state.items():
        torch.testing.assert_close(init.criterion_state[key], value, rtol=0, atol=1e-6, msg=key)
    # a fresh optimizer: phase 2's Adam has counted only its own 2 x 3 steps
    _, state = load_last(out)
    steps = {float(s["step"]) for s in state.optimizer["state"].values()}
    assert steps == {6.0}
    _, state1 = load_last(out / LINEAR_INIT_DIR)
    assert {float(s["step"]) for s in state1.optimizer["state"].values()} == {2 * 6.0}  # 48 images / 8
    # pamc table sees one run: the linear phase belongs to it
    assert [g.method for g in build_table([tmp_path / "runs"])] == ["role-li"]


def test_linear_init_needs_a_method_with_a_linear_phase(tmp_path: Path) -> None:
    cfg = two_phase_config(tmp_path / "x", **{"method.name": "an", "method.params": {}})
    with pytest.raises(PamcError, match="linear phase"):
        phase_configs(cfg)


def test_loss_parameters_get_their_own_learning_rate_multiplier(tmp_path: Path) -> None:
    """ROLE's label estimates at lr x loss_lr_mult, the head at lr x head_lr_mult (Cole et al.: 10 and 1)."""
    for loss_mult, expected in ((10.0, [1e-3, 1e-3, 1e-2]), (None, [1e-3, 1e-3, 1e-3])):
        cfg = load_config(None, {
            "data.synthetic": {"num_train": 40, "num_test": 10, "image_size": 16}, "model.backbone": "smallcnn",
            "method.name": "role", "method.params": {"expected_num_pos": 2.0}, "train.epochs": 1,
            "train.batch_size": 16, "train.lr": 1e-3, "train.head_lr_mult": 1.0, "train.loss_lr_mult": loss_mult,
            "output_dir": str(tmp_path / f"run-{loss_mult}")})
        fit(cfg, callbacks=())
        _, state = load_last(tmp_path / f"run-{loss_mult}")
        assert [g["lr"] for g in state.optimizer["param_groups"]] == pytest.approx(expected)
