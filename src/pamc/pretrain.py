"""A backbone pretrained once on a disjoint synthetic task and cached.

It stands in for the ImageNet-pretrained backbone that every model of the paper fine-tunes
from: the same backbone is trained on full labels of synthetic scenes drawn with another seed
(:data:`DISJOINT_SCENE_SEED`) than the task the arms are compared on, and its weights (the
``backbone.*`` tensors of the selected checkpoint, torchvision-style keys without the prefix)
are saved as ``backbone.safetensors``, which ``model.pretrained`` loads. The demo and
``docs/make_explain_figures.sh`` share it.

The cache folder is keyed by a hash of the pretraining config, so a changed recipe pretrains
again and an unchanged one is trained once; a file lock makes concurrent callers wait for one
training instead of racing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from filelock import FileLock
from safetensors.torch import load_file, save_file

from pamc.config import RunConfig, replace
from pamc.engine import RunDir, fit
from pamc.errors import OutputError

log = logging.getLogger(__name__)

DISJOINT_SCENE_SEED = 7
BACKBONE_FILE = "backbone.safetensors"
_PREFIX = "backbone."


def disjoint_task(cfg: RunConfig, scene_seed: int = DISJOINT_SCENE_SEED) -> RunConfig:
    """``cfg`` turned into the pretraining run: full labels on synthetic scenes of another seed,
    no pretrained start, BoostLU off."""
    return replace(cfg, data__dataset="synthetic", data__root=None, data__synthetic__seed=scene_seed,
                   method={"name": "full", "params": {}}, model__pretrained=None,
                   model__train_alpha=1.0, model__eval_alpha=None)


def cache_key(cfg: RunConfig) -> str:
    """A short hash of what decides the pretrained weights (data, model, schedule)."""
    values = cfg.to_dict()
    relevant = {k: values[k] for k in ("data", "model", "method", "train")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:12]


def extract_backbone(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the ``backbone.*`` tensors of a pamc checkpoint, prefix removed, to ``out``."""
    state = load_file(str(checkpoint))
    backbone = {k[len(_PREFIX):]: v.contiguous() for k, v in state.items() if k.startswith(_PREFIX)}
    if not backbone:
        raise ValueError(f"{checkpoint} holds no backbone.* tensors")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    save_file(backbone, str(tmp))
    tmp.replace(out)
    return out


def pretrained_backbone(cfg: RunConfig, cache_dir: str | Path) -> Path:
    """The backbone weights file of ``cfg``'s training run, trained under ``cache_dir`` if absent.

    ``cfg`` is the pretraining run itself (see :func:`disjoint_task`); its ``output_dir`` is
    ignored: the run lives in ``cache_dir/<backbone>-<key>/run``.
    """
    folder = Path(cache_dir) / f"{cfg.model.backbone.replace(':', '_')}-{cache_key(cfg)}"
    weights = folder / BACKBONE_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write to output directory {folder}: {exc.strerror or exc}") from None
    with FileLock(str(folder / ".lock")):
        if weights.is_file():
            log.info("pretrained backbone from the cache: %s", weights)
            return weights
        run = folder / "run"
        if not RunDir(run).is_finished:  # an interrupted pretraining continues where it stopped
            log.info("pretraining %s on the disjoint task (scene seed %d) in %s",
                     cfg.model.backbone, cfg.data.synthetic.seed, run)
            fit(replace(cfg, output_dir=str(run)), callbacks=(), resume=RunDir(run).has_last)
        extract_backbone(RunDir(run).best_path, weights)
    return weights
