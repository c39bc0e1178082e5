"""Models: backbones (registry), BoostLU and the CAM classifier."""

from pamc.models.backbones import BACKBONES, InputSpec, create_backbone, input_spec
from pamc.models.boostlu import BoostLU
from pamc.models.classifier import CAMClassifier, CAMOutput, build_model
from pamc.models.pretrained import load_pretrained

__all__ = [
    "BACKBONES",
    "BoostLU",
    "CAMClassifier",
    "CAMOutput",
    "InputSpec",
    "build_model",
    "create_backbone",
    "input_spec",
    "load_pretrained",
]
