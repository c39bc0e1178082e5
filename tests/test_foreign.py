"""pamc.models.foreign on plain torch: finding the GAP + linear head, and import-model's bad input.

The conversions of real torchvision and timm models are in tests/test_vision.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from pamc.cli.main import main
from pamc.models.foreign import HeadRefused, find_cam_head


class SqueezeExcite(nn.Module):
    """Pools inside the body, as EfficientNet's blocks do: not the head's pooling."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.gate = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.gate(self.pool(x)))


def _net(*head: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), SqueezeExcite(8), nn.Conv2d(8, 16, 3, stride=4), *head)


def test_finds_the_last_pooling_and_the_linear_layer() -> None:
    net = _net(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, 5))
    head = find_cam_head(net, 96)
    assert (head.pool, head.linear_name, head.linear) == ("3", "6", net[6])


@pytest.mark.parametrize("head,message", [
    ((nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(16), nn.Linear(16, 5)),
     "layer '5' (LayerNorm) comes after the pooling"),
    ((nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5)),
     "layer '6' (ReLU) comes after the linear layer"),
    ((nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 5)),
     "layer '3' (AdaptiveMaxPool2d) is not a global average pooling"),
    ((nn.Flatten(), nn.Linear(16 * 6 * 6, 5)), "layer '1.gate' (Conv2d) comes after the pooling"),
])
def test_refuses_heads_that_are_not_linear_after_average_pooling(head: tuple[nn.Module, ...], message: str) -> None:
    with pytest.raises(HeadRefused, match="^" + re.escape(message)):
        find_cam_head(_net(*head), 96)


def test_refuses_a_classifier_without_pooling() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.Flatten(), nn.Linear(8 * 24 * 24, 5))
    with pytest.raises(HeadRefused, match=re.escape("Sequential has no global pooling layer before layer '2' (Linear)")):
        find_cam_head(net, 96)


def test_import_model_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\ncat\n")
    weights = tmp_path / "w.pth"
    torch.save({}, weights)
    base = ["import-model", "--weights", str(weights), "-o", str(tmp_path / "run")]
    cases = [
        (["--arch", "resnet50", "--classes", str(tmp_path / "unique.txt")], "--arch must be torchvision:<name> or timm:<name>"),
        (["--arch", "timm:test_resnet", "--classes", str(classes)], "must list each class name once"),
        (["--arch", "timm:test_resnet", "--classes", str(tmp_path / "missing.txt")], "missing "),
        (["--arch", "timm:test_resnet", "--classes", str(tmp_path / "unique.txt"), "--alpha", "0.5"], "alpha"),
    ]
    (tmp_path / "unique.txt").write_text("cat\ndog\n")
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("pamc: error: ") and message in err, err
    assert not (tmp_path / "run").exists()
