import copy

import numpy as np
import pytest
import torch

from pamc.config import TrainConfig, config_from_dict
from pamc.data import ArrayLoader, DeviceTransform, LabelStore, Split
from pamc.engine import Trainer, train_one_epoch
from pamc.engine.precision import Precision, maybe_compile, resolve_amp_dtype
from pamc.errors import ConfigError
from pamc.losses import create_loss
from pamc.models import build_model

CPU = torch.device("cpu")


def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("smallcnn", 6, train_alpha=1.0)


def batch(seed: int = 0, n: int = 8, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    labels = torch.where(torch.rand(n, 6, generator=g) < 0.3, 1, 0).to(torch.int8)
    return x, labels


def test_amp_modes_resolve_as_documented():
    assert resolve_amp_dtype("auto", CPU) is None  # safe default: fp32 on CPU
    assert resolve_amp_dtype("off", CPU) is None
    assert resolve_amp_dtype("bf16", CPU) == torch.bfloat16
    assert resolve_amp_dtype("fp16", CPU) == torch.float16
    assert Precision.from_config(TrainConfig(amp="fp16"), CPU).scaler is not None
    assert Precision.from_config(TrainConfig(amp="bf16"), CPU).scaler is None
    assert Precision.from_config(TrainConfig(), CPU).name == "fp32"


def test_amp_config_rejects_unknown_mode():
    with pytest.raises(ConfigError, match="train.amp"):
        config_from_dict({"train": {"amp": "fp8"}})
    with pytest.raises(ConfigError, match="train.channels_last"):
        config_from_dict({"train": {"channels_last": "yes"}})


def test_bf16_autocast_agrees_with_fp32_on_cpu():
    model = small_model().eval()
    x, _ = batch()
    fp32 = Precision(CPU)
    bf16 = Precision(CPU, torch.bfloat16)
    with torch.no_grad():
        ref = model(x)
        with bf16.autocast():
            cam = model.head(model.forward_features(x))
            low = model(x).float()
    assert cam.dtype == torch.bfloat16  # autocast really ran the convolutions in bf16
    with fp32.autocast():
        assert model.head.weight.dtype == torch.float32
    scale = ref.abs().max()
    err = (low - ref).abs().max()
    assert err > 0  # not silently fp32
    assert err <= 0.02 * scale, (float(err), float(scale))


def test_bf16_training_step_agrees_with_fp32():
    x, labels = batch(1)
    loss_fn = create_loss("an")
    grads, losses = [], []
    for precision in (Precision(CPU), Precision(CPU, torch.bfloat16)):
        model = small_model(3).train()
        with precision.autocast():
            out = loss_fn(model(x), labels, torch.arange(len(x)))
        assert out.loss.dtype == torch.float32  # BCE runs in fp32 under autocast
        out.loss.backward()
        losses.append(float(out.loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cosine > 0.99, float(cosine)


@pytest.mark.parametrize("train_mode", [False, True])
def test_channels_last_gives_the_same_outputs_and_gradients(train_mode):
    model = small_model(5).train(train_mode)
    twin = copy.deepcopy(model)
    Precision(CPU, channels_last=True).prepare_model(twin)
    conv = twin.backbone.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x, _ = batch(2)
    x_cl = Precision(CPU, channels_last=True).prepare_input(x)
    assert x_cl.is_contiguous(memory_format=torch.channels_last)
    a, b = model(x), twin(x_cl)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_fp16_grad_scaler_step_updates_the_weights():
    model = small_model(7).train()
    precision = Precision.from_config(TrainConfig(amp="fp16"), CPU)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.head.weight.detach().clone()
    x, labels = batch(3)
    with precision.autocast():
        out = create_loss("an")(model(x), labels, torch.arange(len(x)))
    precision.backward_step(out.loss, optimizer)
    assert precision.scaler.get_scale() > 0
    assert torch.isfinite(model.head.weight).all()
    assert not torch.equal(model.head.weight, before)


def test_train_one_epoch_with_bf16_and_channels_last():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 3, 32, 32), dtype=np.uint8)
    observed = np.where(rng.random((24, 6)) < 0.2, 1, 0).astype(np.int8)
    split = Split(images, None, LabelStore(observed))
    model = small_model(9)
    precision = Precision(CPU, torch.bfloat16, channels_last=True)
    precision.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = model.head.weight.detach().clone()
    trainer = Trainer(model, create_loss("an"), optimizer, ArrayLoader(split, 8, shuffle=True), DeviceTransform(CPU),
                      precision=precision)
    stats = train_one_epoch(trainer)
    assert np.isfinite(stats["train_loss"]) and stats["corrected_labels"] == 0
    assert not torch.equal(model.head.weight, before)
    assert model.head.weight.dtype == torch.float32  # master weights stay fp32


def test_compile_switch_off_returns_the_module_itself():
    model = small_model()
    assert maybe_compile(model, False) is model


def test_logits_reaching_the_loss_and_the_evaluator_are_float32_under_bf16_autocast(monkeypatch):
    """The CAM head, BoostLU and pooling run in fp32 (autocast off) although the backbone is bf16."""
    from pamc.engine import trainer
    from pamc.evaluation import MultiLabelEvaluator
    from pamc.losses import LargeLossReject

    seen: dict[str, list[torch.dtype]] = {"model": [], "features": [], "loss": [], "candidates": [], "evaluator": []}

    class SpyLoss(LargeLossReject):
        def _select(self, candidates):
            seen["candidates"].append(candidates.dtype)  # what LL's top-k ranks
            return super()._select(candidates)

        def forward(self, logits, observed, index):
            seen["loss"].append(logits.dtype)
            return super().forward(logits, observed, index)

    class SpyEvaluator(MultiLabelEvaluator):
        def process(self, scores, labels):
            seen["evaluator"].append(scores.dtype)
            super().process(scores, labels)

    monkeypatch.setattr(trainer, "MultiLabelEvaluator", SpyEvaluator)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    observed = np.where(rng.random((16, 6)) < 0.2, 1, 0).astype(np.int8)
    split = Split(images, np.where(observed == 1, 1, -1).astype(np.int8), LabelStore(observed))
    model = small_model(11)
    model.register_forward_hook(lambda m, i, out: seen["model"].append(out.dtype))
    model.backbone.register_forward_hook(lambda m, i, out: seen["features"].append(out.dtype))
    precision = Precision(CPU, torch.bfloat16)
    loss = SpyLoss(delta_rel=10.0)
    loss.on_epoch_start(2)  # so that the top-k runs
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loop = Trainer(model, loss, optimizer, ArrayLoader(split, 8), DeviceTransform(CPU), precision=precision)
    loop.epoch = 2
    train_one_epoch(loop)
    trainer.evaluate(model, ArrayLoader(split, 8), DeviceTransform(CPU), precision=precision)
    assert set(seen["features"]) == {torch.bfloat16}  # autocast really ran the backbone in bf16
    assert set(seen["model"]) == set(seen["loss"]) == set(seen["candidates"]) == {torch.float32}
    assert set(seen["evaluator"]) == {torch.float32}
    assert len(seen["loss"]) == 2 and len(seen["model"]) == 4 and len(seen["evaluator"]) == 2
    with precision.autocast():  # the CAMs an explanation reads, too
        cam = model.forward_cam(torch.randn(2, 3, 32, 32))
    assert cam.raw.dtype == cam.boosted.dtype == torch.float32
