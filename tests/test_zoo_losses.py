"""The method zoo's losses against hand computations on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from pamc.data import LabelStore
from pamc.errors import ConfigError
from pamc.data.catalog import METADATA, resolve_method_params
from pamc.losses import LOSSES, create_loss
from pamc.losses.entropy import binary_entropy


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def pos(x: float) -> float:
    """-log sigmoid(x)."""
    return math.log1p(math.exp(-x))


def neg(x: float) -> float:
    """-log(1 - sigmoid(x))."""
    return math.log1p(math.exp(x))


def labels(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int8)


def idx(*rows: int) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


def close(a: torch.Tensor | float, b: float, tol: float = 1e-6) -> bool:
    value = float(a.detach()) if isinstance(a, torch.Tensor) else float(a)
    return math.isclose(value, b, rel_tol=tol, abs_tol=1e-9)


ZOO = ["an-ls", "wan", "epr", "role", "role-li", "asl", "em", "em-apl", "gr-loss"]


def test_every_zoo_method_is_registered() -> None:
    assert set(ZOO) <= set(LOSSES.names())


def test_an_ls() -> None:
    x = [[1.0, -2.0], [0.5, 0.0]]
    obs = labels([[1, 0], [0, -1]])
    out = create_loss("an-ls")(torch.tensor(x), obs, idx(0, 1))
    ls = 0.1
    expected = ((1 - ls) * pos(1.0) + ls * neg(1.0)
                + sum((1 - ls) * neg(v) + ls * pos(v) for v in (-2.0, 0.5, 0.0))) / 4
    assert close(out.loss, expected)
    with pytest.raises(ConfigError):
        create_loss("an-ls", ls_coef=0.7)


def test_wan_weights_unobserved_by_one_over_c_minus_one() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5]])
    out = create_loss("wan")(x, labels([[1, 0, -1]]), idx(0))
    assert close(out.loss, (pos(1.0) + neg(-2.0) / 2 + neg(0.5)) / 3)
    out = create_loss("wan", weight=0.25)(x, labels([[1, 0, -1]]), idx(0))
    assert close(out.loss, (pos(1.0) + neg(-2.0) / 4 + neg(0.5)) / 3)


def test_epr() -> None:
    x = [[1.0, -2.0], [0.0, 3.0]]
    out = create_loss("epr", expected_num_pos=1.5)(torch.tensor(x), labels([[1, 0], [0, 0]]), idx(0, 1))
    mean_pos = ((sig(1.0) + sig(-2.0)) + (sig(0.0) + sig(3.0))) / 2
    assert close(out.loss, pos(1.0) / 4 + (mean_pos - 1.5) ** 2 / 4)
    with pytest.raises(ConfigError, match="expected_num_pos"):
        create_loss("epr")


def test_per_dataset_defaults_feed_the_methods() -> None:
    assert resolve_method_params("epr", "coco2014", {}) == {"expected_num_pos": 2.9}
    assert resolve_method_params("epr", "cub", {"expected_num_pos": 3.0}) == {"expected_num_pos": 3.0}
    assert resolve_method_params("em-apl", "voc2012", {})["beta"] == 0.02
    assert resolve_method_params("em", "nuswide", {}) == {"alpha": 0.1}
    assert resolve_method_params("an", "voc2012", {"x": 1}) == {"x": 1}
    assert resolve_method_params("epr", "unknown-set", {}) == {}
    assert METADATA["cub"].method_defaults.expected_num_pos == 31.4


def _bound_role(name: str = "role") -> torch.nn.Module:
    loss = create_loss(name, expected_num_pos=1.0)
    loss.bind(LabelStore(labels([[1, 0], [0, 0], [0, 1]]).numpy()), 10)
    return loss


def test_role_initialisation_follows_the_authors() -> None:
    torch.manual_seed(0)
    loss = _bound_role()
    theta = loss.label_logits.detach()
    assert theta.shape == (3, 2) and loss.label_logits.requires_grad
    assert close(torch.sigmoid(theta[0, 0]), 0.995, 1e-5) and close(torch.sigmoid(theta[2, 1]), 0.995, 1e-5)
    q = math.log(0.6 / 0.4)
    unobserved = torch.tensor([[False, True], [True, True], [True, False]])
    assert bool((theta[unobserved].abs() <= q).all())
    assert "label_logits" in loss.state_dict()


def test_role_value_and_gradients() -> None:
    loss = _bound_role()
    theta = torch.tensor([[2.0, -1.0], [0.5, 0.0], [-0.5, 1.5]])
    with torch.no_grad():
        loss.label_logits.copy_(theta)
    x = torch.tensor([[1.0, -1.0], [0.0, 2.0]], requires_grad=True)
    batch = idx(2, 0)
    obs = labels([[0, 1], [1, 0]])
    out = loss(x, obs, batch)
    th = theta[[2, 0]].tolist()
    xs, os_ = x.tolist(), obs.tolist()
    total = 0.0
    for i in range(2):
        for c in range(2):
            p, e = sig(xs[i][c]), sig(th[i][c])
            o = 0.5 * (pos(xs[i][c]) + pos(th[i][c])) if os_[i][c] == 1 else 0.0
            cross = 0.5 * ((e * pos(xs[i][c]) + (1 - e) * neg(xs[i][c]))
                           + (p * pos(th[i][c]) + (1 - p) * neg(th[i][c])))
            total += o + cross
    reg_p = (sum(sig(v) for v in xs[0]) / 2 + sum(sig(v) for v in xs[1]) / 2 - 1.0) ** 2 / 4
    reg_e = (sum(sig(v) for v in th[0]) / 2 + sum(sig(v) for v in th[1]) / 2 - 1.0) ** 2 / 4
    assert close(out.loss, total / 4 + 0.5 * (reg_p + reg_e), 1e-5)
    out.loss.backward()
    grad = loss.label_logits.grad
    assert torch.all(grad[1] == 0) and torch.any(grad[0] != 0) and torch.any(grad[2] != 0)
    # stop-gradient: the classifier's cross term pulls p towards the estimate e, not both ways:
    # d/dx of 0.5*BCE(p; sg(e)) is 0.5*(p - e); the positive and EPR terms add their own parts
    p01, e01 = sig(xs[0][1]), sig(th[0][1])
    mean_p = sum(sig(v) for row in xs for v in row) / 2
    expected = (0.5 * (p01 - e01) - 0.5 * (1 - p01)) / 4 + 0.5 * 2 * (mean_p - 1.0) / 4 * p01 * (1 - p01) / 2
    assert close(x.grad[0, 1], expected, 1e-5)


def test_role_li_declares_its_linear_phase() -> None:
    assert create_loss("role", expected_num_pos=1.0).linear_init_epochs == 0
    assert create_loss("role-li", expected_num_pos=1.0).linear_init_epochs == 25
    assert create_loss("role-li", expected_num_pos=1.0, linear_init_epochs=3).linear_init_epochs == 3
    # 0: the second phase of a two-phase run (train.linear_init) has no frozen epochs
    assert create_loss("role-li", expected_num_pos=1.0, linear_init_epochs=0).linear_init_epochs == 0
    with pytest.raises(ConfigError):
        create_loss("role-li", expected_num_pos=1.0, linear_init_epochs=-1)


def test_asl_value_margin_and_detached_focusing() -> None:
    x = torch.tensor([[2.0, -1.0, -4.0]], requires_grad=True)
    loss = create_loss("asl", gamma_pos=1.0, gamma_neg=4.0, clip=0.05)
    out = loss(x, labels([[1, 0, 0]]), idx(0))
    p0, p1 = sig(2.0), sig(-1.0)
    pm = p1 - 0.05
    expected = ((1 - p0) * pos(2.0) + pm**4 * -math.log(1 - pm) + 0.0) / 3  # p(-4)=0.018 < margin
    assert close(out.loss, expected, 1e-5)
    out.loss.backward()
    assert x.grad[0, 2] == 0  # below the margin: no loss, no gradient
    # focusing weight is a constant: gradient = w * d(CE)/dx
    assert close(x.grad[0, 0], (1 - p0) * -(1 - p0) / 3, 1e-5)
    assert close(x.grad[0, 1], pm**4 * (p1 * (1 - p1) / (1 - pm)) / 3, 1e-5)
    # published defaults: gamma_neg 4, gamma_pos 0, margin 0.05
    d = create_loss("asl")
    assert (d.gamma_neg, d.gamma_pos, d.clip) == (4.0, 0.0, 0.05)


def test_em_value_and_entropy_gradient() -> None:
    x = torch.tensor([[1.5, -0.5, 2.0]], requires_grad=True)
    out = create_loss("em", alpha=0.2)(x, labels([[1, 0, 0]]), idx(0))

    def h(v: float) -> float:
        p = sig(v)
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))

    assert close(out.loss, (pos(1.5) - 0.2 * h(-0.5) - 0.2 * h(2.0)) / 3, 1e-4)
    out.loss.backward()
    # d(-alpha H)/dx = alpha * x * p (1 - p): pushes unknown logits towards 0 (p = 0.5)
    for c, v in ((1, -0.5), (2, 2.0)):
        assert close(x.grad[0, c], 0.2 * v * sig(v) * (1 - sig(v)) / 3, 1e-5)
    assert close(x.grad[0, 0], -(1 - sig(1.5)) / 3, 1e-5)
    assert close(binary_entropy(torch.tensor(0.0)), math.log(2))


def _bound_apl(warmup: int = 1) -> torch.nn.Module:
    loss = create_loss("em-apl", alpha=0.2, beta=0.5, warmup_epochs=warmup, neg_proportion=0.9)
    obs = labels([[1, 0], [0, 1], [0, 0], [0, 0], [0, 0], [0, 0]])
    loss.bind(LabelStore(obs.numpy()), 3)
    return loss


APL_X = torch.tensor([[3.0, -1.0], [-2.0, 2.0], [-3.0, 0.5], [0.0, -4.0], [-1.0, -2.0], [1.0, 1.0]])
APL_OBS = labels([[1, 0], [0, 1], [0, 0], [0, 0], [0, 0], [0, 0]])


def test_apl_adds_the_lowest_unobserved_as_soft_negatives() -> None:
    loss = _bound_apl()
    # 5 unobserved per class, 3 epochs, warm-up 1: int(0.9 * 5 / 2) = 2 per class per epoch
    assert loss.per_epoch_quota().tolist() == [2, 2]
    loss.on_epoch_start(1)
    loss(APL_X, APL_OBS, idx(0, 1, 2, 3, 4, 5))
    loss.on_epoch_end(1)
    # class 0 unobserved rows 1..5 with logits -2,-3,0,-1,1 -> rows 2 and 1; class 1 rows 0,2..5
    # with logits -1,0.5,-4,-2,1 -> rows 3 and 4
    assert loss.pseudo_mask.nonzero().tolist() == [[1, 0], [2, 0], [3, 1], [4, 1]]
    assert close(loss.pseudo_target[2, 0], sig(-3.0), 1e-6)
    x = torch.zeros(2, 2)
    out = loss(x, APL_OBS[[2, 3]], idx(2, 3))
    s20, s31 = sig(-3.0), sig(-4.0)
    soft = [0.5 * (s * pos(0.0) + (1 - s) * neg(0.0)) for s in (s20, s31)]
    assert close(out.loss, (soft[0] - 0.2 * math.log(2) - 0.2 * math.log(2) + soft[1]) / 4, 1e-5)
    # the next epoch adds two more per class, never relabelling a chosen entry
    loss.on_epoch_start(2)
    loss(APL_X, APL_OBS, idx(0, 1, 2, 3, 4, 5))
    loss.on_epoch_end(2)
    assert int(loss.pseudo_mask.sum()) == 8 and not loss.pseudo_mask[0, 0] and not loss.pseudo_mask[1, 1]


def test_apl_waits_for_warmup_and_its_state_is_in_the_state_dict() -> None:
    loss = _bound_apl(warmup=2)
    loss.on_epoch_start(1)
    loss(APL_X, APL_OBS, idx(0, 1, 2, 3, 4, 5))
    loss.on_epoch_end(1)
    assert not loss.pseudo_mask.any()
    assert {"pseudo_mask", "pseudo_target"} <= set(loss.state_dict())
    with pytest.raises(ConfigError, match="warmup"):
        create_loss("em-apl", warmup_epochs=5).bind(LabelStore(APL_OBS.numpy()), 5)


def test_gr_loss_schedule_and_value() -> None:
    loss = create_loss("gr-loss")
    loss.bind(LabelStore(labels([[1, 0], [0, 0]]).numpy()), 8)
    # authors' defaults beta=[0,2,-2,-2], alpha=[0.5,2,0.8,0.5], q2=0.01, q3=1, T=8
    assert loss.schedule_at(1, 8) == pytest.approx((0.0, -2.0, 0.5 + 0.3 / 8, 2.0 - 1.5 / 8))
    assert loss.schedule_at(8, 8) == pytest.approx((2.0 * 7 / 8, -2.0, 0.8, 0.5))
    loss.on_epoch_start(3)
    w, b, mu, sd = loss.schedule_at(3, 8)
    x = torch.tensor([[1.0, -1.0], [0.5, 2.0]], requires_grad=True)
    out = loss(x, labels([[1, 0], [0, -1]]), idx(0, 1))
    p = sig(0.5)
    k = sig(w * p + b)
    v = math.exp(-0.5 * ((p - mu) / sd) ** 2)
    l1, l2 = (1 - p**0.01) / 0.01, p
    p_b = sig(-1.0)
    k_b, v_b = sig(w * p_b + b), math.exp(-0.5 * ((p_b - mu) / sd) ** 2)
    unobs_b = v_b * (k_b * (1 - p_b**0.01) / 0.01 + (1 - k_b) * p_b)
    assert close(out.loss, (pos(1.0) + unobs_b + v * (k * l1 + (1 - k) * l2) + neg(2.0)) / 4, 1e-5)
    out.loss.backward()
    # k and v are constants in the backward pass
    dp = p * (1 - p)
    assert close(x.grad[1, 0], v * (k * -(p ** -0.99) + (1 - k)) * dp / 4, 1e-4)
    with pytest.raises(ConfigError):
        create_loss("gr-loss", beta=[0, 1])
