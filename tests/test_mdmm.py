"""MDMM drives toy constrained problems to their known optima."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svjscout.models.mdmm import MDMM, Constraint


def _solve(eps: float, steps: int = 400):
    torch.manual_seed(0)
    x = torch.nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
    mdmm = MDMM([Constraint("x", eps=eps, alpha=1.0, rho=1.0)])
    opt = torch.optim.SGD([x, *mdmm.parameters()], lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        out = mdmm((x - 2) ** 2, {"x": x})
        out.loss.backward()
        opt.step()
    return x.item(), mdmm


def test_active_constraint_reaches_kkt_point():
    # minimise (x-2)^2 s.t. x <= 1: x* = 1, lambda* = 2 (2(x-2) + lambda = 0)
    x, mdmm = _solve(1.0)
    assert x == pytest.approx(1.0, abs=1e-3)
    assert mdmm.multipliers()["x"] == pytest.approx(2.0, abs=1e-2)
    assert mdmm.summary()["x"]["value"] == pytest.approx(1.0, abs=1e-3)
    assert abs(mdmm.last_phis["x"]) < 1e-3


def test_inactive_constraint_leaves_optimum():
    # x <= 3 is not active: x* = 2, lambda* = 0
    x, mdmm = _solve(3.0)
    assert x == pytest.approx(2.0, abs=1e-3)
    assert mdmm.multipliers()["x"] == pytest.approx(0.0, abs=1e-2)


def test_with_adam_and_two_constraints():
    # minimise (a-2)^2 + (b+1)^2 s.t. a <= 0.5, -b <= 0.25 -> a = 0.5, b = -0.25
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    mdmm = MDMM([Constraint("a", 0.5), Constraint("negb", 0.25, alpha=2.0, rho=2.0)])
    opt = torch.optim.Adam([p, *mdmm.parameters()], lr=0.05)
    for _ in range(1000):
        opt.zero_grad()
        mdmm((p[0] - 2) ** 2 + (p[1] + 1) ** 2, {"a": p[0], "negb": -p[1]}).loss.backward()
        opt.step()
    assert p[0].item() == pytest.approx(0.5, abs=1e-2)
    assert p[1].item() == pytest.approx(-0.25, abs=1e-2)
    mult = mdmm.multipliers()
    assert mult["a"] == pytest.approx(3.0, abs=0.1)  # 2(a-2) + lambda = 0
    assert 2.0 * mult["negb"] == pytest.approx(1.5, abs=0.1)  # 2(b+1) - alpha lambda = 0


def test_state_dict_round_trip_and_errors():
    _, mdmm = _solve(1.0, steps=50)
    state = mdmm.state_dict()
    fresh = MDMM([Constraint("x", eps=1.0)])
    fresh.load_state_dict(state)
    assert fresh.multipliers() == mdmm.multipliers()
    assert fresh.last_values == mdmm.last_values
    other = MDMM([Constraint("y", eps=1.0)])
    with pytest.raises(ValueError, match="constraints"):
        other.load_state_dict(state)
    with pytest.raises(KeyError, match="x"):
        fresh(torch.tensor(0.0), {})
    with pytest.raises(ValueError, match="duplicate"):
        MDMM([Constraint("x", 1.0), Constraint("x", 2.0)])


def _moving_target(projection: str, steps_per_phase: int = 300):
    """minimise (x - c)^2 s.t. x <= 1 with c = 2 (active), then 0 (slack), then 2 again (active).

    Returns the per-step multipliers and the gradient of the constraint term with respect to the
    constraint value, evaluated wherever the constraint is violated (value > eps)."""
    torch.manual_seed(0)
    x = torch.nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
    mdmm = MDMM([Constraint("x", eps=1.0, alpha=1.0, rho=1.0)], projection=projection)
    opt = torch.optim.Adam([x, *mdmm.parameters()], lr=0.05)
    mdmm.attach(opt)
    lambdas, grads_violated = [], []
    for c in (2.0, 0.0, 2.0):
        for _ in range(steps_per_phase):
            value = x.detach().clone().requires_grad_(True)  # d(constraint terms)/d(L), independent of x
            mdmm(torch.zeros((), dtype=torch.float64), {"x": value}).loss.backward()
            if value.item() > 1.0:
                grads_violated.append(float(value.grad))
            opt.zero_grad()
            mdmm((x - c) ** 2, {"x": x}).loss.backward()
            opt.step()
            lambdas.append(mdmm.multipliers()["x"])
    return np.array(lambdas), np.array(grads_violated), x.item(), mdmm


def test_projected_multipliers_stay_nonnegative_and_never_reward_violation():
    lam, grads, x, mdmm = _moving_target("clamp")
    n = len(lam) // 3
    assert lam.min() >= 0.0
    assert lam[n - 1] == pytest.approx(2.0, abs=0.1)  # phase 1: active, KKT multiplier 2
    # phase 2: slack; the ascent drives lambda down, the projection stops it at 0 (not below)
    assert (lam[n:2 * n] == 0.0).sum() > 50 and lam[n + 100:2 * n].max() < 0.01
    assert lam[-1] == pytest.approx(2.0, abs=0.1) and x == pytest.approx(1.0, abs=1e-2)  # phase 3: active again
    assert len(grads) > 0 and grads.min() >= 0.0  # violated -> the term's gradient pushes L down
    # the unprojected update (before issue 29): the multiplier goes negative while slack, and when
    # the constraint is violated again the loss rewards violation for a while
    lam_n, grads_n, _, _ = _moving_target("none")
    assert lam_n.min() < -0.5
    assert grads_n.min() < 0.0


def test_projection_survives_checkpoints_and_clamps_old_states(caplog):
    _, _, _, mdmm = _moving_target("clamp", steps_per_phase=100)
    fresh = MDMM([Constraint("x", eps=1.0)])
    fresh.load_state_dict(mdmm.state_dict())
    assert fresh.multipliers() == mdmm.multipliers() and fresh.multipliers()["x"] >= 0
    assert mdmm.state_dict()["_extra_state"]["projection"] == "clamp"
    # a state written by the unprojected update, with a negative multiplier
    old = MDMM([Constraint("x", eps=1.0)], projection="none")
    with torch.no_grad():
        old.lambdas.fill_(-0.54)
    state = old.state_dict()
    kept = MDMM([Constraint("x", eps=1.0)], projection="none")
    kept.load_state_dict(state)
    assert kept.multipliers()["x"] == pytest.approx(-0.54)
    clamped = MDMM([Constraint("x", eps=1.0)])
    with caplog.at_level("WARNING"):
        clamped.load_state_dict(state)
    assert clamped.multipliers()["x"] == 0.0 and "negative multipliers for ['x']" in caplog.text
    with pytest.raises(ValueError, match="projection"):
        MDMM([Constraint("x", 1.0)], projection="softplus")
    with pytest.raises(ValueError, match="lambda_init"):
        MDMM([Constraint("x", 1.0)], lambda_init=-1.0)
