"""The Trainer and its hooks, RunDir and its results record, evaluate's label choice, --set parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pamc.config import config_from_dict, parse_override_value, parse_overrides
from pamc.data import ArrayLoader, DeviceTransform, LabelStore, SparseLabelStore, Split, label_store_from_state
from pamc.engine import Hook, RunDir, RunResults, Trainer, evaluate, fit, load_trained
from pamc.engine.hooks import LabelCorrection, LossSchedule
from pamc.errors import ConfigError, PamcError
from pamc.losses import LOSSES, LossOutput, PartialLabelLoss, create_loss
from pamc.losses.base import assume_negative_loss_matrix
from pamc.models import build_model

CPU = torch.device("cpu")


def _split(n: int = 16, c: int = 5, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)
    observed = np.where(rng.random((n, c)) < 0.3, 1, 0).astype(np.int8)
    return Split(images, np.where(observed == 1, 1, -1).astype(np.int8), LabelStore(observed))


def _trainer(split: Split, loss: PartialLabelLoss, seed: int = 0) -> Trainer:
    torch.manual_seed(seed)
    model = build_model("smallcnn", split.observed.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    transform = DeviceTransform(CPU, generator=torch.Generator().manual_seed(seed))
    return Trainer(model, loss, optimizer, ArrayLoader(split, 4, shuffle=True, seed=seed), transform)


class Recorder(Hook):
    """Logs every event; counts steps as its resumable state."""

    name = "recorder"

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []
        self.steps = 0

    def _log(self, event: str, trainer: Trainer) -> None:
        self.events.append((event, trainer.epoch, trainer.progress.step))

    def before_train(self, trainer):
        self._log("before_train", trainer)

    def before_epoch(self, trainer):
        self._log("before_epoch", trainer)

    def after_step(self, trainer):
        self.steps += 1
        self._log("after_step", trainer)

    def after_epoch(self, trainer):
        trainer.record["steps_so_far"] = self.steps
        self._log("after_epoch", trainer)

    def after_train(self, trainer):
        self._log("after_train", trainer)

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_hooks_run_in_order_around_each_step_and_add_to_the_record():
    trainer = _trainer(_split(), create_loss("an"))
    recorder = Recorder()
    trainer.register(recorder)
    trainer.train(2)
    events = [e for e, _, _ in recorder.events]
    # 16 images in batches of 4: 4 steps per epoch
    assert events == ["before_train", *(["before_epoch"] + ["after_step"] * 4 + ["after_epoch"]) * 2, "after_train"]
    assert [s for e, _, s in recorder.events if e == "after_step"] == [1, 2, 3, 4] * 2
    # in after_epoch the progress already points at the next epoch (what a checkpoint resumes at)
    assert [(ep, s) for e, ep, s in recorder.events if e == "after_epoch"] == [(1, 0), (2, 0)]
    assert [r["steps_so_far"] for r in trainer.history] == [4, 8] and trainer.global_step == 8
    with pytest.raises(ValueError, match="share a state name"):
        trainer.register(Recorder())


def test_training_state_restores_every_hook_and_continues_identically():
    split = _split()
    reference = _trainer(split, create_loss("ll-r", delta_rel=10.0))
    reference.register(LossSchedule(reference.criterion), Recorder())
    reference.train(3)

    first = _trainer(split, create_loss("ll-r", delta_rel=10.0))
    first.register(LossSchedule(first.criterion), Recorder())
    first.train(2)
    state = first.training_state(first.loader.generator.get_state())
    assert state.hooks["recorder"] == {"steps": 8} and float(state.hooks["loss"]["clean_rate"]) == pytest.approx(0.9)

    second = _trainer(split, create_loss("ll-r", delta_rel=10.0), seed=7)  # other weights, overwritten below
    second.model.load_state_dict(first.model.state_dict())
    recorder = Recorder()
    second.register(LossSchedule(second.criterion), recorder)
    second.load_training_state(state, Path("state"))
    second.train(3)
    assert recorder.steps == 12 and second.resumed and second.global_step == 12
    assert second.history[-1]["train_loss"] == reference.history[-1]["train_loss"]
    assert second.history[-1]["clean_rate"] == reference.history[-1]["clean_rate"] == pytest.approx(0.8)
    for a, b in zip(second.model.state_dict().values(), reference.model.state_dict().values()):
        assert torch.equal(a, b)


class _CorrectFirst(PartialLabelLoss):
    """Assume-negative BCE that asks to set entry (row, 0) positive for every row of the batch."""

    def forward(self, logits, observed, index):
        corrections = torch.zeros_like(observed, dtype=torch.bool)
        corrections[:, 0] = True
        return LossOutput(assume_negative_loss_matrix(logits, observed).mean(), corrections)


@pytest.mark.parametrize("sparse", [False, True])
def test_label_correction_writes_into_the_store_in_its_own_form(sparse):
    split = _split()
    if sparse:
        split = Split(split.images, split.full, SparseLabelStore.from_dense(split.observed.to_numpy()))
    before = split.observed.to_numpy()
    trainer = _trainer(split, _CorrectFirst())
    hook = LabelCorrection(split.observed)
    trainer.register(hook)
    trainer.train(1)
    after = split.observed.to_numpy()
    assert (after[:, 0] == 1).all() and np.array_equal(after[:, 1:], before[:, 1:])
    assert trainer.history[0]["corrected_labels"] == 16
    state = hook.state_dict()
    assert set(state) == ({"indptr", "indices", "values", "num_classes"} if sparse else {"dense"})
    assert np.array_equal(label_store_from_state(state).to_numpy(), after)
    split.observed.load_state_dict(label_store_from_state({"dense": torch.from_numpy(before)}).state_dict()
                                   if not sparse else SparseLabelStore.from_dense(before).state_dict())
    assert np.array_equal(split.observed.to_numpy(), before)


def test_evaluate_rejects_an_unknown_label_choice():
    split = _split()
    split = Split(split.images, np.where(np.random.default_rng(5).random((16, 5)) < 0.5, 1, -1).astype(np.int8),
                  split.observed)
    model = build_model("smallcnn", 5)
    loader, transform = ArrayLoader(split, 8), DeviceTransform(CPU)
    full = evaluate(model, loader, transform, labels="full")["map"]
    assert evaluate(model, loader, transform, labels="observed")["map"] != full
    with pytest.raises(PamcError, match="unknown evaluation labels 'ful'; choose one of: full, observed"):
        evaluate(model, loader, transform, labels="ful")


def test_parse_overrides():
    assert parse_overrides(["train.lr=0.3", "method.params.at=[1, 2]", "a.b=x=y", "train.lr=0.001"]) == {
        "train.lr": 0.001, "method.params.at": [1, 2], "a.b": "x=y"}
    assert parse_override_value("true") is True and parse_override_value("") is None
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE, got 'train.lr'"):
        parse_overrides(["train.lr"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_overrides(["a=[1"])


def test_registry_registers_for_a_block_only():
    class Dummy(PartialLabelLoss):
        pass

    with LOSSES.registered("test-dummy", Dummy):
        assert isinstance(create_loss("test-dummy"), Dummy)
    assert "test-dummy" not in LOSSES


def test_run_dir_round_trip_and_one_results_record(tmp_path):
    cfg = config_from_dict({"data": {"synthetic": {"num_train": 40, "num_test": 20, "image_size": 32}},
                            "train": {"epochs": 1, "batch_size": 8}, "output_dir": str(tmp_path / "run")})
    fit(cfg, callbacks=())
    run = RunDir.open(tmp_path / "run")
    assert run.is_finished and run.has_last and len(run.state_files()) == 1
    from pamc.config import replace
    from pamc.data.catalog import normalisation

    mean, std = normalisation(cfg)  # the run records the facts it trained with (pamc.data.catalog)
    assert run.read_config() == replace(cfg, data__image_size=32, data__mean=list(mean), data__std=list(std))
    results = run.read_results()
    assert isinstance(results, RunResults) and results.evaluated_from is None and results.best_epoch == 1
    assert list(json.loads(run.results_path.read_text())) == list(RunResults.__dataclass_fields__)
    assert [r["epoch"] for r in run.read_metrics()] == [1]
    trained = load_trained(run)
    assert trained.run is not None and trained.path == run.best_path and not trained.model.training
    assert trained.split("test").observed.shape == (20, 10)
    with pytest.raises(PamcError, match="already finished"):
        RunDir.for_resume(run.path)
    with pytest.raises(PamcError, match="already holds a run"):
        RunDir.create(run.path)
    with pytest.raises(PamcError, match="not a pamc run directory"):
        RunDir.open(tmp_path)
