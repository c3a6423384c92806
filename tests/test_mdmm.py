"""MDMM drives toy constrained problems to their known optima."""

from __future__ import annotations

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
