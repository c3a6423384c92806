"""Soft ABCD closure: zero for a factorising sample, clearly positive for a correlated one."""

from __future__ import annotations

import pytest
import torch

from svjscout.models.closure import (
    binned_closure,
    closure,
    occupancy_deficit,
    plane_closures,
    plane_mask,
    plane_occupancies,
    soft_counts,
)


def _grid(k: int = 40):
    """Product grid (x_i, y_j) with weights u_i v_j: the density factorises exactly."""
    torch.manual_seed(0)
    xs = torch.linspace(0.01, 0.99, k, dtype=torch.float64)
    ys = torch.linspace(0.02, 0.98, k, dtype=torch.float64)
    u = torch.rand(k, dtype=torch.float64) + 0.1
    v = torch.rand(k, dtype=torch.float64) + 0.1
    x = xs[:, None].expand(k, k).reshape(-1)
    y = ys[None, :].expand(k, k).reshape(-1)
    w = (u[:, None] * v[None, :]).reshape(-1)
    return x, y, w


@pytest.mark.parametrize("kappa", [5.0, 50.0, 500.0])
def test_factorising_sample_closes(kappa):
    x, y, w = _grid()
    c = closure(soft_counts(x, y, w, 0.6, 0.4, kappa))
    assert c.item() < 1e-12


def test_correlated_sample_does_not_close_and_is_differentiable():
    torch.manual_seed(1)
    x = torch.rand(4000, dtype=torch.float64, requires_grad=True)
    y = (0.7 * x.detach() + 0.3 * torch.rand(4000, dtype=torch.float64)).requires_grad_()
    w = torch.rand(4000, dtype=torch.float64)
    c = closure(soft_counts(x, y, w, 0.5, 0.5, 50.0))
    assert c.item() > 0.3
    c.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_hard_limit_matches_region_counts():
    torch.manual_seed(2)
    x = torch.rand(1000, dtype=torch.float64)
    y = torch.rand(1000, dtype=torch.float64)
    w = torch.ones(1000, dtype=torch.float64)
    n = soft_counts(x, y, w, 0.3, 0.6, kappa=1e6)
    hard = [((x > 0.3) & (y < 0.6)).sum(), ((x > 0.3) & (y > 0.6)).sum(),
            ((x < 0.3) & (y < 0.6)).sum(), ((x < 0.3) & (y > 0.6)).sum()]
    assert n.tolist() == pytest.approx([float(h) for h in hard], abs=1e-6)


def test_binned_and_plane_closures():
    x, y, w = _grid(30)
    torch.manual_seed(3)
    mt = 650 + 1000 * torch.rand(x.numel(), dtype=torch.float64)
    deta = 2.2 * torch.rand(x.numel(), dtype=torch.float64)
    # factorising in every M_T bin: each bin holds a full copy of the grid
    xb, yb, wb = x.repeat(3), y.repeat(3), w.repeat(3)
    mtb = torch.tensor([700.0, 900.0, 1300.0], dtype=torch.float64).repeat_interleave(x.numel())
    c, filled = binned_closure(xb, yb, wb, mtb, [650, 800, 1000, 2000, 3000], 0.5, 0.5, 50.0)
    assert filled.tolist() == [True, True, True, False]
    assert c.max().item() < 1e-12
    # correlated within bins: X tracks M_T-bin-dependent Y
    y_corr = (y + 0.5 * (x > 0.5) * (mt > 1100)).clamp(0, 1)
    out = plane_closures(x, y_corr, w, deta, mt, 0.5, 0.5, 50.0, mt_edges=[650, 1100, 1650])
    assert set(out) == {"closure_SP", "closure_VP", "closure_bins_SP", "closure_bins_VP"}
    assert out["closure_bins_SP"].item() > 0.2
    assert plane_mask(torch.tensor([-1.6, 1.0, 1.5, 2.3]), (1.5, 2.2)).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="edges"):
        binned_closure(x, y, w, mt, [1000, 650], 0.5, 0.5)


def test_one_sided_score_closes_trivially_but_fails_the_occupancy_constraint():
    """Y entirely above y0 factorises the soft counts (C ~ 0): only the occupancy term sees it."""
    torch.manual_seed(4)
    x = torch.rand(3000, dtype=torch.float64)
    y = torch.full((3000,), 0.62, dtype=torch.float64, requires_grad=True)  # collapsed above y0 = 0.5
    w = torch.rand(3000, dtype=torch.float64) + 0.5
    n = soft_counts(x, y, w, 0.5, 0.5, 50.0)
    assert closure(n).item() < 1e-9  # the degenerate solution closes exactly
    deficit = occupancy_deficit(n, 0.05)
    assert deficit.item() > 0.9  # A and C are (nearly) empty
    deficit.backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    # an independent, two-sided pair fills every control region: no deficit
    y2 = torch.rand(3000, dtype=torch.float64)
    assert occupancy_deficit(soft_counts(x, y2, w, 0.5, 0.5, 50.0), 0.05).item() == 0.0
    # half-filled: A and C hold ~2.5 % each when 5 % is required -> deficit ~0.5 (hard cuts)
    y3 = torch.where(torch.rand(3000, dtype=torch.float64) < 0.05, 0.2, 0.8).to(torch.float64)
    x3 = torch.rand(3000, dtype=torch.float64)
    d3 = occupancy_deficit(soft_counts(x3, y3, torch.ones(3000, dtype=torch.float64), 0.5, 0.5, 1e6), 0.05)
    fracs = [((x3 > 0.5) & (y3 < 0.5)), ((x3 < 0.5) & (y3 < 0.5)), ((x3 < 0.5) & (y3 > 0.5))]  # A, C, D
    expected = max(max(0.0, 0.05 - f.double().mean().item()) for f in fracs) / 0.05
    assert 0.3 < expected < 0.7 and d3.item() == pytest.approx(expected, abs=1e-9)
    assert occupancy_deficit(n, 0.0).item() == 0.0  # switched off
    occ = plane_occupancies(x, y.detach(), w, 2.2 * torch.rand(3000, dtype=torch.float64), 0.5, 0.5, 50.0, 0.05)
    assert set(occ) == {"occupancy_SP", "occupancy_VP"} and min(v.item() for v in occ.values()) > 0.9
