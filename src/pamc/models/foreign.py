"""Classifiers trained elsewhere (torchvision, timm) as pamc CAM classifiers.

A classifier that ends in global average pooling followed by one linear layer (flatten,
dropout or identity may sit between) already is a CAM classifier: the linear layer applied at
every position is a 1x1 convolution, and the spatial mean commutes with it,
``fc(mean(F)) == mean(conv1x1(F))``. :func:`convert_classifier` moves that linear layer into
the 1x1-conv head of a :class:`~pamc.models.CAMClassifier`, whose logits at alpha 1 are the
original model's; at alpha > 1 it pools BoostLU-ed CAMs. A head with anything else after
the pooling (a norm, an MLP, attention or class-token pooling) is refused, naming the layer.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from pamc.errors import ConfigError, PamcError
from pamc.models.backbones import TIMM_PREFIX, TORCHVISION_PREFIX, create_backbone
from pamc.models.classifier import CAMClassifier
from pamc.models.pretrained import check_state_dict, read_state_dict

logger = logging.getLogger(__name__)

PAMC_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")  # torchvision's keys, no torchvision needed
TORCHVISION_INPUT = 224
_BETWEEN = (nn.Flatten, nn.Dropout, nn.Identity)  # may sit between the pooling and the linear layer
_NO_OPS = (nn.Flatten, nn.Identity)  # may follow the linear layer
_PROBE_SIZE = 96  # large enough that a stride-32 map is bigger than 1x1 before the pooling
_AVERAGE_POOLS = ("AdaptiveAvgPool2d", "FastAdaptiveAvgPool", "SelectAdaptivePool2d")


class HeadRefused(ConfigError):
    """The classifier's head is not global average pooling followed by one linear layer."""


@dataclass(frozen=True)
class CamHead:
    """Where a classifier pools (``pool``: module name, or a description) and its linear layer."""

    pool: str
    linear_name: str
    linear: nn.Linear


def _package(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        raise PamcError(f"this needs the {name} package (pip install {name}; "
                        f"requirements-vision.txt is the tested environment)")


def build_classifier(arch: str, num_classes: int) -> nn.Module:
    """An untrained ``torchvision:<name>`` or ``timm:<name>`` classifier with ``num_classes`` outputs."""
    if arch.startswith(TORCHVISION_PREFIX):
        _package("torchvision")
        import torchvision

        name = arch[len(TORCHVISION_PREFIX):]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ConfigError(f"unknown torchvision classification model {name!r}")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if arch.startswith(TIMM_PREFIX):
        _package("timm")
        import timm

        name = arch[len(TIMM_PREFIX):]
        if not timm.is_model(name):
            raise ConfigError(f"unknown timm model {name!r}")
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    raise ConfigError(f"--arch must be torchvision:<name> or timm:<name>, got {arch!r}")


def default_input_size(arch: str) -> int:
    """The square input size a classifier was built for: timm's ``pretrained_cfg``, else 224."""
    if arch.startswith(TIMM_PREFIX):
        _package("timm")
        import timm

        cfg = timm.get_pretrained_cfg(arch[len(TIMM_PREFIX):])
        size = getattr(cfg, "input_size", None) if cfg is not None else None
        if size:
            return int(size[-1])
    return TORCHVISION_INPUT


def _leaves(model: nn.Module) -> dict[nn.Module, str]:
    return {m: name for name, m in model.named_modules() if not list(m.children())}


def _run_order(model: nn.Module, image_size: int) -> tuple[list[tuple[str, nn.Module, Tensor, Tensor]], Tensor]:
    """The leaf modules a forward pass runs, in order, with the input and output of each."""
    leaves = _leaves(model)
    order: list[tuple[str, nn.Module, Tensor, Tensor]] = []

    def record(module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
        first = inputs[0] if inputs else None
        if isinstance(first, Tensor) and isinstance(output, Tensor):
            order.append((leaves[module], module, first, output))

    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(torch.zeros(1, 3, image_size, image_size))
        except RuntimeError as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise HeadRefused(f"{type(model).__name__} does not run on a {image_size}x{image_size} input: "
                              f"{reason}") from None
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, Tensor) or out.ndim != 2:
        raise HeadRefused(f"{type(model).__name__} does not return a (batch, classes) tensor of logits")
    return order, out


def _token_head(model: nn.Module) -> CamHead:
    """timm transformers (``num_prefix_tokens``) pool tokens in code, not in a module."""
    if getattr(model, "attn_pool", None) is not None:
        raise HeadRefused(f"layer 'attn_pool' ({type(model.attn_pool).__name__}) is attention pooling, "
                          "not a global average; it has no CAM form")
    pool = getattr(model, "global_pool", None)
    if pool != "avg":
        raise HeadRefused(f"global_pool={pool!r} is not the average of the patch tokens"
                          f"{' (it takes the class token)' if pool == 'token' else ''}; "
                          "only global_pool='avg' has a CAM form")
    if getattr(model, "pool_include_prefix", False):
        raise HeadRefused("the pooling averages class/register tokens with the patches (pool_include_prefix); "
                          "the patch grid cannot reproduce it")
    fc_norm = getattr(model, "fc_norm", None)
    if fc_norm is not None and not isinstance(fc_norm, nn.Identity):
        raise HeadRefused(f"layer 'fc_norm' ({type(fc_norm).__name__}) comes after the pooling; "
                          "only dropout may sit between the pooling and the linear layer")
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise HeadRefused(f"layer 'head' ({type(head).__name__}) is not a linear layer")
    return CamHead("mean of the patch tokens", "head", head)


def find_cam_head(model: nn.Module, image_size: int) -> CamHead:
    """The global average pooling and the final linear layer of ``model``, or :class:`HeadRefused`.

    One forward pass (on zeros) records the leaf modules in the order they run; the one
    that turns a ``(B, C, h, w)`` map into ``(B, C)`` or ``(B, C, 1, 1)`` last is the pooling, and
    after it only flatten/dropout/identity and then one linear layer, the model's output, may run.
    """
    if hasattr(model, "num_prefix_tokens") and isinstance(getattr(model, "global_pool", None), str):
        return _token_head(model)
    order, out = _run_order(model, max(image_size, _PROBE_SIZE))
    pools = [i for i, (_, _, x, y) in enumerate(order)
             if x.ndim == 4 and x.shape[-2:].numel() > 1 and y.shape[:2] == x.shape[:2] and y.shape[2:].numel() == 1]
    start = pools[-1] if pools else None  # the last one: squeeze-excitation blocks pool too
    last = order[-1] if order else None
    if start is None:
        where = f" before layer {last[0]!r} ({type(last[1]).__name__})" if last else ""
        raise HeadRefused(f"{type(model).__name__} has no global pooling layer{where}; "
                          "only a global average pooling followed by a linear layer has a CAM form")
    pool_name, pool, _, _ = order[start]
    if type(pool).__name__ not in _AVERAGE_POOLS or getattr(pool, "pool_type", "avg") not in ("avg", "fast"):
        raise HeadRefused(f"layer {pool_name!r} ({type(pool).__name__}) is not a global average pooling")
    linear: tuple[str, nn.Linear] | None = None
    for name, module, _, _ in order[start + 1:]:
        if linear is None and isinstance(module, nn.Linear):
            linear = (name, module)
        elif not isinstance(module, _BETWEEN if linear is None else _NO_OPS):
            after = "the linear layer" if linear is not None else "the pooling"
            raise HeadRefused(f"layer {name!r} ({type(module).__name__}) comes after {after}; "
                              "only dropout may sit between the pooling and the linear layer")
    if linear is None or order[-1][3] is not out and not torch.equal(order[-1][3], out):
        raise HeadRefused(f"{type(model).__name__} has no linear layer after its pooling layer {pool_name!r}")
    return CamHead(pool_name, *linear)


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier's top-level layers before its global pooling, run in order."""

    def __init__(self, model: nn.Module, name: str, image_size: int = TORCHVISION_INPUT) -> None:
        super().__init__()
        head = find_cam_head(model, image_size)
        top = head.pool.split(".")[0]
        names = [n for n, _ in model.named_children()]
        for n in names[names.index(top):]:
            delattr(model, n)
        self.model = model
        self.name = name
        self.out_channels: int = head.linear.in_features

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.model.children():
            x = layer(x)
        return x


def torchvision_backbone(name: str, pretrained: str | None, kwargs: dict[str, object]) -> nn.Module:
    """``torchvision:<name>``: the feature extractor of a torchvision GAP + linear classifier."""
    if pretrained is not None or kwargs:
        raise ConfigError(f"backbone 'torchvision:{name}' takes no pretrained weights or options; "
                          "bring a trained torchvision model in with `pamc import-model`")
    return TorchvisionBackbone(build_classifier(TORCHVISION_PREFIX + name, 1), name)


def backbone_name(arch: str) -> str:
    """The pamc backbone that holds ``arch``'s features (pamc's own resnets for torchvision's)."""
    if arch.startswith(TORCHVISION_PREFIX) and arch[len(TORCHVISION_PREFIX):] in PAMC_RESNETS:
        return arch[len(TORCHVISION_PREFIX):]
    return arch


def convert_classifier(
    model: nn.Module,
    arch: str,
    *,
    image_size: int,
    eval_alpha: float = 5.0,
) -> CAMClassifier:
    """A :class:`CAMClassifier` with ``model``'s weights and, at alpha 1, ``model``'s logits.

    ``arch`` (``torchvision:<name>`` or ``timm:<name>``) names the architecture ``model`` was
    built as; ``eval_alpha`` is the BoostLU alpha used in eval mode. The result is checked
    against ``model`` on random images and refused if its logits differ.
    """
    head = find_cam_head(model, image_size)
    num_classes = head.linear.out_features
    cam = CAMClassifier(create_backbone(backbone_name(arch)), num_classes, train_alpha=1.0, eval_alpha=eval_alpha)
    if cam.backbone.out_channels != head.linear.in_features:
        raise HeadRefused(f"layer {head.linear_name!r} takes {head.linear.in_features} features, "
                          f"the feature map has {cam.backbone.out_channels} channels")
    source = model.state_dict()
    prefix = "" if backbone_name(arch) != arch else "model."
    expected = cam.backbone.state_dict()
    state = {prefix + k: v for k, v in source.items() if prefix + k in expected}
    left_out = [k for k in source if prefix + k not in expected
                and k not in (f"{head.linear_name}.weight", f"{head.linear_name}.bias")]
    if left_out:
        raise HeadRefused(f"the head holds weights besides layer {head.linear_name!r}: {', '.join(left_out[:3])}")
    check_state_dict(cam.backbone, state, arch)
    cam.backbone.load_state_dict(state, strict=True)
    with torch.no_grad():
        cam.head.weight.copy_(head.linear.weight.view(num_classes, -1, 1, 1))
        if head.linear.bias is not None:
            cam.head.bias.copy_(head.linear.bias)
        else:
            cam.head.bias.zero_()
    _check_same_logits(model, cam, image_size)
    logger.info("converted %s: pooling %s, linear %s -> CAM head with %d classes",
                arch, head.pool, head.linear_name, num_classes)
    return cam


def _check_same_logits(model: nn.Module, cam: CAMClassifier, image_size: int) -> None:
    alpha = cam.eval_alpha
    model.eval()
    cam.eval()
    cam.set_eval_alpha(1.0)
    try:
        x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref, got = model(x), cam(x)
    finally:
        cam.set_eval_alpha(alpha)
    gap = float((ref - got).abs().max())
    if gap > 1e-4 * max(1.0, float(ref.abs().max())):
        raise HeadRefused(f"the converted model's logits differ from the original's by up to {gap:.3g}; "
                          "its forward pass is not its layers run in order")


def import_classifier(
    arch: str,
    weights: str | Path,
    num_classes: int,
    *,
    image_size: int,
    eval_alpha: float = 5.0,
) -> CAMClassifier:
    """Build ``arch`` with ``num_classes`` outputs, load ``weights`` strictly, and convert it."""
    model = build_classifier(arch, num_classes)
    state = read_state_dict(weights)
    check_state_dict(model, state, Path(weights).name)
    model.load_state_dict(state, strict=True)
    return convert_classifier(model, arch, image_size=image_size, eval_alpha=eval_alpha)
