"""Partial-label losses checked against hand computations on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from pamc.data import LabelStore
from pamc.errors import ConfigError, RegistryError
from pamc.losses import (
    LOSSES,
    AssumeNegativeLoss,
    FullLabelLoss,
    LargeLossCorrectionPermanent,
    LargeLossCorrectionTemporary,
    LargeLossReject,
    LossOutput,
    PartialLabelLoss,
    create_loss,
    resolve_method_params,
)
from pamc.losses.large_loss import selection_size


def neg(x: float) -> float:
    """BCE of logit x against target 0."""
    return math.log(1.0 + math.exp(x))


def pos(x: float) -> float:
    """BCE of logit x against target 1."""
    return math.log(1.0 + math.exp(-x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def labels(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int8)


def index(batch: int) -> torch.Tensor:
    return torch.arange(batch, dtype=torch.int64)


# 2x4 case used by the Large-Loss tests. Unobserved losses (target 0):
# (0,0) x=2 -> 2.127, (0,1) x=-1 -> 0.313, (1,0) x=1.5 -> 1.701, (1,1) x=-3 -> 0.049,
# (1,2) x=0 -> 0.693, (1,3) x=3 -> 3.049. The observed negative at (0,2) (x=4 -> 4.018) has
# the largest loss of all but is never a candidate. With delta_rel=25 in epoch 2 the clean
# rate is 0.75 and k = ceil(8 * 0.25) = 2: (1,3) and (0,0) are selected.
LL_LOGITS = [[2.0, -1.0, 4.0, 0.5], [1.5, -3.0, 0.0, 3.0]]
LL_OBSERVED = [[0, 0, -1, 1], [0, 0, 0, 0]]
LL_SELECTED = [[True, False, False, False], [False, False, False, True]]
LL_KEPT = neg(-1.0) + neg(4.0) + pos(0.5) + neg(1.5) + neg(-3.0) + neg(0.0)


def ll_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(LL_LOGITS, requires_grad=True), labels(LL_OBSERVED)


def test_an_matches_hand_computation() -> None:
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    observed = labels([[1, -1, 0], [0, 1, -1]])
    out = create_loss("an")(logits, observed, index(2))
    assert isinstance(out, LossOutput) and out.corrections is None
    expected = (pos(1.0) + neg(-2.0) + neg(0.5) + neg(0.0) + pos(3.0) + neg(-1.0)) / 6
    assert out.loss.dim() == 0
    assert math.isclose(out.loss.item(), expected, rel_tol=1e-6)
    # observed negatives and unobserved entries are the same negative target
    as_unobserved = torch.where(observed == -1, torch.zeros_like(observed), observed)
    assert torch.equal(create_loss("an")(logits, as_unobserved, index(2)).loss, out.loss)


def test_full_uses_full_labels_and_same_formula() -> None:
    assert FullLabelLoss.uses_full_labels is True
    assert AssumeNegativeLoss.uses_full_labels is False
    assert LargeLossReject.uses_full_labels is False
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    full = labels([[1, -1, 1], [-1, 1, -1]])
    loss = create_loss("full")
    assert loss.uses_full_labels
    expected = (pos(1.0) + neg(-2.0) + pos(0.5) + neg(0.0) + pos(3.0) + neg(-1.0)) / 6
    assert math.isclose(loss(logits, full, index(2)).loss.item(), expected, rel_tol=1e-6)
    zero_one = labels([[1, 0, 1], [0, 1, 0]])
    assert math.isclose(loss(logits, zero_one, index(2)).loss.item(), expected, rel_tol=1e-6)


@pytest.mark.parametrize("cls", [LargeLossReject, LargeLossCorrectionTemporary])
def test_clean_rate_schedule(cls: type) -> None:
    loss = cls(delta_rel=0.2)
    assert loss.clean_rate.dtype == torch.float64
    assert loss.clean_rate.item() == 1.0
    for epoch, expected in zip(range(1, 6), [1.0, 0.998, 0.996, 0.994, 0.992]):
        loss.on_epoch_start(epoch)
        assert math.isclose(loss.clean_rate.item(), expected, rel_tol=0, abs_tol=1e-12)
    # derived from the epoch, not decremented: repeating or jumping back is harmless
    loss.on_epoch_start(2)
    loss.on_epoch_start(2)
    assert math.isclose(loss.clean_rate.item(), 0.998, abs_tol=1e-12)


def test_clean_rate_floors_at_zero_and_is_saved() -> None:
    loss = LargeLossReject(delta_rel=40)
    loss.on_epoch_start(4)
    assert loss.clean_rate.item() == 0.0
    loss.on_epoch_start(3)
    state = loss.state_dict()
    assert math.isclose(state["clean_rate"].item(), 0.2, abs_tol=1e-12)
    restored = LargeLossReject(delta_rel=40)
    restored.load_state_dict(state)
    assert restored.clean_rate.item() == loss.clean_rate.item()
    with pytest.raises(ValueError):
        loss.on_epoch_start(0)


@pytest.mark.parametrize("name", ["ll-r", "ll-ct", "ll-cp"])
def test_large_loss_epoch_one_equals_an(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=gen) * 3
    observed = torch.randint(-1, 2, (4, 6), generator=gen).to(torch.int8)
    reference = create_loss("an")(logits, observed, index(4)).loss
    loss = create_loss(name, delta_rel=50)
    assert torch.equal(loss(logits, observed, index(4)).loss, reference)
    loss.on_epoch_start(1)
    out = loss(logits, observed, index(4))
    assert torch.equal(out.loss, reference)
    assert out.corrections is None
    loss.on_epoch_start(2)
    assert not torch.equal(loss(logits, observed, index(4)).loss, reference)


def test_ll_r_rejects_two_largest_unobserved() -> None:
    logits, observed = ll_inputs()
    loss = LargeLossReject(delta_rel=25)
    loss.on_epoch_start(2)
    assert loss.clean_rate.item() == 0.75
    out = loss(logits, observed, index(2))
    assert out.corrections is None
    assert math.isclose(out.loss.item(), LL_KEPT / 8, rel_tol=1e-6)

    out.loss.backward()
    expected_grad = torch.tensor(
        [
            [0.0, sigmoid(-1.0), sigmoid(4.0), sigmoid(0.5) - 1.0],
            [sigmoid(1.5), sigmoid(-3.0), sigmoid(0.0), 0.0],
        ]
    ) / 8
    assert torch.allclose(logits.grad, expected_grad, atol=1e-7)
    selected = torch.tensor(LL_SELECTED)
    assert torch.all(logits.grad[selected] == 0)
    assert torch.all(logits.grad[~selected] != 0)


def test_ll_ct_uses_positive_target_on_two_largest_unobserved() -> None:
    logits, observed = ll_inputs()
    loss = LargeLossCorrectionTemporary(delta_rel=25)
    loss.on_epoch_start(2)
    out = loss(logits, observed, index(2))
    assert out.corrections is None
    expected = (LL_KEPT + pos(2.0) + pos(3.0)) / 8
    assert math.isclose(out.loss.item(), expected, rel_tol=1e-6)
    out.loss.backward()
    assert math.isclose(logits.grad[0, 0].item(), (sigmoid(2.0) - 1.0) / 8, rel_tol=1e-5)
    assert math.isclose(logits.grad[1, 3].item(), (sigmoid(3.0) - 1.0) / 8, rel_tol=1e-5)
    assert math.isclose(logits.grad[0, 2].item(), sigmoid(4.0) / 8, rel_tol=1e-5)


def test_ll_cp_corrections_and_label_store_round_trip() -> None:
    logits, observed = ll_inputs()
    loss = LargeLossCorrectionPermanent(delta_rel=25)
    batch_index = torch.tensor([3, 1])
    store = torch.zeros(5, 4, dtype=torch.int8)
    store[batch_index] = observed

    loss.on_epoch_start(1)
    first = loss(logits, store[batch_index], batch_index)
    assert first.corrections is None
    assert torch.equal(first.loss, create_loss("an")(logits, observed, batch_index).loss)

    loss.on_epoch_start(2)
    second = loss(logits, store[batch_index], batch_index)
    mask = second.corrections
    assert mask is not None and mask.dtype == torch.bool and mask.shape == (2, 4)
    assert int(mask.sum()) == math.ceil(8 * 25 / 100) == 2
    assert torch.equal(mask, torch.tensor(LL_SELECTED))
    assert torch.all(observed[mask] == 0)
    expected = (LL_KEPT + pos(2.0) + pos(3.0)) / 8
    assert math.isclose(second.loss.item(), expected, rel_tol=1e-6)

    rows, cols = mask.nonzero(as_tuple=True)
    store[batch_index[rows], cols] = 1
    assert store[3, 0] == 1 and store[1, 3] == 1

    # epoch 3: (0,0) and (1,3) are now observed positives, so the next two largest
    # unobserved losses, (1,0) x=1.5 and (1,2) x=0, are selected instead
    loss.on_epoch_start(3)
    third = loss(logits, store[batch_index], batch_index)
    assert third.corrections is not None
    assert torch.equal(
        third.corrections,
        torch.tensor([[False, False, False, False], [True, False, True, False]]),
    )
    assert not torch.any(third.corrections & mask)
    expected = (
        pos(2.0) + neg(-1.0) + neg(4.0) + pos(0.5) + pos(1.5) + neg(-3.0) + pos(0.0) + pos(3.0)
    ) / 8
    assert math.isclose(third.loss.item(), expected, rel_tol=1e-6)


def test_ll_cp_k_does_not_follow_clean_rate() -> None:
    logits, observed = ll_inputs()
    loss = LargeLossCorrectionPermanent(delta_rel=25)
    loss.on_epoch_start(4)  # clean rate 0.25 would give k = 6 for LL-R
    out = loss(logits, observed, index(2))
    assert out.corrections is not None and int(out.corrections.sum()) == 2


def test_k_is_clipped_to_unobserved_entries() -> None:
    logits = torch.tensor([[5.0, -2.0, 1.0], [0.5, 2.0, -1.0]])
    observed = labels([[-1, 1, 0], [1, -1, -1]])  # one unobserved entry, (0,2)
    all_an = neg(5.0) + pos(-2.0) + neg(1.0) + pos(0.5) + neg(2.0) + neg(-1.0)

    reject = LargeLossReject(delta_rel=50)
    reject.on_epoch_start(2)  # k = ceil(6 * 0.5) = 3, clipped to 1
    out = reject(logits, observed, index(2))
    assert math.isclose(out.loss.item(), (all_an - neg(1.0)) / 6, rel_tol=1e-6)

    permanent = LargeLossCorrectionPermanent(delta_rel=99)
    permanent.on_epoch_start(2)  # k = 6, clipped to 1
    out = permanent(logits, observed, index(2))
    assert out.corrections is not None
    assert torch.equal(out.corrections, observed == 0)
    assert math.isclose(out.loss.item(), (all_an - neg(1.0) + pos(1.0)) / 6, rel_tol=1e-6)

    fully_observed = torch.where(observed == 0, torch.ones_like(observed), observed)
    out = permanent(logits, fully_observed, index(2))
    assert out.corrections is not None and not out.corrections.any()
    assert torch.equal(out.loss, create_loss("an")(logits, fully_observed, index(2)).loss)


def test_selection_size_ignores_float_error() -> None:
    assert math.ceil(10 * (1 - 0.7)) == 4  # the float error the rounding guards against
    assert selection_size(10, 1 - 0.7) == 3
    assert selection_size(10, 0.31) == 4
    assert selection_size(8, 0.25) == 2
    assert selection_size(8, 0.0) == 0


def test_ll_r_float_rounding_does_not_add_an_entry() -> None:
    logits = torch.tensor(
        [[0.1, 0.2, 0.3, 0.4, 0.5], [0.6, 0.7, 0.8, 0.9, 1.0]], requires_grad=True
    )
    observed = torch.zeros(2, 5, dtype=torch.int8)
    loss = LargeLossReject(delta_rel=30)
    loss.on_epoch_start(2)
    clean_rate = loss.clean_rate.item()
    assert math.ceil(10 * (1 - clean_rate)) == 4  # naive ceil would select 4
    out = loss(logits, observed, index(2))
    out.loss.backward()
    assert int((logits.grad == 0).sum()) == 3
    assert torch.all(logits.grad[1, 2:] == 0)
    expected = sum(neg(0.1 * i) for i in range(1, 8)) / 10
    assert math.isclose(out.loss.item(), expected, rel_tol=1e-6)

    temporary = LargeLossCorrectionTemporary(delta_rel=30)
    temporary.on_epoch_start(2)
    out = temporary(logits.detach(), observed, index(2))
    expected = (sum(neg(0.1 * i) for i in range(1, 8)) + pos(0.8) + pos(0.9) + pos(1.0)) / 10
    assert math.isclose(out.loss.item(), expected, rel_tol=1e-6)


def test_registry_contents_and_defaults() -> None:
    assert {"an", "full", "ll-r", "ll-ct", "ll-cp"} <= set(LOSSES.names())
    assert create_loss("ll-r").delta_rel == 0.5
    assert create_loss("ll-ct").delta_rel == 0.2
    assert create_loss("ll-cp").delta_rel == 0.1
    assert create_loss("ll-r", delta_rel=1).delta_rel == 1.0
    assert isinstance(create_loss("full"), PartialLabelLoss)


def _bound(name: str, observed: torch.Tensor) -> PartialLabelLoss:
    loss = create_loss(name, **resolve_method_params(name, "synthetic", {}))
    loss.bind(LabelStore(observed.numpy()), 30)
    loss.on_epoch_start(3)  # past every method's first epoch (LL selects from epoch 2 on)
    return loss


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_keeps_the_contract(name: str) -> None:
    """Finite scalar, finite nonzero gradients, shape checks, corrections shape, state round trip."""
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(3, 7, generator=gen) * 3).requires_grad_()
    observed = torch.randint(-1, 2, (3, 7), generator=gen).to(torch.int8)
    torch.manual_seed(0)
    loss = _bound(name, observed)
    out = loss(logits, observed, index(3))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.corrections is None or (out.corrections.shape == (3, 7) and out.corrections.dtype == torch.bool)
    out.loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert all(isinstance(v, float) for v in loss.epoch_metrics().values())
    assert isinstance(loss.backbone_frozen(1), bool) and not loss.backbone_frozen(30)
    with pytest.raises(ValueError):
        loss(logits, observed[:, :5], index(3))
    # the state_dict carries everything: a fresh instance with it scores the batch identically
    torch.manual_seed(123)  # a different initialisation, overwritten by the state
    again = _bound(name, observed)
    again.load_state_dict(loss.state_dict())
    with torch.no_grad():
        assert torch.equal(loss(logits, observed, index(3)).loss, again(logits, observed, index(3)).loss)
    loss.on_epoch_end(3)


def test_create_loss_rejects_bad_input() -> None:
    with pytest.raises(RegistryError, match="nope"):
        create_loss("nope")
    for bad in (0, 100, -1, 150.0, "0.5", True):
        with pytest.raises(ConfigError, match="delta_rel"):
            create_loss("ll-r", delta_rel=bad)
    with pytest.raises(ConfigError) as info:
        create_loss("an", foo=1)
    message = str(info.value)
    assert "'foo'" in message and "'an'" in message and "\n" not in message
    with pytest.raises(ConfigError, match="'delta'"):
        create_loss("ll-cp", delta=0.1)
