"""Every zoo method trains through the CLI on a tiny synthetic set and beats its initial mAP."""

from __future__ import annotations

import json

import pytest
import torch

from pamc.cli.main import main
from pamc.config import load_config
from pamc.data import ArrayLoader, DeviceTransform, build_dataset
from pamc.engine import evaluate, load_checkpoint, make_model
from pamc.engine.rundir import BEST_CHECKPOINT
from pamc.engine.trainer import seed_everything

METHODS = ["an-ls", "wan", "epr", "role", "role-li", "asl", "em", "em-apl", "gr-loss"]
EXTRA = {
    "role-li": ["--set", "method.params.linear_init_epochs=2"],
    "em-apl": ["--set", "method.params.warmup_epochs=3"],
}


def initial_test_map(args: list[str]) -> float:
    """Test mAP of the model ``fit`` starts from: same seed, same config, no training."""
    overrides = {}
    for i, a in enumerate(args):
        if a == "--set":
            key, _, value = args[i + 1].partition("=")
            overrides[key] = int(value) if value.isdigit() else value
    cfg = load_config(None, overrides)
    seed_everything(cfg.train.seed)
    bundle = build_dataset(cfg.data)
    model = make_model(cfg, bundle.num_classes)
    return evaluate(model, ArrayLoader(bundle.test, 64), DeviceTransform(torch.device("cpu")))["map"]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_above_its_initial_map(method, tmp_path) -> None:
    args = [
        "train", "--epochs", "6", "--batch-size", "16", "--lr", "0.004",
        "--set", "data.synthetic.num_train=600", "--set", "data.synthetic.num_test=300",
        # one thread, not `auto`: the sums, and so the selected epoch, do not depend on how busy the machine is
        "--no-progress", "--output-dir", str(tmp_path / "run"), "--threads", "1",
        "--method", method, *EXTRA.get(method, []),
    ]
    assert main(args) == 0
    results = json.loads((tmp_path / "run" / "test_results.json").read_text())
    before = initial_test_map([a for a in args if a != "train"])
    assert results["test_map"] > before + 1.0, (method, before, results["test_map"])


def test_loss_state_is_saved_in_the_checkpoint(tmp_path, tiny_train_args) -> None:
    """ROLE's label estimates travel in best.safetensors under criterion.* keys."""
    assert main([*tiny_train_args, "--method", "role"]) == 0
    ckpt = load_checkpoint(tmp_path / "run" / BEST_CHECKPOINT)
    theta = ckpt.criterion_state["label_logits"]
    assert theta.shape == (64, 10)  # 80 images, 20% held out for validation
    assert not any(k.startswith("criterion.") for k in ckpt.state_dict)
    # the estimates moved away from their initialisation range for some unobserved entries
    assert float(theta.abs().max()) > 0
    # `pamc eval` still loads the model part strictly
    assert main(["eval", str(tmp_path / "run")]) == 0


def test_role_li_freezes_the_backbone_first(tmp_path, tiny_train_args) -> None:
    from pamc.losses import create_loss

    loss = create_loss("role-li", expected_num_pos=1.0, linear_init_epochs=2)
    assert [loss.backbone_frozen(e) for e in (1, 2, 3)] == [True, True, False]
    assert not any(create_loss("role", expected_num_pos=1.0).backbone_frozen(e) for e in (1, 2, 3))
    args = [*tiny_train_args, "--method", "role-li"]
    assert main(args) == 2  # 25 linear epochs by default do not fit in a 2-epoch run
    assert main([*args, "--set", "method.params.linear_init_epochs=1"]) == 0


def test_frozen_features_mode_trains_only_the_head(tmp_path, tiny_train_args, capsys) -> None:
    """Cached features: the backbone keeps its initial weights, the checkpoint is a full model."""
    assert main([*tiny_train_args, "--method", "epr", "--set", "train.frozen_features=true"]) == 0
    run = tmp_path / "run"
    ckpt = load_checkpoint(run / BEST_CHECKPOINT)
    cfg = ckpt.config
    assert cfg.train.frozen_features is True
    seed_everything(cfg.train.seed)
    initial = make_model(cfg, len(ckpt.class_names)).state_dict()
    backbone = [k for k in initial if k.startswith("backbone.")]
    assert backbone and all(torch.equal(initial[k], ckpt.state_dict[k]) for k in backbone)
    assert not torch.equal(initial["head.weight"], ckpt.state_dict["head.weight"])
    # `pamc eval` runs the full model on images and reproduces the cached-feature test mAP
    results = json.loads((run / "test_results.json").read_text())
    capsys.readouterr()
    out_json = tmp_path / "eval.json"
    assert main(["eval", str(run), "--json", str(out_json)]) == 0
    evaluated = json.loads(out_json.read_text())["results"][0]["map"]
    assert evaluated == pytest.approx(results["test_map"], abs=0.05)


def test_frozen_features_keep_the_datasets_evaluation_metadata() -> None:
    import dataclasses

    import numpy as np

    from pamc.config import config_from_dict
    from pamc.engine.frozen import cache_frozen_features

    cfg = config_from_dict({"data": {"dataset": "synthetic", "synthetic": {"num_train": 40, "num_test": 20,
                                                                          "image_size": 32}},
                            "model": {"backbone": "smallcnn"}})
    bundle = build_dataset(cfg.data)
    frequency = np.arange(bundle.num_classes)
    bundle = dataclasses.replace(bundle, partial_test_labels=True, class_frequency=frequency)
    model = make_model(cfg, bundle.num_classes)
    _, cached, _ = cache_frozen_features(model, bundle, DeviceTransform(torch.device("cpu")))
    assert cached.partial_test_labels is True and cached.class_frequency is frequency
    assert cached.test.observed is bundle.test.observed and cached.test.full is bundle.test.full
    assert cached.train.images.shape[0] == len(bundle.train)
