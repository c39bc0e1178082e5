import pytest
import torch
from safetensors.torch import load_file

import pamc.pretrain as pretrain
from pamc.config import config_from_dict, replace
from pamc.engine import RunDir
from pamc.models.backbones import create_backbone
from pamc.pretrain import cache_key, disjoint_task, pretrained_backbone


def tiny_config():
    return config_from_dict({
        "data": {"dataset": "synthetic", "synthetic": {"num_train": 60, "num_test": 20, "image_size": 24}},
        "model": {"backbone": "smallcnn", "train_alpha": 5.0},
        "method": {"name": "an"},
        "train": {"epochs": 1, "batch_size": 16, "lr": 4e-3},
    })


def test_disjoint_task_is_full_labels_on_other_scenes_from_scratch():
    cfg = disjoint_task(replace(tiny_config(), model__pretrained="x.safetensors"))
    assert cfg.data.synthetic.seed == 7 != tiny_config().data.synthetic.seed
    assert cfg.method.name == "full" and cfg.model.pretrained is None
    assert cfg.model.train_alpha == 1.0 and cfg.model.resolved_eval_alpha == 1.0
    assert cfg.data.synthetic.num_train == 60 and cfg.train.epochs == 1


def test_cache_key_follows_the_recipe_not_the_output_dir():
    cfg = disjoint_task(tiny_config())
    assert cache_key(cfg) == cache_key(replace(cfg, output_dir="elsewhere"))
    assert cache_key(cfg) != cache_key(replace(cfg, train__epochs=2))
    assert cache_key(cfg) != cache_key(replace(cfg, data__synthetic__seed=8))


@pytest.mark.slow
def test_pretrained_backbone_trains_once_and_loads_strictly(tmp_path, monkeypatch):
    cfg = disjoint_task(tiny_config())
    weights = pretrained_backbone(cfg, tmp_path)
    run = RunDir(weights.parent / "run")
    assert run.is_finished and run.read_config().method.name == "full"
    # the file is the run's best checkpoint's backbone tensors, prefix removed
    best = load_file(str(run.best_path))
    state = load_file(str(weights))
    assert set(state) == {k[len("backbone."):] for k in best if k.startswith("backbone.")}
    assert all(torch.equal(state[k], best["backbone." + k]) for k in state)
    create_backbone("smallcnn").load_state_dict(state, strict=True)  # loads as model.pretrained does
    create_backbone("smallcnn", pretrained=str(weights))

    def no_training(*args, **kwargs):
        raise AssertionError("a cached backbone was trained again")

    monkeypatch.setattr(pretrain, "fit", no_training)
    assert pretrained_backbone(cfg, tmp_path) == weights
    # another recipe is another cache entry
    with pytest.raises(AssertionError, match="trained again"):
        pretrained_backbone(replace(cfg, train__epochs=2), tmp_path)
